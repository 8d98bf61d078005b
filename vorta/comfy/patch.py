"""Install VORTA on a ComfyUI MODEL: tag self-attention, route per step, chain to the previous backend.

How the hook works (comfyui-notes §0, §3):

* ``apply_vorta`` clones the ModelPatcher (the input is never mutated) and adds
  - thin **object patches** on every self-attention site (Wan ``blocks.i.self_attn.forward`` and
    ``vace_blocks.j.self_attn.forward``; HunyuanVideo ``double_blocks.i.forward`` / ``single_blocks.j.forward``).
    Each calls the class's own forward with a shallow copy of ``transformer_options`` that carries the layer
    tag and our attention override; the override that was installed before (e.g. SageAttention) is read at
    call time and kept in the copy so we can chain to it;
  - a **DIFFUSION_MODEL wrapper** that computes, once per model call, the token grid (from the latent and the
    patch size), the routing decisions of every layer (from the model's own time MLP; cached by timestep) and
    hands them to the override through the copied ``transformer_options`` (and the holder, for forwards that
    drop the options);
  - an **OUTER_SAMPLE wrapper** that resets the per-run state and logs one summary line at the end of the run.
* The override routes only tagged self-attention calls over a pure video grid (+ HunyuanVideo text). Heads
  routed to *full*, cross-attention, untagged calls and anything that is not a grid go to the previous override
  or ComfyUI's backend (``func``) unchanged; each dense fallback reason is logged once and counted.
* All state lives on a ``VortaPatch`` holder referenced only by the clone's patches and wrappers.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from ..config import BRANCHES, FULL, VortaConfig
from ..geometry import TokenGrid
from ..router import RouterSet, router_input
from ..router_files import check_fits
from ..routing import AttentionProblem, Branches, attention_flops, head_groups, routed_attention
from .adapters import detect
from .settings import Settings, SigmaWindow, describe, resolve_config, step_decisions
from .stats import RunStats

log = logging.getLogger("vorta")

KEY = "vorta"
TAG = "vorta_tag"
STATE = "vorta_state"
PREV = "vorta_prev_override"
OVERRIDE = "optimized_attention_override"


@dataclass
class RouterBundle:
    """What the Router loader outputs: the routers, the settings they were trained with, and where from."""

    routers: RouterSet
    trained_with: VortaConfig
    name: str = ""

    def describe(self) -> str:
        r = self.routers
        model = r.metadata.get("model") or r.family
        return f"{self.name or 'router'}: {model}, {r.num_layers} layers x {r.heads} heads, dim {r.dim}"


@dataclass
class StepState:
    """Decisions of one timestep: per routed layer (and VACE block) the head groups per branch."""

    decisions: torch.Tensor  # (layers, heads) on the CPU
    groups: List[List[torch.Tensor]]  # per layer: [full, coreset, sliding] head indices on the device
    counts: List[List[int]]
    vace_groups: Optional[List[torch.Tensor]] = None
    vace_counts: Optional[List[int]] = None


@dataclass
class CallState:
    """What one model call hands to its attention calls."""

    grid: TokenGrid
    text_len: int
    problem: AttentionProblem
    step: StepState
    t: float = 0.0  # the timestep (sigma * 1000) the decisions were made for
    sigma: float = 0.0


def _override_marker(fn) -> bool:
    return bool(getattr(fn, "_vorta_override", False))


class VortaPatch:
    """The holder: settings, routers, per-run caches and counters for one Apply VORTA node output."""

    def __init__(self, adapter, settings: Settings, bundle: Optional[RouterBundle], model_sampling=None):
        self.adapter = adapter
        self.settings = settings
        self.bundle = bundle
        self.model_sampling = model_sampling
        self.stats = RunStats()
        self.window: Optional[SigmaWindow] = None
        self.current: Optional[CallState] = None
        self.last_summary = ""
        self._steps: Dict[tuple, StepState] = {}
        self._problems: Dict[tuple, AttentionProblem] = {}
        self._routers: Dict[tuple, RouterSet] = {}
        self._branches: Dict[str, Branches] = {}

    # ----------------------------------------------------------------------------------------------- set-up
    def install(self, m) -> None:
        for target in self.adapter.targets():
            m.add_object_patch(target.path, self._tagged_forward(target))
        import comfy.patcher_extension as pe

        for wtype in (pe.WrappersMP.DIFFUSION_MODEL, pe.WrappersMP.OUTER_SAMPLE):
            m.remove_wrappers_with_key(wtype, KEY)  # applying VORTA twice replaces, never stacks
        m.add_wrapper_with_key(pe.WrappersMP.DIFFUSION_MODEL, KEY, self.diffusion_model_wrapper)
        m.add_wrapper_with_key(pe.WrappersMP.OUTER_SAMPLE, KEY, self.outer_sample_wrapper)

    def _tagged_forward(self, target):
        module, cls_forward, tag, idx = target.module, type(target.module).forward, target.tag, target.options_index
        holder = self

        def forward(*args, **kwargs):
            args = list(args)
            if idx is not None and len(args) > idx:
                opts = args[idx]
            else:
                opts = kwargs.get("transformer_options")
            opts = dict(opts) if isinstance(opts, dict) else {}
            prev = opts.get(OVERRIDE)
            if _override_marker(prev):  # already ours (nested call): keep the override found before us
                prev = opts.get(PREV)
            opts[PREV] = prev
            opts[TAG] = tag
            opts[OVERRIDE] = holder.attention  # looked up per call, so a test or a later patch can wrap it
            if STATE not in opts and holder.current is not None:
                opts[STATE] = holder.current  # transformer_options were dropped by a third-party forward
            if idx is not None and len(args) > idx:
                args[idx] = opts
            else:
                kwargs["transformer_options"] = opts
            return cls_forward(module, *args, **kwargs)

        forward._vorta_tag = tag
        return forward

    # ------------------------------------------------------------------------------------------ per run
    def outer_sample_wrapper(self, executor, *args, **kwargs):
        guider = executor.class_obj
        try:
            ms = guider.model_patcher.get_model_object("model_sampling")
            self.window = SigmaWindow.from_percents(ms.percent_to_sigma, self.settings)
        except Exception:  # pragma: no cover - exotic guiders; keep the node-time schedule
            self.window = None
        self.stats.reset()
        self._steps.clear()
        try:
            return executor(*args, **kwargs)
        finally:
            self.last_summary = self.stats.summary(f"VORTA ({self.adapter.family}, {describe(self.settings)})")
            log.info(self.last_summary)
            self._steps.clear()
            self.current = None

    def sigma_window(self) -> SigmaWindow:
        if self.window is None:
            ms = self.model_sampling
            if ms is not None:
                self.window = SigmaWindow.from_percents(ms.percent_to_sigma, self.settings)
            else:  # flow models: sigma in [0, 1], percent p -> 1 - p
                self.window = SigmaWindow.from_percents(lambda p: 1.0 - p, self.settings)
        return self.window

    # ------------------------------------------------------------------------------------- per model call
    def diffusion_model_wrapper(self, executor, *args, **kwargs):
        dm = executor.class_obj
        opts = args[-1] if args and isinstance(args[-1], dict) else kwargs.get("transformer_options")
        self.stats.model_calls += 1
        state = None
        try:
            state = self._call_state(dm, args, kwargs, opts or {})
        except Exception as e:
            if isinstance(e, _Fatal):
                raise e.__cause__ or e
            self.stats.add_fallback(f"could not prepare routing ({type(e).__name__}: {e})")
        if state is not None:
            if args and isinstance(args[-1], dict):
                args = (*args[:-1], {**args[-1], STATE: state})
            elif isinstance(kwargs.get("transformer_options"), dict):
                kwargs = {**kwargs, "transformer_options": {**kwargs["transformer_options"], STATE: state}}
        previous, self.current = self.current, state
        try:
            return executor(*args, **kwargs)
        finally:
            self.current = previous

    @torch.compiler.disable
    def _call_state(self, dm, args, kwargs, opts) -> CallState:
        x, t = args[0], args[1]
        t_scalar = float(t.reshape(t.shape[0], -1)[0].max()) if t.ndim else float(t)
        sigmas = opts.get("sigmas")
        sigma = float(sigmas.reshape(-1)[0]) if isinstance(sigmas, torch.Tensor) and sigmas.numel() else t_scalar / 1000.0
        grid, text_len = self.adapter.call_layout(dm, args, kwargs)
        problem = self._problem(grid, text_len)
        step = self._step(dm, t_scalar, sigma, x.device, x.dtype)
        return CallState(grid, text_len, problem, step, t_scalar, sigma)

    def _problem(self, grid: TokenGrid, text_len: int) -> AttentionProblem:
        key = (grid.shape, text_len)
        p = self._problems.get(key)
        if p is None:
            trained = self.bundle.trained_with if self.bundle is not None else None
            cfg = resolve_config(self.settings, self.adapter.family, grid, self.adapter.dim, trained)
            p = AttentionProblem(grid, cfg, kv_from=self.adapter.kv_from, text_len=text_len)
            self._problems[key] = p
        return p

    def _step(self, dm, t: float, sigma: float, device, dtype) -> StepState:
        key = (round(t, 4), str(device))
        st = self._steps.get(key)
        if st is not None:
            return st
        a, s = self.adapter, self.settings
        router_dec = None
        window = self.sigma_window()
        if s.mode == "router" and window.active(sigma):
            routers = self._router_on(device)
            temb = router_input(a.family, a.time_mlp(dm), torch.tensor([t], dtype=torch.float32, device=device))
            router_dec = routers.decide(temb, s.tau_sparse)
        dec = step_decisions(s, window, sigma, a.num_layers, a.heads, router_dec)
        groups = [head_groups(dec[i], device) for i in range(a.num_layers)]
        counts = [[int(g.numel()) for g in gs] for gs in groups]
        vace_groups = vace_counts = None
        if a.vace_layers:
            # VACE blocks have no released routers: in router mode they stay dense; schedule/forced modes apply
            vdec = step_decisions(dataclasses.replace(s, mode="full") if s.mode == "router" else s, window, sigma,
                                  1, a.heads, None)[0]
            vace_groups = head_groups(vdec, device)
            vace_counts = [int(g.numel()) for g in vace_groups]
        st = StepState(dec, groups, counts, vace_groups, vace_counts)
        self._steps[key] = st
        return st

    def _router_on(self, device) -> RouterSet:
        key = str(device)
        r = self._routers.get(key)
        if r is None:
            r = self.bundle.routers.to(device)
            self._routers[key] = r
        return r

    def _base_branches(self, device) -> Branches:
        key = str(device)
        b = self._branches.get(key)
        if b is None:
            from ...kernels import select_branches

            try:
                b = select_branches(self.settings.backend, device)
            except RuntimeError as e:
                raise _Fatal(str(e)) from e
            self._branches[key] = b
        return b

    # ----------------------------------------------------------------------------------- the override
    @torch.compiler.disable
    def attention(self, func, *args, **kwargs):
        """The override.  Runs eagerly under torch.compile (one graph break per attention call): routing
        decisions change from step to step, and tracing them would recompile the model every step."""
        opts = kwargs.get("transformer_options") or {}
        prev = opts.get(PREV)
        if _override_marker(prev):
            prev = None

        def delegate(*a, **kw):
            return prev(func, *a, **kw) if prev is not None else func(*a, **kw)

        tag = opts.get(TAG)
        state: Optional[CallState] = opts.get(STATE) or self.current
        if tag is None:
            return delegate(*args, **kwargs)
        q, k, v = args[0], args[1], args[2]
        heads = kwargs.get("heads", args[3] if len(args) > 3 else None)
        if state is None:
            self.stats.add_fallback("no routing state for this call (the VORTA model wrapper did not run; another "
                                    "patch may call the blocks outside the diffusion model)", heads or 0)
            return delegate(*args, **kwargs)

        if tag[0] == "vace":
            groups, counts = state.step.vace_groups, state.step.vace_counts
        else:
            layer = tag[1] if tag[0] != "single" else self.adapter.double + tag[1]
            groups, counts = state.step.groups[layer], state.step.counts[layer]
        if groups is None or counts[FULL] == sum(counts):
            self._count_dense(state.problem, q, heads, counts)
            return delegate(*args, **kwargs)

        reason, layout, text_valid = self._check_call(q, k, v, heads, kwargs, state)
        if reason is not None:
            self.stats.add_fallback(reason, heads or 0)
            return delegate(*args, **kwargs)
        problem = state.problem if text_valid is None else dataclasses.replace(state.problem, text_valid=text_valid)
        branches = dataclasses.replace(self._base_branches(q.device),
                                       full=self._full_branch(delegate, layout, args, kwargs, heads))
        out = routed_attention(q, k, v, heads, groups, problem, layout=layout, branches=branches)
        self.stats.add_call(counts, attention_flops(problem, q.shape[0], counts, head_dim=out.shape[-1] // heads))
        return out

    _attention_marker = True

    def _count_dense(self, problem: AttentionProblem, q, heads, counts) -> None:
        try:
            head_dim = q.shape[-1] // heads if q.ndim == 3 else q.shape[-1]
            self.stats.add_call(counts, attention_flops(problem, q.shape[0], counts, head_dim=head_dim))
        except Exception:  # pragma: no cover - counting must never break sampling
            pass

    def _check_call(self, q, k, v, heads, kwargs, state: CallState):
        """(reason to fall back or None, layout, text_valid)."""
        if heads is None:
            return "attention call without a head count", None, None
        if kwargs.get("skip_output_reshape"):
            return "caller asked for the [B, H, L, D] output layout", None, None
        if kwargs.get("skip_reshape"):
            layout = "hunyuan"
            if q.ndim != 4 or q.shape[1] != heads:
                return f"unexpected q shape {tuple(q.shape)} for skip_reshape", None, None
            L, Lk = q.shape[2], k.shape[2]
        else:
            layout = "wan"
            if q.ndim != 3:
                return f"unexpected q shape {tuple(q.shape)}", None, None
            L, Lk = q.shape[1], k.shape[1]
        if Lk != L or v.shape != k.shape:
            return f"keys ({Lk}) and queries ({L}) differ in length: not self-attention", None, None
        p = state.problem
        if L != p.seq_len:
            extra = L - p.seq_len
            what = "text " if p.text_len else ""
            return (f"{L} tokens but the video grid {p.grid.shape} has {p.grid.numel} (+{p.text_len} {what}tokens): "
                    f"{'extra reference/motion tokens' if extra > 0 else 'fewer tokens than the grid'}"), None, None
        text_valid = None
        mask = kwargs.get("mask")
        if mask is not None:
            text_valid, why = _text_valid_from_mask(mask, q.shape[0], p.grid.numel, p.text_len)
            if why:
                return why, None, None
        return None, layout, text_valid

    @staticmethod
    def _full_branch(delegate, layout, args, kwargs, heads):
        """The *full* branch runs on the previous override / ComfyUI backend on the head subset."""
        q, k, v = args[0], args[1], args[2]
        positional_heads = len(args) > 3

        def full(qs, ks, vs, idx, out, problem):
            n = int(idx.numel())
            B, S, H, D = out.shape
            if layout == "wan":
                sub = [x.view(B, S, H, D).index_select(2, idx).reshape(B, S, n * D) for x in (q, k, v)]
            else:
                sub = [x.index_select(1, idx) for x in (q, k, v)]
            if positional_heads:
                o = delegate(*sub, n, *args[4:], **kwargs)
            else:
                o = delegate(*sub, **{**kwargs, "heads": n})
            out[:, :, idx] = o.reshape(B, S, n, D).to(out.dtype)

        return full


VortaPatch.attention._vorta_override = True


class _Fatal(Exception):
    """An error in preparing a call that must stop sampling (e.g. the Triton backend was forced but is missing)."""


def _text_valid_from_mask(mask: torch.Tensor, batch: int, video_len: int, text_len: int):
    """HunyuanVideo's additive key mask (0 = keep, -max = padded text) -> valid text tokens per batch element."""
    if not torch.is_floating_point(mask):
        return None, f"boolean/integer attention mask {tuple(mask.shape)} (expected HunyuanVideo's additive mask)"
    m = mask
    while m.ndim > 2 and m.shape[-2] == 1:
        m = m.squeeze(-2)
    if m.ndim == 1:
        m = m[None]
    if m.ndim != 2 or m.shape[-1] != video_len + text_len or m.shape[0] not in (1, batch):
        return None, f"attention mask of shape {tuple(mask.shape)} is not a per-key mask"
    keep = m > -1.0
    if not bool(keep[:, :video_len].all()):
        return None, "attention mask hides video tokens"
    tk = keep[:, video_len:]
    valid = tk.sum(-1)
    if text_len and not bool((tk == (torch.arange(text_len, device=m.device)[None] < valid[:, None])).all()):
        return None, "padded text tokens are not at the end of the prompt"
    if bool((valid == text_len).all()):
        return None, None
    return valid.expand(batch) if valid.shape[0] == 1 else valid, None


