"""Seeded fuzz of the engine on a GPU (issue 12): many random problems through the Triton kernels, the PyTorch
reference and, for small grids, the brute force in tests/brute_force.py.

Every sliding load path is forced in turn through ``VORTA_STA_CONFIG`` (pointer loads, TMA, TMA with tails in
smaller blocks, a tile's last rows in a second launch or not) next to the automatic config; text queries, text
before or after the video, padded text, NaN/inf inputs, exact coreset ties, head subsets, batch 1-3, head dims
64/128 and an unsupported one (it must be refused).  The cases are those of ``tests/fuzz_cases.py``, larger.

What a case is checked against (``fuzz_cases.judge``):
* no NaN/inf in a (batch element, head) whose inputs are all finite, in any branch ('leak');
* our Triton math (sliding heads; coreset selection, pooling, unpooling) against the definition: the reference on
  the CPU in fp32 from the same rounded inputs.  NaN/inf exactly where it has them, values close;
* the parts that are PyTorch SDPA on the GPU (full heads; the coreset's attention on the pooled sequence, one call
  shared with the reference) put NaN/inf where that SDPA does: exactly where the reference run on the GPU, on
  the same tensors and with the same backend priority, has them.  Its backends do not follow the definition for
  NaN/inf (e.g. fp32: a -inf score gives NaN); the 'sdpa≠def' column counts the cases where that showed.

Run on the device from the repository root, in one call of at most --time-limit seconds (default 510: new cases
start until 60 s before it, cases still running at the limit are stopped and reported as not run)::

    mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/comfyui_vorta
    PYTHONPATH=/tmp/pkg python bench/fuzz_device.py --cases 1000 [--seed0 0] [--workers 14] [--md fuzz.md]

``--device cpu`` runs through the Triton interpreter, by default the CPU cases (smaller grids, fp32/fp16);
``--device cpu --gpu-cases --seeds 596`` reproduces GPU seeds there (bf16 is not exact in the interpreter).
Inputs and every buffer the launchers allocate sit between NaN guard zones: a read past a buffer shows as NaN in
the output, a write past one as a changed guard ('oob').
Prints failures as they come, then every case that was not ok, a verdict line and, last, the summary table (per
load path and dtype).  Exit status: 0 only when every case ran and none failed (mismatch, nonfinite, leak,
brute, oob, error, missing refusal); 1 any failure; 3 no failure but not every case ran (time limit or a dead
worker: continue with ``--seed0``).  Listed but not failures: 'no-kernel' (a forced config that does not fit
the GPU even with one pipeline stage, so the sliding heads ran the reference, checked as such; with fewer stages
it runs the kernel, and the case's summary shows the stages that ran) and 'near-tie' (a coreset head that differs
because two similarities at the keep boundary are within 1e-5 but not equal: fp32 rounding on either side
decides, not the tie rule).  Workers run in parallel because each new kernel shape costs a Triton compile.
"""
from __future__ import annotations

import time

START = time.time()  # the time limit counts from here: imports and worker start-up included

import argparse  # noqa: E402
import collections  # noqa: E402
import concurrent.futures as cf  # noqa: E402
from concurrent.futures.process import BrokenProcessPool  # noqa: E402
import datetime  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # fuzz_cases, brute_force, poison

FAIL = ("mismatch", "nonfinite", "leak", "brute", "oob", "error")  # = fuzz_cases.FAILURES (not imported: no torch here)
LISTED = ("no-kernel", "near-tie")
MAX_PRINTED = 40  # failures printed while running and at the end (all of them go to --md)


def _worker_init(device: str, threads: int) -> None:
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    import torch

    torch.set_num_threads(threads)


