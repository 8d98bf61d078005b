"""Install VORTA on a ComfyUI MODEL: clone, tag the self-attention sites, wrap the model call and the run.

* ``apply_vorta`` clones the ModelPatcher (the input is never mutated) and adds
  - thin **object patches** on every self-attention site (Wan ``blocks.i.self_attn``, ``vace_blocks.j.self_attn``;
    HunyuanVideo ``double_blocks.i`` / ``single_blocks.j``).  Each resolves its module **at call time** on the
    diffusion model that is running (the one the DIFFUSION_MODEL wrapper received), because ComfyUI copies object
    patches onto other model objects (``clone(model_override=...)``: TorchCompileModel with dynamic VRAM, the
    non-dynamic delegate used with hooks, MultiGPU deep clones).  It then calls the class's forward with a
    shallow copy of ``transformer_options`` carrying the layer tag, our override, the override found before ours
    and the layer's ``preferred_attention``;
  - a **DIFFUSION_MODEL wrapper** that computes, once per model call, the token layout (from the model's
    arguments), the problem and the step's decisions (``RoutingPlan``) and hands them to the attention calls
    in ``transformer_options`` (the one channel; a thread-local copy serves forwards that drop the options);
  - an **OUTER_SAMPLE wrapper** that resets the per-run state and logs one summary line at the end of the run.
* All state lives on a ``VortaPatch`` holder referenced only by the clone's patches and wrappers.
"""
from __future__ import annotations

import logging
import threading
import types
from typing import Dict, Optional

import torch

from ..kernels import backend_unavailable_reason, select_branches
from ..router_files import check_fits
from ..routing import Branches
from .adapters import CallLayout, detect, resolve
from .calibrated import check_calibrated, watch_sigma_range
from .override import OVERRIDE, PREFERRED, PREV, STATE, TAG, CallRouter, CallState, is_ours, ours
from .plan import RouterBundle, RoutingPlan
from .settings import Settings, describe
from .stats import RunStats

log = logging.getLogger("vorta")

KEY = "vorta"


