"""Speed, memory and accuracy of the exact solver (``solver="exact"``) against RMA, measured in one run.

    python benchmarks/bench_exact.py                    # timings: one class, 2D and 3D, 2 threads, float32, CPU
    python benchmarks/bench_exact.py --accuracy         # + brute force, quadrature step, Monte-Carlo up to d = 10^7
    python benchmarks/bench_exact.py --sizes 512x512 256x256x160 --repeat 5

Timings: median wall time of ``rankseg(probs, output_mode="multilabel", solver=...)`` for one class (``C = 1``) on a
smooth model-like sigmoid map (``benchmarks/rma_gap.py``'s generator) and on i.i.d. uniform noise (the widest band of
uncertain pixels), the exact/RMA ratio, and the peak extra resident memory of each (MB, measured in a fresh process;
bytes per pixel for exact: the float32 input holds 4). Accuracy: the largest error against enumeration of all
``2^d`` outcomes (``d <= 14``); the change when the quadrature step is halved and its range widened; the exact
expected Dice/IoU of RMA's mask against a fixed-seed Monte-Carlo mean (``n`` label draws; agreement means a
difference within 5 standard errors) on maps with exact 0s and 1s, tiny and huge ``mu``, up to ``d = 10^7``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import subprocess
import sys

import numpy as np
import torch

from bench_core import median_seconds, peak_extra_bytes, return_freed_memory
from rankseg_plugins import exact, rankseg
from rankseg_plugins.exact import expected_metric, expected_metric_curve
from rma_gap import calibrated_probs, realised


def make_map(size: tuple[int, ...], kind: str) -> torch.Tensor:
    if kind == "uniform":
        return torch.rand(1, 1, *size, generator=torch.Generator().manual_seed(0))
    return calibrated_probs(1, size, seed=0, scale=(4, 4), shift=(-2, -2))


def solve(probs: torch.Tensor, solver: str) -> torch.Tensor:
    return rankseg(probs, output_mode="multilabel", solver=solver, ignore_empty=solver == "rma")


def peak_bytes(size: str, kind: str, solver: str) -> int:
    """Peak extra memory of a solver's second run in a fresh process with every large buffer mmap'ed."""
    cmd = [sys.executable, __file__, "--peak", size, kind, solver]
    return int(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()[-1])


def timings(sizes: list[str], repeat: int) -> None:
    head = f"{'map':<22}{'d':>10}{'RMA ms':>9}{'exact ms':>9}{'ratio':>7}{'RMA MB':>8}{'exact MB':>9}{'B/pixel':>8}"
    print(head + "\n" + "-" * len(head))
    for size in sizes:
        for kind in ("model", "uniform"):
            probs = make_map(tuple(int(n) for n in size.split("x")), kind)
            t = {s: median_seconds(lambda p, s=s: solve(p, s), probs, repeat) for s in ("rma", "exact")}
            peak = {s: peak_bytes(size, kind, s) for s in ("rma", "exact")}
            print(
                f"{kind + ' ' + size:<22}{probs.numel():>10}{t['rma'] * 1e3:>9.1f}{t['exact'] * 1e3:>9.1f}"
                f"{t['exact'] / t['rma']:>7.1f}{peak['rma'] / 2**20:>8.1f}{peak['exact'] / 2**20:>9.1f}"
                f"{peak['exact'] / probs.numel():>8.1f}"
            )


def brute_force_error(trials: int = 300) -> float:
    """Largest |exact curve - enumeration| over random vectors with d <= 14, Dice/IoU, s in {0, 0.5, 3}."""
    rng, worst = np.random.default_rng(0), 0.0
    for trial in range(trials):
        d = int(rng.integers(1, 15))
        kinds = [rng.random(d), rng.choice([0.0, 0.3, 0.5, 1.0], d), rng.random(d) * 1e-6, 1 - rng.random(d) * 1e-9]
        p = kinds[trial % 4]
        p = np.sort(p)[::-1]
        Y = np.array(list(itertools.product([False, True], repeat=d)))
        weight = np.prod(np.where(Y, p, 1 - p), axis=1)
        tau = np.arange(d + 1)
        inter = np.cumsum(np.c_[np.zeros(len(Y)), Y], axis=1)  # |A_tau ∩ Y| for every tau
        y = Y.sum(1)[:, None]
        for metric, s in itertools.product(["dice", "iou"], [0.0, 0.5, 3.0]):
            num = (2 * inter if metric == "dice" else inter) + s
            den = tau + y + s - (0 if metric == "dice" else inter)
            ref = weight @ np.where(den > 0, num / np.maximum(den, 1e-300), 1.0)
            got = expected_metric_curve(torch.from_numpy(p.copy()), metric, s)[1].numpy()
            worst = max(worst, float(np.abs(got - ref).max()))
    return worst


def step_change(probs: torch.Tensor) -> float:
    """Largest change of the expected Dice/IoU of three masks when the step is halved and the range widened."""
    masks = torch.stack([probs > 0.5, probs > 0.2, probs > 0.8], 1)[:, :, 0]
    probs = probs.expand_as(masks)
    before = [expected_metric(probs, masks, metric=m, smooth=s) for m in ("dice", "iou") for s in (0.0, 1.0)]
    saved = exact._STEP, exact._TRUNC
    exact._STEP, exact._TRUNC = saved[0] / 2, saved[1] * 1e-6
    try:
        after = [expected_metric(probs, masks, metric=m, smooth=s) for m in ("dice", "iou") for s in (0.0, 1.0)]
    finally:
        exact._STEP, exact._TRUNC = saved
    return max((a - b).abs().max().item() for a, b in zip(after, before))


def monte_carlo(p: torch.Tensor, draws: int, metric: str, s: float) -> tuple[float, float, float]:
    """Exact expected metric of RMA's mask, and the Monte-Carlo mean and standard error over ``draws`` label draws."""
    mask = rankseg(p.view(1, 1, -1), metric=metric, output_mode="multilabel", smooth=s, ignore_empty=True).view(-1)
    e = expected_metric(p.view(1, 1, -1), mask.view(1, 1, -1), metric=metric, smooth=s).item()
    g = torch.Generator().manual_seed(1)
    draw = lambda: (torch.rand(p.shape, generator=g, dtype=torch.float64) < p).view(1, 1, -1)  # noqa: E731
    values = torch.cat([realised(mask.view(1, 1, -1), draw(), metric, s)[0] for _ in range(draws)])
    return e, values.mean().item(), values.std().item() / math.sqrt(draws)