def _run(args):
    seed, device, gpu_cases = args
    import torch
    from fuzz_cases import case_summary, make_case, run_case

    case = make_case(seed, gpu=gpu_cases)
    tol = {torch.float32: 2e-3, torch.float16: 3e-3, torch.bfloat16: 2e-2} if device != "cpu" else None
    t = time.time()
    info = {}
    try:
        if device == "cpu" and case.dtype == torch.bfloat16:
            verdict, detail = "skipped", "bf16: the Triton interpreter's bf16 tl.dot is wrong (a GPU case)"
        else:
            verdict, detail = run_case(case, device, kernel_tol=tol, info=info)
    except Exception as e:  # noqa: BLE001 - a failure of the reference or the checks is reported with its seed
        verdict, detail = "error", f"{type(e).__name__} outside the kernels: {e}"
    return dict(seed=seed, verdict=verdict, detail=detail, paths=case.paths(), dtype=str(case.dtype)[6:],
                summary=case_summary(case), seconds=time.time() - t, sdpa_differs=info.get("sdpa_differs", 0))


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
            rows[key]["sdpa≠def"] += bool(r.get("sdpa_differs"))
    cols = (["cases", "ok", "refused"] + list(LISTED) + list(FAIL) + ["sdpa≠def"]
            + (["skipped"] if rows["all cases"]["skipped"] else []))
    lines = ["| path | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for key in [k for k in ROWS if k in rows] + sorted(set(rows) - set(ROWS)):
        c = rows[key]
        lines.append(f"| {key} | " + " | ".join(str(c[k]) for k in cols) + " |")
    return "\n".join(lines)


def parse_seeds(text: str):
    """'30,61,100-104' -> [30, 61, 100, 101, 102, 103, 104]"""
    out = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def _stop(ex: cf.ProcessPoolExecutor) -> None:
    """Stop the pool now: queued cases are cancelled, running workers (ours) terminated, then killed."""
    procs = list(getattr(ex, "_processes", {}).values())
    ex.shutdown(wait=False, cancel_futures=True)
    for signal_them in ("terminate", "kill"):
        alive = [p for p in procs if p.is_alive()]
        for p in alive:
            getattr(p, signal_them)()
        until = time.time() + 5
        for p in alive:
            p.join(max(0.0, until - time.time()))


def line(r) -> str:
    return f"{r['verdict']}: {r['detail']}\n    {r['summary']}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--seed0", type=int, default=0, help="first seed (seeds seed0 .. seed0+cases-1)")
    ap.add_argument("--seeds", default=None, help="these seeds instead, e.g. 30,61,596 or 0-99")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (Triton interpreter)")
    ap.add_argument("--gpu-cases", action="store_true",
                    help="with --device cpu: the GPU cases (larger grids, bf16, GPU launch configs)")
    ap.add_argument("--workers", type=int, default=max(1, min(14, (os.cpu_count() or 2) - 2)),
                    help="processes (default: the CPU cores less two, at most 14): compiles run in parallel")
    ap.add_argument("--time-limit", type=float, default=510.0,
                    help="seconds for the whole run, start-up included (default 510); no case starts in the last "
                         "--grace seconds, cases still running at the limit are stopped and reported as not run")
    ap.add_argument("--grace", type=float, default=60.0)
    ap.add_argument("--md", default=None, help="also write the summary and every case that was not ok here")
    args = ap.parse_args(argv)
    seeds = parse_seeds(args.seeds) if args.seeds else list(range(args.seed0, args.seed0 + args.cases))
    gpu_cases = args.device != "cpu" or args.gpu_cases

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
    span = f"seeds {seeds[0]}..{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) else f"seeds {args.seeds}"
    header = (f"{datetime.date.today()} | commit {commit} | {name} | torch {torch.__version__} | "
              f"triton {triton.__version__} | {span} ({len(seeds)}, {'GPU' if gpu_cases else 'CPU'} cases) | "
              f"{args.workers} workers | time limit {args.time_limit:.0f} s")
    print(header, flush=True)
    deadline = START + args.time_limit
    last_start = deadline - args.grace
    results, printed, broken, stopped = [], 0, False, False
    ctx = multiprocessing.get_context("spawn")
    ex = cf.ProcessPoolExecutor(args.workers, mp_context=ctx, initializer=_worker_init,
                                initargs=(args.device, max(1, (os.cpu_count() or 1) // args.workers)))
    pending = {}
    todo = iter(seeds)
    try:
        for seed in todo:  # two cases per worker in flight, so the time limit stops cleanly
            pending[ex.submit(_run, (seed, args.device, gpu_cases))] = seed
            if len(pending) >= 2 * args.workers:
                break
        while pending:
            done, _ = cf.wait(pending, timeout=max(0.0, deadline - time.time()), return_when=cf.FIRST_COMPLETED)
            if not done:  # the time limit: what still runs is reported as not run
                stopped = True
                break
            for f in done:
                seed = pending.pop(f)
                try:
                    r = f.result()
                except Exception as e:  # noqa: BLE001 - a crashed worker is a failure of that case
                    broken = broken or isinstance(e, BrokenProcessPool)
                    r = dict(seed=seed, verdict="error", detail=f"worker: {e!r}", paths=[], dtype="?",
                             summary=f"seed {seed} (in flight when the worker failed)", seconds=0.0)
                results.append(r)
                if r["verdict"] in FAIL + LISTED and printed < MAX_PRINTED:
                    printed += 1
                    print(line(r), flush=True)
                if len(results) % 100 == 0:
                    print(f"{len(results)} cases, {time.time() - START:.0f} s", flush=True)
                if time.time() < last_start and not broken:
                    nxt = next(todo, None)
                    if nxt is not None:
                        try:
                            pending[ex.submit(_run, (nxt, args.device, gpu_cases))] = nxt
                        except BrokenProcessPool:  # a worker died (e.g. a CUDA error): report what ran
                            broken = True
            if broken:
                break
    finally:
        _stop(ex)
    not_run = len(seeds) - len(results)
    results.sort(key=lambda r: r["seed"])
    failed = [r for r in results if r["verdict"] in FAIL]
    listed = [r for r in results if r["verdict"] in LISTED]
    why = "a worker died" if broken else "time limit" if (stopped or not_run) else ""
    n = collections.Counter(r["verdict"] for r in results)
    parts = [f"{len(failed)} failed ({', '.join(f'{n[v]} {v}' for v in FAIL)})", f"{n['no-kernel']} no-kernel",
             f"{n['near-tie']} near-tie"]
    if n["skipped"]:
        parts.append(f"{n['skipped']} skipped (bf16 in the interpreter)")
    parts.append(f"{sum(bool(r.get('sdpa_differs')) for r in results)} where the device's SDPA put NaN/inf "
                 "unlike the definition (allowed)")
    if not_run:
        parts.append(f"{not_run} not run ({why})")
    status = "FAIL" if failed else "INCOMPLETE" if not_run else "PASS"
    verdict = f"{status}: {len(results)} of {len(seeds)} cases in {time.time() - START:.0f} s: " + ", ".join(parts)
    summary = table(results)
    if args.md:
        body = [f"# Engine fuzz ({args.device})", "", header, "", summary, "", verdict, ""]
        body += [f"* {r['verdict']}: {r['detail']} — {r['summary']}" for r in failed + listed]
        pathlib.Path(args.md).write_text("\n".join(body) + "\n")
    print("\nnot ok:" if failed or listed else "")
    for r in (failed + listed)[:MAX_PRINTED]:
        print(line(r))
    if len(failed + listed) > MAX_PRINTED:
        print(f"... and {len(failed + listed) - MAX_PRINTED} more" + (f" (all in {args.md})" if args.md else ""))
    print("\n" + header + "\n" + verdict + "\n\n" + summary, flush=True)
    if failed:
        return 1
    return 3 if not_run else 0


if __name__ == "__main__":
    sys.exit(main())
