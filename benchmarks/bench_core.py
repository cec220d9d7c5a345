"""Speed and peak memory of the core against argmax and the reference package, measured in one run.

    python benchmarks/bench_core.py                      # all cases, 2 threads, float32, CPU
    python benchmarks/bench_core.py --cases voc --repeat 5 --json out.json
    python benchmarks/bench_core.py --shape 2,14,96,96,96     # your own shape

For each case (VOC-like, Cityscapes-like, CT-like), each as softmax of i.i.d. noise (worst case) and as smooth
"model-like" maps (low-resolution random logits upsampled x16, scaled by 4, softmax), it prints the median wall
time and the peak extra resident memory of ``argmax``, ``rankseg_plugins`` (RMA, multiclass Dice) and the
reference ``rankseg==0.0.8`` (its default RMA; install with ``pip install -e .[bench]``), with ratios.
Times are measured first, under the default allocator. Then every allocation above 64 KiB is served by mmap, so
freed buffers leave the resident set, and peak memory is read from the kernel (``VmHWM`` after resetting it
through ``/proc/self/clear_refs``): it counts every allocation, the output included, and is reported as a
multiple of the input's size.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from rankseg_plugins import rankseg

CASES = {
    "voc": (4, 21, 512, 512),
    "cityscapes": (2, 19, 512, 1024),
    "ct": (1, 3, 256, 256, 160),
}


def make_probs(shape: tuple[int, ...], kind: str, seed: int = 0) -> torch.Tensor:
    """Softmax of i.i.d. noise, or of low-resolution logits upsampled x16 and scaled by 4 ("model-like")."""
    g = torch.Generator().manual_seed(seed)
    if kind == "noise":
        return torch.randn(shape, generator=g).softmax(1)
    low = tuple(max(1, n // 16) for n in shape[2:])
    logits = 4.0 * torch.randn(*shape[:2], *low, generator=g)
    mode = "bilinear" if len(low) == 2 else "trilinear"
    return F.interpolate(logits, size=shape[2:], mode=mode, align_corners=False).softmax(1)


LIBC = ctypes.CDLL("libc.so.6")


def _return_freed_memory() -> None:
    """Serve every allocation above 64 KiB by mmap, so freed buffers leave the resident set and peaks are honest."""
    M_MMAP_THRESHOLD = -3
    LIBC.mallopt(M_MMAP_THRESHOLD, 1 << 16)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_extra_bytes(fn: Callable[[torch.Tensor], object], probs: torch.Tensor) -> int:
    """Peak resident memory above the level before ``fn(probs)`` ran (Linux only)."""
    gc.collect()
    LIBC.malloc_trim(0)  # hand memory freed earlier back to the kernel, or reusing it would hide allocations
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    out = fn(probs)
    peak = _status_kib("VmHWM")
    del out
    return (peak - before) * 1024


def median_seconds(fn: Callable[[torch.Tensor], object], probs: torch.Tensor, repeat: int) -> float:
    fn(probs)  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(probs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def methods() -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    found: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "argmax": lambda p: p.argmax(1),
        "rankseg_plugins": lambda p: rankseg(p, metric="dice"),
    }
    try:
        from rankseg import RankSEG as Reference
    except ImportError:
        print("reference package rankseg not installed (pip install -e .[bench]): skipping it")
    else:
        reference = Reference(metric="dice", output_mode="multiclass", solver="RMA")
        found["rankseg 0.0.8"] = reference.predict
    return found


def run(cases: list[str], kinds: list[str], repeat: int) -> list[dict]:
    """Time every method on every case under the default allocator, then measure peak memory (see module doc)."""
    found = methods()
    rows = []
    for case in cases:
        for kind in kinds:
            probs = make_probs(CASES[case], kind)
            outputs = {name: fn(probs) for name, fn in found.items()}
            for name, fn in found.items():
                rows.append(dict(
                    case=case, shape=list(probs.shape), kind=kind, method=name,
                    seconds=median_seconds(fn, probs, repeat),
                    input_bytes=probs.numel() * probs.element_size(),
                    agrees_with_argmax=(outputs[name] == outputs["argmax"]).double().mean().item(),
                ))
    _return_freed_memory()  # from here on, freed buffers leave the resident set (slower, so after the timings)
    for row in rows:
        row["peak_extra_bytes"] = peak_extra_bytes(found[row["method"]], make_probs(CASES[row["case"]], row["kind"]))
    return rows


def print_table(rows: list[dict]) -> None:
    header = f"{'case':<11}{'kind':<7}{'method':<17}{'time ms':>9}{'x argmax':>9}{'x ours':>8}{'peak MB':>9}{'x input':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        group = [r for r in rows if r["case"] == row["case"] and r["kind"] == row["kind"]]
        t = {r["method"]: r["seconds"] for r in group}
        print(
            f"{row['case']:<11}{row['kind']:<7}{row['method']:<17}{row['seconds'] * 1e3:>9.1f}"
            f"{row['seconds'] / t['argmax']:>9.2f}{row['seconds'] / t['rankseg_plugins']:>8.2f}"
            f"{row['peak_extra_bytes'] / 2**20:>9.1f}{row['peak_extra_bytes'] / row['input_bytes']:>8.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--kinds", nargs="+", choices=["noise", "model"], default=["noise", "model"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--shape", help="benchmark this (B,C,*spatial) shape instead, e.g. 2,19,512,512")
    args = parser.parse_args()
    if args.shape:
        CASES["custom"] = tuple(int(n) for n in args.shape.split(","))
        args.cases = ["custom"]
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU; median of {args.repeat}")
    rows = run(args.cases, args.kinds, args.repeat)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