class VortaPatch:
    """The holder: the routing plan, per-run counters and the per-call channel of one Apply VORTA output."""

    def __init__(self, adapter, settings: Settings, bundle: Optional[RouterBundle], model_sampling=None):
        self.adapter = adapter
        self.plan = RoutingPlan(adapter, settings, bundle, model_sampling)
        self.stats = RunStats()
        self.last_summary = ""
        self._local = threading.local()  # the model call in flight on this thread (MultiGPU runs threads)
        self._branches: Dict[str, Branches] = {}
        self._router = CallRouter(adapter, self.stats, self._base_branches)
        # Wrapped here, not with decorators: torch.compiler.disable imports torch._dynamo (seconds), which would
        # then run at ComfyUI start-up when the nodes are imported.  ``attention`` is looked up per call, so a
        # test or a later patch can wrap it.
        self.call_state = torch.compiler.disable(self._call_state)
        self.count_model_call = torch.compiler.disable(self._count_model_call)
        self.attention = ours(torch.compiler.disable(self._attention))

    @property
    def settings(self) -> Settings:
        return self.plan.settings

    @property
    def bundle(self) -> Optional[RouterBundle]:
        return self.plan.bundle

    @property
    def current(self) -> Optional[CallState]:
        return getattr(self._local, "state", None)

    # ----------------------------------------------------------------------------------------------- set-up
    def install(self, m) -> None:
        for target in self.adapter.targets():
            m.add_object_patch(target.patch_key, self._tagged_forward(target))
        import comfy.patcher_extension as pe

        for wtype in (pe.WrappersMP.DIFFUSION_MODEL, pe.WrappersMP.OUTER_SAMPLE):
            m.remove_wrappers_with_key(wtype, KEY)  # applying VORTA twice replaces, never stacks
        m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, KEY, self.diffusion_model_wrapper)
        m.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, KEY, self.outer_sample_wrapper)

    def _tagged_forward(self, target):
        tag, idx, path = target.tag, target.options_index, target.path
        holder = self

        def forward(*args, **kwargs):
            args = list(args)
            positional = idx is not None and len(args) > idx
            opts = args[idx] if positional else kwargs.get("transformer_options")
            opts = dict(opts) if isinstance(opts, dict) else {}
            state = opts.get(STATE) or holder.current  # options dropped by a third-party forward: the thread's call
            module = holder._module(state, path, forward)
            prev = opts.get(OVERRIDE)
            if is_ours(prev):  # nested call: keep the override found before us
                prev = opts.get(PREV)
            opts[PREV] = prev
            opts[PREFERRED] = holder.adapter.preferred_attention(module)
            opts[TAG] = tag
            opts[OVERRIDE] = holder.attention  # looked up per call, so a test or a later patch can wrap it
            if state is not None:
                opts[STATE] = state
            if positional:
                args[idx] = opts
            else:
                kwargs["transformer_options"] = opts
            return type(module).forward(module, *args, **kwargs)

        # One code object per site: torch.compile caches compiled frames per code object and guards on closure
        # values, so a shared code object would recompile for every layer and give up after recompile_limit (8).
        code = forward.__code__.replace(co_name=f"vorta_{path.replace('.', '_')}_forward")
        forward = types.FunctionType(code, forward.__globals__, code.co_name, forward.__defaults__, forward.__closure__)
        forward._vorta_tag = tag
        forward._vorta_path = path
        return forward

    def _module(self, state: Optional[CallState], path: str, fn):
        """The module this patched forward stands for, on the model that is running."""
        if state is not None:
            return resolve(state.dm, path)
        raise RuntimeError(f"VORTA: the patched self-attention {path} ran outside the diffusion model's forward, so "
                           "the model it belongs to is unknown. Apply VORTA after nodes that call model blocks "
                           "directly, or remove it for this workflow.")

    # ------------------------------------------------------------------------------------------ per run
    def outer_sample_wrapper(self, executor, *args, **kwargs):
        guider = executor.class_obj
        try:
            ms = guider.model_patcher.get_model_object("model_sampling")
        except Exception:  # pragma: no cover - exotic guiders; keep the node-time schedule
            ms = None
        self.plan.reset(ms)
        self.stats.reset()
        try:
            return executor(*args, **kwargs)
        finally:
            parts = [f"{self.adapter.family}, {describe(self.settings)}", self.plan.geometry_text(),
                     self.stats.backend_text(self.settings.backend)]
            prefix = f"VORTA ({'; '.join(p for p in parts if p)})"
            self.last_summary = self.stats.summary(prefix)
            log.info(self.last_summary)
            self.plan.reset()
            self._local.state = None

    # ------------------------------------------------------------------------------------- per model call
    def diffusion_model_wrapper(self, executor, *args, **kwargs):
        dm = executor.class_obj
        opts = args[-1] if args and isinstance(args[-1], dict) else kwargs.get("transformer_options")
        state = None
        try:
            state = self.call_state(dm, args, kwargs, opts or {})
        except _Fatal as e:
            raise e.__cause__ or e
        except Exception as e:
            self.stats.add_fallback(f"could not prepare routing ({type(e).__name__}: {e})")
            state = CallState(dm, CallLayout(None, unsupported="routing could not be prepared"), None, None)
        if args and isinstance(args[-1], dict):
            args = (*args[:-1], {**args[-1], STATE: state})
        elif isinstance(kwargs.get("transformer_options"), dict):
            kwargs = {**kwargs, "transformer_options": {**kwargs["transformer_options"], STATE: state}}
        previous, self._local.state = self.current, state
        try:
            return executor(*args, **kwargs)
        finally:
            self._local.state = previous
            self.count_model_call(state)

    def _count_model_call(self, state: CallState) -> None:
        """Count the call as run only if its self-attention ran: wrappers beneath ours may return a cached output
        without running the model (EasyCache applied after Apply VORTA), and the summary must not claim those."""
        if state.attention_calls:
            self.stats.model_calls += 1
        else:
            self.stats.skipped_calls += 1

    def _call_state(self, dm, args, kwargs, opts) -> CallState:
        """Layout, problem and decisions of one model call (``_forward``'s arguments); run as ``call_state``,
        outside torch.compile."""
        x, t = args[0], args[1]
        t_scalar = float(t.reshape(t.shape[0], -1)[0].max()) if t.ndim else float(t)
        sigmas = opts.get("sigmas")
        sigma = float(sigmas.reshape(-1)[0]) if isinstance(sigmas, torch.Tensor) and sigmas.numel() else t_scalar / 1000.0
        layout = self.adapter.call_layout(dm, args, kwargs)
        problem = self.plan.problem_for(layout)
        step = self.plan.decisions_at(dm, sigma, t_scalar, x.device)
        return CallState(dm, layout, problem, step, t_scalar, sigma)

    def _base_branches(self, device) -> Branches:
        key = str(device)
        b = self._branches.get(key)
        if b is None:
            try:
                b = select_branches(self.settings.backend, device)
            except RuntimeError as e:
                raise _Fatal(str(e)) from e
            self._branches[key] = b
        return b

    # ----------------------------------------------------------------------------------- the override
    def _attention(self, func, *args, **kwargs):
        """The override, run as ``attention``: eagerly under torch.compile (one graph break per attention call), since
        routing decisions change from step to step and tracing them would recompile the model every step."""
        return self._router(func, *args, **kwargs)