def apply_vorta(model, settings: Settings, bundle: Optional[RouterBundle] = None):
    """Clone ``model`` (a ComfyUI ModelPatcher) and install VORTA on the clone; the input is untouched."""
    dm = model.get_model_object("diffusion_model")
    adapter = detect(dm)
    if settings.mode == "router":
        if bundle is None:
            raise ValueError("routing mode 'router' needs a ROUTER input (VORTA Router Loader). For a model without a "
                             "released router use mode 'schedule', or 'full'/'sliding'/'coreset' to force one branch.")
        check_fits(bundle.routers, adapter.family, adapter.num_layers, adapter.heads, adapter.dim,
                   source=f"router {bundle.name or ''}".strip())
    if settings.dense_blocks:
        bad = sorted(i for i in settings.dense_blocks if i >= adapter.num_layers)
        if bad:
            raise ValueError(f"dense blocks {bad} do not exist: this {adapter.family} model has {adapter.num_layers} "
                             f"routed layers (0..{adapter.num_layers - 1})")
    if settings.backend == "triton":
        from ...kernels import triton_unavailable_reason

        reason = triton_unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"kernel backend 'triton' is unavailable: {reason}. Use 'auto' or 'torch'.")
    try:
        model_sampling = model.get_model_object("model_sampling")
    except Exception:  # pragma: no cover
        model_sampling = None
    m = model.clone()
    holder = VortaPatch(adapter, settings, bundle, model_sampling)
    holder.install(m)
    return m