def accuracy(large: int) -> None:
    print(f"\nlargest error against enumeration of all 2^d outcomes (d <= 14): {brute_force_error():.2e}")
    change = step_change(make_map((512, 512), "model"))
    print(f"largest change with half the quadrature step and a wider range (512x512): {change:.2e}")
    smooth_map = make_map((512, 512), "model").reshape(-1)
    cases = {
        "model 512^2": (smooth_map, 400),
        "0/1 saturated 512^2": (smooth_map.where((smooth_map - 0.5).abs() < 0.4, (smooth_map > 0.5).float()), 400),
        "tiny mu 512^2 (mu~2)": (smooth_map * (2 / smooth_map.sum()), 4000),
        f"huge mu d={large:.0e}": (calibrated_probs(1, (large,), seed=2, scale=(3, 3), shift=(1, 1)).reshape(-1), 40),
    }
    head = f"{'map':<24}{'metric':<7}{'s':>4}{'mu':>12}{'exact':>12}{'MC mean':>12}{'MC s.e.':>10}{'|diff|/se':>10}"
    print("\nexact vs Monte-Carlo, RMA's mask\n" + head + "\n" + "-" * len(head))
    for name, (p, draws) in cases.items():
        for metric, s in [("dice", 0.0), ("iou", 1.0)]:
            e, mc, se = monte_carlo(p.double(), draws, metric, s)
            mu = p.double().sum().item()
            print(f"{name:<24}{metric:<7}{s:>4g}{mu:>12.4g}{e:>12.6f}{mc:>12.6f}{se:>10.1e}{abs(e - mc) / se:>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["512x512", "128x128x128"])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--large", type=int, default=10**7, help="pixels of the huge-mu Monte-Carlo map")
    parser.add_argument("--peak", nargs=3, metavar=("SIZE", "KIND", "SOLVER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.peak:
        return_freed_memory()
        probs = make_map(tuple(int(n) for n in args.peak[0].split("x")), args.peak[1])
        solve(probs, args.peak[2])  # warm-up: one-time allocations of the process are not the solver's
        print(peak_extra_bytes(lambda p: solve(p, args.peak[2]), probs))
        return
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, float32 input, CPU, median of {args.repeat}\n")
    timings(args.sizes, args.repeat)
    if args.accuracy:
        accuracy(args.large)


if __name__ == "__main__":
    main()
