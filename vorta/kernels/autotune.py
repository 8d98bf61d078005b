"""Measured choice of a kernel's launch config, once per problem key (issue 15): the launcher's fixed rule is the
fallback, a short candidate list (the rule's pick first) is timed on the real inputs on the first call of a key,
and the fastest is kept for the process (and, optionally, in a small JSON file for later processes).

Cost of a new key: each candidate is launched once untimed (its first launch compiles it; Triton keeps compiled
kernels in its disk cache, so a later process only loads them), then ``RUNS`` times between CUDA events; the
median is its time.  With ``n`` candidates that is ``n * (RUNS + 1)`` calls of the op plus the compiles of the
candidates not in Triton's cache.  A candidate that raises (OutOfResources, a compile error) is skipped.  The
winner runs once more afterwards and writes the result (the timed runs overwrite the output freely).
A candidate must beat the rule's pick by ``MARGIN`` to replace it: run-to-run noise alone never moves the choice.

Never measured: under the Triton interpreter, while a CUDA graph is being captured, while torch.compile traces
(the ops are custom ops, so compiled graphs call them eagerly: the first real call measures), on a non-CUDA
device, with ``VORTA_AUTOTUNE=0``, or when the caller forces a config.  Choices made earlier (this process or
the file) are still used while capturing.

The file: ``VORTA_AUTOTUNE_CACHE`` (a path; empty: no file), by default
``$XDG_CACHE_HOME/comfyui-vorta/autotune.json`` (``~/.cache/...``).  Entries are keyed by GPU name, Triton
version, the kernel's source hash and the problem key; an entry whose config is not among the current
candidates is ignored (re-measured), an unreadable file is treated as empty, writes are atomic (rename)."""
from __future__ import annotations

import json
import os
import statistics
import tempfile
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch

from .common import INTERPRET
from .log import log, log_once

RUNS = 3  # timed runs per candidate (after one untimed run that compiles it)
MARGIN = 0.01  # a candidate replaces the rule's pick only when at least this much faster
DEVICE_TYPES = ("cuda",)  # devices whose launches are timed (CUDA events)
FILE_VERSION = 1


class Tuned(NamedTuple):
    """The choice for one key, with what it was measured against (ms: None when it did not run or came from
    the file without a time)."""
    config: tuple
    ms: Optional[float]
    rule: tuple
    rule_ms: Optional[float]
    tried: int
    skipped: int
    source: str  # "measured" or "file"


_TUNED: Dict[tuple, Tuned] = {}  # problem key -> choice (this process)
_UNTUNABLE: set = set()  # problem keys where no candidate ran: the launcher's fallback loop decides
_FILE_CACHE: Dict[str, Dict[str, dict]] = {}  # path -> entries read from it (read once per process)


RULE_MEASURED_ON = ((9, 0),)  # compute capabilities where the rule was the fastest candidate on every user shape


def disabled_reason(forced: bool = False, device=None) -> Optional[str]:
    """Why launch configs are not tuned at all (the rule's list runs), or None.  ``VORTA_AUTOTUNE``: 1 always tunes,
    0 never; unset tunes except on GPUs in ``RULE_MEASURED_ON``: on the H100 the rule's pick was the fastest of the
    candidates on all 9 user shapes measured (bench/results/2026-11-24-autotune-h100.md), so tuning there would
    only cost the first call its candidates' compiles."""
    setting = os.environ.get("VORTA_AUTOTUNE", "").strip().lower()
    if setting in ("0", "false", "off", "no"):
        return "VORTA_AUTOTUNE=0"
    if forced:
        return "a launch config is forced"
    if INTERPRET:
        return "Triton interpreter"
    if setting not in ("1", "true", "on", "yes") and device is not None and torch.device(device).type == "cuda":
        if torch.cuda.get_device_capability(device) in RULE_MEASURED_ON:
            return "the rule is measured best on this GPU generation (VORTA_AUTOTUNE=1 tunes anyway)"
    return None


def _capturing() -> bool:
    try:
        return bool(torch.cuda.is_current_stream_capturing())
    except (RuntimeError, AssertionError):  # a CPU-only build of torch
        return False


def measure_blocked(device) -> Optional[str]:
    """Why no candidate may be timed now (an earlier choice may still be used), or None."""
    if torch.device(device).type not in DEVICE_TYPES:
        return f"{torch.device(device).type} device"
    if torch.compiler.is_compiling():
        return "torch.compile is tracing"
    if _capturing():
        return "a CUDA graph is being captured"
    return None