def preview_table(model, sigmas: torch.Tensor, settings: Optional[Settings] = None,
                  bundle: Optional[RouterBundle] = None):
    """The (steps, layers, heads) decision table Apply VORTA would use for ``sigmas`` (one row per step, the
    last sigma excluded), computed before sampling from the model's own time MLP.  Settings and router come
    from a MODEL patched by Apply VORTA when present, else from the arguments.  Returns (table, holder)."""
    installed = find_patch(model)
    if installed is not None and settings is None:
        settings, bundle = installed.settings, (bundle or installed.bundle)
    if settings is None:
        settings = Settings(mode="router")
    dm = model.get_model_object("diffusion_model")
    adapter = installed.adapter if installed is not None else detect(dm)
    if settings.mode == "router":
        if bundle is None:
            raise ValueError("the routing preview needs a ROUTER (or a MODEL patched by Apply VORTA in router mode)")
        check_fits(bundle.routers, adapter.family, adapter.num_layers, adapter.heads, adapter.dim,
                   source=f"router {bundle.name}".strip())
    ms = model.get_model_object("model_sampling")
    holder = VortaPatch(adapter, settings, bundle, ms)
    mlp = adapter.time_mlp(dm)
    try:
        device = next(mlp.parameters()).device
    except StopIteration:  # pragma: no cover
        device = torch.device("cpu")
    base = model.model
    dtype = getattr(base, "manual_cast_dtype", None) or base.get_dtype()
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        dtype = torch.bfloat16
    rows = []
    with torch.no_grad():
        for sigma in sigmas.reshape(-1)[:-1].tolist():
            t = float(ms.timestep(torch.tensor(sigma)))
            rows.append(holder._step(dm, t, sigma, device, dtype).decisions)
    table = torch.stack(rows) if rows else torch.empty(0, adapter.num_layers, adapter.heads, dtype=torch.long)
    return table, holder


def find_patch(model) -> Optional[VortaPatch]:
    """The VortaPatch installed on a MODEL by Apply VORTA, or None."""
    import comfy.patcher_extension as pe

    for fn in model.get_wrappers(pe.WrappersMP.DIFFUSION_MODEL, KEY):
        holder = getattr(fn, "__self__", None)
        if isinstance(holder, VortaPatch):
            return holder
    return None


__all__ = ["apply_vorta", "find_patch", "RouterBundle", "VortaPatch", "BRANCHES"]