class _Fatal(Exception):
    """An error in preparing a call that must stop sampling (e.g. the Triton backend was forced but is missing)."""


def apply_vorta(model, settings: Settings, bundle: Optional[RouterBundle] = None):
    """Clone ``model`` (a ComfyUI ModelPatcher) and install VORTA on the clone; the input is untouched.
    Mode 'auto' becomes 'router' when ``bundle`` is given, else 'schedule'."""
    settings = settings.resolved(has_router=bundle is not None)
    dm = model.get_model_object("diffusion_model")
    adapter = detect(dm)
    if settings.mode == "router":
        if bundle is None:
            raise ValueError("routing mode 'router' needs a ROUTER input (VORTA Router Loader). For a model without a "
                             "released router use mode 'schedule', or 'full'/'sliding'/'coreset' to force one branch.")
        check_fits(bundle.routers, adapter.family, adapter.num_layers, adapter.heads, adapter.dim,
                   source=f"router {bundle.name or ''}".strip())
    calibrated = check_calibrated(bundle, adapter, dm) if settings.mode == "router" else None
    if settings.dense_blocks:
        bad = sorted(i for i in settings.dense_blocks if i >= adapter.num_layers)
        if bad:
            raise ValueError(f"dense blocks {bad} do not exist: this {adapter.family} model has {adapter.num_layers} "
                             f"routed layers (0..{adapter.num_layers - 1})")
    if settings.backend not in ("auto", "torch"):
        reason = backend_unavailable_reason(settings.backend)
        if reason is not None:
            raise RuntimeError(f"kernel backend {settings.backend!r} is unavailable: {reason}. Use 'auto' or 'torch'.")
    try:
        model_sampling = model.get_model_object("model_sampling")
    except Exception:  # pragma: no cover
        model_sampling = None
    m = model.clone()
    holder = VortaPatch(adapter, settings, bundle, model_sampling)
    holder.install(m)
    if calibrated is not None:
        watch_sigma_range(holder, calibrated)
    return m


def find_patch(model) -> Optional[VortaPatch]:
    """The VortaPatch installed on a MODEL by Apply VORTA, or None."""
    import comfy.patcher_extension as pe

    for fn in model.get_wrappers(pe.WrappersMP.DIFFUSION_MODEL, KEY):
        holder = getattr(fn, "__self__", None)
        if isinstance(holder, VortaPatch):
            return holder
    return None
