"""Seeded fuzz of the engine on a GPU (issue 12): many random problems through the Triton kernels, the PyTorch
reference (CPU, fp32, from the same rounded inputs) and, for small grids, the brute force in tests/brute_force.py.

Every sliding load path is forced in turn through ``VORTA_STA_CONFIG`` (pointer loads, TMA, TMA with tails in
smaller blocks, a tile's last rows in a second launch or not) next to the automatic config; text queries, text
before or after the video, padded text, NaN/inf inputs, exact coreset ties, head subsets, batch 1-3, head dims
64/128 and an unsupported one (it must be refused).  The cases are those of ``tests/fuzz_cases.py``, larger.

Run from the repository root with ``comfyui_vorta`` resolving to it (as bench/run_device.sh does)::

    mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/comfyui_vorta
    PYTHONPATH=/tmp/pkg python bench/fuzz_device.py --cases 1000 [--seed0 0] [--workers 8] [--md fuzz.md]

``--device cpu`` runs the same cases on the CPU through the Triton interpreter (smaller grids, fp32/fp16).
Inputs and every buffer the launchers allocate sit between NaN guard zones: a read past a buffer shows as NaN in
the output, a write past one as a changed guard ('oob').
Prints a summary table (per load path and dtype) and every failing case with its seed.  Exit status: 0 all
passed, 1 any mismatch / NaN or inf where the reference has none (or the reverse) / out-of-bounds write /
missing refusal / error, 3 the time limit stopped it before all cases ran (continue with ``--seed0``).
Listed but not failures: 'no-kernel' (a forced config that does not fit the GPU, so the reference ran) and
'near-tie' (a coreset head that differs because two similarities at the keep boundary are within 1e-5 but not
equal: fp32 rounding on either side decides, not the tie rule).  Workers run in parallel because each new
kernel shape costs a Triton compile on the CPU.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures as cf
from concurrent.futures.process import BrokenProcessPool
import datetime
import multiprocessing
import os
import pathlib
import platform
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # fuzz_cases, brute_force, poison

FAIL = ("mismatch", "nonfinite", "brute", "oob", "error")


def _worker_init(device: str, threads: int) -> None:
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    torch.set_num_threads(threads)


def _run(args):
    seed, device = args
    import torch
    from fuzz_cases import case_summary, make_case, run_case

    gpu = device != "cpu"
    case = make_case(seed, gpu=gpu)
    tol = {torch.float32: 2e-3, torch.float16: 3e-3, torch.bfloat16: 2e-2} if gpu else None
    t = time.time()
    verdict, detail = run_case(case, device, kernel_tol=tol)
    return dict(seed=seed, verdict=verdict, detail=detail, paths=case.paths(), dtype=str(case.dtype)[6:],
                summary=case_summary(case), seconds=time.time() - t)


ROWS = ["all cases", "sliding auto", "sliding pointer", "sliding TMA", "sliding TMA tail block", "sliding row split",
        "sliding text", "coreset", "text first", "non-finite input", "exact ties", "dtype float32", "dtype float16",
        "dtype bfloat16"]


def table(results) -> str:
    """Cases and verdicts per load path / feature / dtype (a case counts in every row it drives)."""
    rows = collections.defaultdict(collections.Counter)
    for r in results:
        for key in ["all cases"] + list(r["paths"]) + [f"dtype {r['dtype']}"]:
            rows[key]["cases"] += 1
            rows[key][r["verdict"]] += 1
    cols = ["cases", "ok", "refused", "no-kernel", "near-tie"] + list(FAIL)
    lines = ["| path | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for key in [k for k in ROWS if k in rows] + sorted(set(rows) - set(ROWS)):
        c = rows[key]
        lines.append(f"| {key} | " + " | ".join(str(c[k]) for k in cols) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed0", type=int, default=0, help="first seed (seeds seed0 .. seed0+cases-1)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (Triton interpreter)")
    ap.add_argument("--workers", type=int, default=max(1, min(14, (os.cpu_count() or 2) - 2)),
                    help="processes (default: the CPU cores less two, at most 14): compiles run in parallel")
    ap.add_argument("--time-limit", type=float, default=540.0, help="seconds; cases not started by then are skipped")
    ap.add_argument("--md", default=None, help="also write the summary and failures to this markdown file")
    args = ap.parse_args(argv)

    import torch

    try:
        import comfyui_vorta  # noqa: F401
    except ImportError:
        print("comfyui_vorta is not importable: see this script's docstring for PYTHONPATH", file=sys.stderr)
        return 2
    if args.device != "cpu" and not torch.cuda.is_available():
        print("no CUDA GPU: use --device cpu for the interpreter", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name() if args.device != "cpu" else platform.processor() or "cpu"
    import triton

    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    header = (f"{datetime.date.today()} | commit {commit} | {name} | torch {torch.__version__} | triton {triton.__version__} | "
              f"seeds {args.seed0}..{args.seed0 + args.cases - 1} | {args.workers} workers")
    print(header, flush=True)
    start = time.time()
    results, skipped, broken = [], 0, False
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(args.workers, mp_context=ctx, initializer=_worker_init,
                               initargs=(args.device, max(1, (os.cpu_count() or 1) // args.workers))) as ex:
        pending = {}
        seeds = iter(range(args.seed0, args.seed0 + args.cases))
        for seed in seeds:  # keep two cases per worker in flight, so the time limit stops cleanly
            pending[ex.submit(_run, (seed, args.device))] = seed
            if len(pending) >= 2 * args.workers:
                break
        while pending:
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for f in done:
                seed = pending.pop(f)
                try:
                    r = f.result()
                except Exception as e:  # noqa: BLE001 - a crashed worker is a failure of that case
                    broken = broken or isinstance(e, BrokenProcessPool)
                    r = dict(seed=seed, verdict="error", detail=f"worker: {e!r}", paths=[], dtype="?",
                             summary=f"seed {seed} (in flight when it failed)", seconds=0.0)
                results.append(r)
                if r["verdict"] in FAIL + ("no-kernel", "near-tie"):
                    print(f"{r['verdict']}: {r['detail']}\n    {r['summary']}", flush=True)
                if len(results) % 100 == 0:
                    print(f"{len(results)} cases, {time.time() - start:.0f} s", flush=True)
                if time.time() - start < args.time_limit and not broken:
                    nxt = next(seeds, None)
                    if nxt is not None:
                        try:
                            pending[ex.submit(_run, (nxt, args.device))] = nxt
                        except BrokenProcessPool:  # a worker died (e.g. a CUDA error): report what ran
                            broken = True
                if time.time() - start >= args.time_limit or broken:
                    skipped = args.cases - len(results) - len(pending)
    results.sort(key=lambda r: r["seed"])
    failed = [r for r in results if r["verdict"] in FAIL]
    summary = table(results)
    verdict = (f"{len(results)} cases in {time.time() - start:.0f} s: {len(failed)} failed, "
               f"{sum(r['verdict'] == 'no-kernel' for r in results)} no-kernel, "
               f"{sum(r['verdict'] == 'near-tie' for r in results)} near-tie"
               + (f", {skipped} not run ({'a worker died' if broken else 'time limit'})" if skipped else ""))
    print("\n" + summary + "\n\n" + verdict)
    if args.md:
        body = [f"# Engine fuzz ({args.device})", "", header, "", summary, "", verdict, ""]
        body += [f"* {r['verdict']}: {r['detail']} — {r['summary']}" for r in results if r["verdict"] != "ok"
                 and r["verdict"] != "refused"]
        pathlib.Path(args.md).write_text("\n".join(body) + "\n")
    if failed:
        return 1
    return 3 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
