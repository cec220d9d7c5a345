"""Speed and peak memory of the core against argmax and the reference package, idle and under load, in one run.

    python benchmarks/bench_core.py                              # every CPU case, 2 threads, median of 5
    python benchmarks/bench_core.py --cases voc ade --kinds model --json rows.json
    python benchmarks/bench_core.py --shape 2,14,96,96,96         # your own shape
    python benchmarks/bench_core.py --device cuda                 # the GPU cases (adds kits and ade16)

Cases: VOC (4x21x512x512), Cityscapes (2x19x512x1024), ADE20K (1x150x512x512), TotalSegmentator-like
(1x105x96^3) and CT (1x3x256x256x160); on the GPU also a KiTS-size volume (1x4x512x512x600) and an ADE20K batch
(16x150x512x512). Maps are softmax of i.i.d. noise (worst case) or "model-like": low-resolution random logits
upsampled x16, scaled by 4, softmax. Methods: ``argmax``, ``rankseg_plugins`` (the default decoder, Dice) and the
reference ``rankseg==0.0.8`` (its default RMA, and with ``safe_screening=True``; ``pip install -e .[bench]``).

Per case it reports the median wall time of each method idle and, with ``--load`` (default on the CPU), while one
other process keeps a core busy (a spinning Python loop, as a data loader would), each as a ratio to argmax measured
in the same conditions; and the peak extra memory as a multiple of the input's size. CPU memory: every allocation
above 64 KiB is served by mmap, so freed buffers leave the resident set, and the peak is read from the kernel
(``VmHWM`` after resetting it through ``/proc/self/clear_refs``); it counts every allocation, the output included,
and is the median of three calls after a warm-up call, in a process of its own (so what ran before leaves no
allocator state behind).
GPU memory: ``torch.cuda.max_memory_allocated`` above the input. Times on the GPU are taken after
``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import multiprocessing
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from rankseg_plugins import rankseg

CASES = {
    "voc": (4, 21, 512, 512),
    "cityscapes": (2, 19, 512, 1024),
    "ade": (1, 150, 512, 512),
    "ts": (1, 105, 96, 96, 96),
    "ct": (1, 3, 256, 256, 160),
}
GPU_CASES = {**CASES, "kits": (1, 4, 512, 512, 600), "ade16": (16, 150, 512, 512)}
Method = Callable[[torch.Tensor], object]


def make_probs(shape: tuple[int, ...], kind: str, device: str, seed: int = 0) -> torch.Tensor:
    """Softmax of i.i.d. noise, or of low-resolution logits upsampled x16 and scaled by 4 ("model-like")."""
    g = torch.Generator().manual_seed(seed)
    if kind == "noise":
        return torch.randn(shape, generator=g).to(device).softmax(1)
    low = tuple(max(1, n // 16) for n in shape[2:])
    logits = 4.0 * torch.randn(*shape[:2], *low, generator=g).to(device)
    mode = "bilinear" if len(low) == 2 else "trilinear"
    out = torch.empty(shape, device=device)
    for b in range(shape[0]):  # one image at a time keeps the float32 upsampling within memory for big batches
        out[b] = F.interpolate(logits[b : b + 1], size=shape[2:], mode=mode, align_corners=False).softmax(1)[0]
    return out


def methods(reference: bool) -> dict[str, Method]:
    found: dict[str, Method] = {"argmax": lambda p: p.argmax(1), "rankseg_plugins": lambda p: rankseg(p)}
    if not reference:
        return found
    try:
        from rankseg import RankSEG as Reference
    except ImportError:
        print("reference package rankseg not installed (pip install -e .[bench]): skipping it")
        return found
    found["rankseg 0.0.8"] = Reference(metric="dice", output_mode="multiclass", solver="RMA").predict
    found["rankseg 0.0.8 screening"] = Reference(
        metric="dice", output_mode="multiclass", solver="RMA", safe_screening=True
    ).predict
    return found


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(fn: Method, probs: torch.Tensor, repeat: int) -> float:
    fn(probs)  # warm-up
    _sync(str(probs.device))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(probs)
        _sync(str(probs.device))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def busy_core() -> Iterator[None]:
    """Another process spinning on one core for as long as the block runs."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        spinner.kill()
        spinner.wait()


LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None


def return_freed_memory() -> None:
    """Serve every allocation above 64 KiB by mmap, so freed buffers leave the resident set and peaks are honest."""
    M_MMAP_THRESHOLD = -3
    LIBC.mallopt(M_MMAP_THRESHOLD, 1 << 16)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_extra_bytes(fn: Method, probs: torch.Tensor, repeat: int = 3) -> int:
    """Median over ``repeat`` calls, after a warm-up call, of the peak memory above the level before ``fn(probs)``
    ran (CPU: resident set, Linux only; GPU: allocated): the steady state of a decode loop, without one-time costs
    (allocator arenas, thread stacks) that would make a peak depend on what ran before it."""
    fn(probs)
    return int(statistics.median(_peak_extra_bytes(fn, probs) for _ in range(repeat)))