def _time_config(launch: Callable[[], None], config) -> float:
    """Median ms of ``RUNS`` CUDA-event timed calls of ``launch`` after one untimed call (which compiles)."""
    launch()
    times = []
    for _ in range(RUNS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        launch()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(statistics.median(times))


def choose(key: tuple, candidates: Callable[[], Sequence[tuple]], rule: tuple, launch: Callable[[tuple], None],
           device, what: str, file_key: Optional[Callable[[], str]] = None) -> Optional[tuple]:
    """The config to launch for ``key``: remembered, read from the file, or measured now among ``candidates()``
    (``launch(config)`` runs the op with one).  None: use the launcher's own list (nothing may be measured now,
    or no candidate ran).  ``file_key()``: the key in the file (None: no file)."""
    hit = _TUNED.get(key)
    if hit is not None:
        return hit.config
    if key in _UNTUNABLE:
        return None
    cands = list(candidates())
    file_key = file_key() if file_key is not None else None
    if file_key is not None:
        entry = _file_entries().get(file_key)
        found = _from_entry(entry, cands) if entry is not None else None
        if found is not None:
            _TUNED[key] = Tuned(found, _num(entry.get("ms")), tuple(rule), _num(entry.get("rule_ms")), 0, 0, "file")
            _log(what, _TUNED[key])
            return found
    if measure_blocked(device) is not None:
        return None
    times: Dict[tuple, float] = {}
    skipped: List[str] = []
    for c in cands:
        try:
            times[c] = float(_time_config(lambda c=c: launch(c), c))
        except Exception as e:  # OutOfResources, a compile error: this candidate cannot run here
            skipped.append(f"{short(c)}: {type(e).__name__}")
            log.debug("VORTA autotune %s: %s skipped (%s: %s)", what, short(c), type(e).__name__, e)
    if not times:
        _UNTUNABLE.add(key)
        log_once(f"VORTA: sliding kernel autotune {what}: no candidate ran ({'; '.join(skipped)}); "
                 f"the default launch configs decide")
        return None
    best = min(times, key=times.get)
    if rule in times and times[best] > times[rule] * (1 - MARGIN):
        best = rule
    _TUNED[key] = Tuned(best, times[best], tuple(rule), times.get(rule), len(cands), len(skipped), "measured")
    _log(what, _TUNED[key])
    if file_key is not None:
        _save(file_key, _TUNED[key])
    return best


def _num(x) -> Optional[float]:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def short(c) -> str:
    """(128,64,8,4,tma) style; tail block and row split only where they are not the defaults."""
    fields = [str(x) for x in tuple(c)[:4]]
    if len(c) > 4 and c[4]:
        fields.append("tma")
    if len(c) > 5 and c[5]:
        fields.append(f"tail{c[5]}")
    if len(c) > 6 and not c[6]:
        fields.append("no-row-split")
    return "(" + ",".join(fields) + ")"


def _ms(x: Optional[float]) -> str:
    return "?" if x is None else f"{x:.3f} ms"


def _log(what: str, t: Tuned) -> None:
    if t.source == "file":
        log_once(f"VORTA: sliding kernel autotune {what}: {short(t.config)} from the autotune file "
                 f"({_ms(t.ms)} vs the rule's {short(t.rule)} {_ms(t.rule_ms)} when measured)")
        return
    vs = (f"the rule's {short(t.rule)} {_ms(t.rule_ms)}" if t.rule_ms is not None
          else f"the rule's {short(t.rule)}, which did not run")
    log_once(f"VORTA: sliding kernel autotune {what}: chose {short(t.config)} {_ms(t.ms)} vs {vs} "
             f"({t.tried} candidates, {t.skipped} skipped)")


def chosen() -> Dict[tuple, Tuned]:
    """Every choice made in this process (key -> Tuned); the benchmark prints them."""
    return dict(_TUNED)


# --- the optional file ------------------------------------------------------------------------------------------

def cache_path() -> Optional[str]:
    env = os.environ.get("VORTA_AUTOTUNE_CACHE")
    if env is not None:
        return env or None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "comfyui-vorta", "autotune.json")


def _read(path: str) -> Dict[str, dict]:
    try:
        with open(path) as fh:
            data = json.load(fh)
        entries = data.get("entries") if isinstance(data, dict) and data.get("version") == FILE_VERSION else None
        return {k: v for k, v in entries.items() if isinstance(v, dict)} if isinstance(entries, dict) else {}
    except (OSError, ValueError, AttributeError):  # missing, unreadable or corrupt: as if empty
        return {}


def _file_entries() -> Dict[str, dict]:
    path = cache_path()
    if path is None:
        return {}
    if path not in _FILE_CACHE:
        _FILE_CACHE[path] = _read(path)
    return _FILE_CACHE[path]


def _from_entry(entry: dict, cands: Sequence[tuple]) -> Optional[tuple]:
    """The candidate the entry names, or None (malformed, or not a current candidate: measure again)."""
    cfg = entry.get("config")
    if not isinstance(cfg, list):
        return None
    for c in cands:
        if list(c) == cfg:
            return c
    return None


def _save(file_key: str, t: Tuned) -> None:
    """Merge one entry into the file (re-read first: other processes may have added theirs), atomically."""
    path = cache_path()
    if path is None:
        return
    entry = dict(config=list(t.config), ms=t.ms, rule=list(t.rule), rule_ms=t.rule_ms)
    _file_entries()[file_key] = entry
    try:
        entries = _read(path)
        entries[file_key] = entry
        folder = os.path.dirname(path) or "."
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".autotune-", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(dict(version=FILE_VERSION, entries=entries), fh, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:  # a read-only home, a full disk: the choice stays in this process only
        log_once(f"VORTA: the autotune file {path} could not be written ({e}); choices are kept in memory only")


def key_text(parts: Tuple) -> str:
    return "|".join(str(p) for p in parts)