def _peak_extra_bytes(fn: Method, probs: torch.Tensor) -> int:
    gc.collect()
    if probs.is_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        out = fn(probs)
        torch.cuda.synchronize()
        del out
        return torch.cuda.max_memory_allocated() - before
    LIBC.malloc_trim(0)  # hand memory freed earlier back to the kernel, or reusing it would hide allocations
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    out = fn(probs)
    peak = _status_kib("VmHWM")
    del out
    return (peak - before) * 1024


def run(cases: dict[str, tuple[int, ...]], kinds: list[str], repeat: int, device: str, load: bool,
        reference_cases: set[str]) -> list[dict]:
    """Time every method on every case (idle, then loaded), then measure peak memory (see module doc)."""
    rows = []
    for case, shape in cases.items():
        for kind in kinds:
            probs = make_probs(shape, kind, device)
            found = methods(case in reference_cases)
            base = found["argmax"](probs)
            for name, fn in found.items():
                rows.append(dict(
                    case=case, shape=list(shape), kind=kind, method=name, device=device,
                    seconds=median_seconds(fn, probs, repeat),
                    input_bytes=probs.numel() * probs.element_size(),
                    agrees_with_argmax=(fn(probs) == base).double().mean().item(),
                ))
                print(f"  {case} {kind} {name}: {rows[-1]['seconds'] * 1e3:.1f} ms", file=sys.stderr, flush=True)
            if load:
                with busy_core():
                    for row in rows[-len(found):]:
                        row["seconds_loaded"] = median_seconds(found[row["method"]], probs, repeat)
            del probs
    for row in rows:
        if device == "cpu":  # a fresh process each, so the allocator's state after other runs does not count
            spawn = multiprocessing.get_context("spawn")
            with spawn.Pool(1) as pool:
                row["peak_extra_bytes"] = pool.apply(_fresh_peak, (row, torch.get_num_threads()))
        else:
            row["peak_extra_bytes"] = _fresh_peak(row, None)
    return rows


def _fresh_peak(row: dict, threads: int | None) -> int:
    """:func:`peak_extra_bytes` of ``row``'s method on its input (on the CPU: in a process just started)."""
    if threads is not None:
        return_freed_memory()
        torch.set_num_threads(threads)
    probs = make_probs(tuple(row["shape"]), row["kind"], row["device"])
    return peak_extra_bytes(methods(True)[row["method"]], probs)


def print_table(rows: list[dict]) -> None:
    loaded = any("seconds_loaded" in r for r in rows)
    header = f"{'case':<11}{'kind':<7}{'method':<25}{'ms':>9}{'x argmax':>9}"
    header += f"{'ms loaded':>11}{'x argmax':>9}{'growth':>8}" if loaded else ""
    header += f"{'peak MB':>9}{'x input':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        group = {r["method"]: r for r in rows if r["case"] == row["case"] and r["kind"] == row["kind"]}
        idle = row["seconds"] / group["argmax"]["seconds"]
        line = f"{row['case']:<11}{row['kind']:<7}{row['method']:<25}{row['seconds'] * 1e3:>9.1f}{idle:>9.2f}"
        if loaded:
            busy = row["seconds_loaded"] / group["argmax"]["seconds_loaded"]
            line += f"{row['seconds_loaded'] * 1e3:>11.1f}{busy:>9.2f}{busy / idle:>8.2f}"
        line += f"{row['peak_extra_bytes'] / 2**20:>9.1f}{row['peak_extra_bytes'] / row['input_bytes']:>8.2f}"
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=sorted(GPU_CASES), help="default: all CPU (or GPU) cases")
    parser.add_argument("--kinds", nargs="+", choices=["noise", "model"], default=["model", "noise"])
    parser.add_argument("--repeat", type=int, default=5, help="median of this many runs")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--no-load", action="store_true", help="skip the runs next to a busy process")
    parser.add_argument("--reference-cases", nargs="*", default=None,
                        help="cases that also run the reference package (default: all but ts, kits, ade16)")
    parser.add_argument("--shape", help="benchmark this (B,C,*spatial) shape instead, e.g. 2,19,512,512")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    table = GPU_CASES if args.device.startswith("cuda") else CASES
    cases = {name: table[name] for name in (args.cases or table)}
    if args.shape:
        cases = {"custom": tuple(int(n) for n in args.shape.split(","))}
    if args.reference_cases is None:
        reference = set(cases) - {"ts", "kits", "ade16"}
    else:
        reference = set(args.reference_cases)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} CPU threads, float32, "
          f"median of {args.repeat}")
    rows = run(cases, args.kinds, args.repeat, args.device, not args.no_load and args.device == "cpu", reference)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
