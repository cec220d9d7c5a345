"""How much expected Dice/IoU RMA leaves on the table: argmax vs RMA vs exact, image by image.

    python benchmarks/rma_gap.py                                  # calibrated synthetic maps
    python benchmarks/rma_gap.py --demo                           # LiTS demo model (needs the monai, demo extras)
    python benchmarks/rma_gap.py --probs P.npy [--labels L.npy]   # any model output
    python benchmarks/rma_gap.py --metrics dice iou --smooth 1 --csv rows.csv

Per image and class it computes four binary masks: the baseline (threshold 0.5, or argmax for multiclass input), RMA's
alone (``ignore_empty=True``), the default's (RMA with the presence rule) and the exact solver's
(``rankseg(..., output_mode="multilabel")``, the per-class optimal masks); their exact
expected metric under the probabilities (``rankseg_plugins.exact.expected_metric``); and their realised metric
against labels. Synthetic maps: smooth "model-like" sigmoid maps (random logits at 1/8 resolution, upsampled x8,
scaled by U[2, 8] and shifted by U[-8, 0], from small objects to large confident ones; "faint": scale U[2, 4], shift
U[-12, -4], a few expected foreground pixels), with labels drawn as ``Bernoulli(p)``, so they are calibrated by
construction. ``--probs``: an ``.npy`` array ``(B, C, *spatial)`` of probabilities (softmax over ``C``, or
independent sigmoids); ``--labels``: an ``.npy`` label map ``(B, *spatial)`` (multiclass) or masks like the
probabilities; without labels they are drawn from the probabilities. ``--demo``: the LiTS demo network's softmax on
case 117, its 8 held-out slabs as images, regions liver (classes 1+2) and tumour (class 2), true labels.
Realised and expected metrics score two empty masks 1 (``0/0 := 1``), like ``rankseg-eval``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rankseg_plugins import rankseg
from rankseg_plugins.exact import expected_metric

METHODS = ("baseline", "rma", "default", "exact")
Dataset = tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]  # name, probs, baseline masks, true masks


def calibrated_probs(
    n: int, size: tuple[int, ...], seed: int, scale: tuple[float, float] = (2, 8), shift: tuple[float, float] = (-8, 0)
) -> torch.Tensor:
    """``(n, 1, *size)`` float32 sigmoid maps: logits ``N(0, 1) * U[scale] + U[shift]`` at 1/8 resolution, upsampled."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 1, *(max(1, s // 8) for s in size), generator=g)
    one = (n, 1, *(1,) * len(size))
    a = scale[0] + (scale[1] - scale[0]) * torch.rand(one, generator=g)
    b = shift[0] + (shift[1] - shift[0]) * torch.rand(one, generator=g)
    mode = ("linear", "bilinear", "trilinear")[len(size) - 1]
    return torch.sigmoid(F.interpolate(low * a + b, size=size, mode=mode, align_corners=False))


def realised(masks: torch.Tensor, truth: torch.Tensor, metric: str, s: float) -> torch.Tensor:
    """Dice/IoU ``(B, C)`` of ``masks`` against ``truth`` (both bool ``(B, C, *spatial)``), ``0/0 := 1``."""
    dims = tuple(range(2, masks.ndim))
    inter = (masks & truth).sum(dims).double()
    a, y = masks.sum(dims).double(), truth.sum(dims).double()
    num = (2 * inter if metric == "dice" else inter) + s
    den = a + y + s - (0 if metric == "dice" else inter)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.ones_like(den))


def evaluate(
    probs: torch.Tensor, baseline: torch.Tensor, truth: torch.Tensor, metric: str, s: float, name: str
) -> list[dict]:
    """One row per image and class: expected and realised metric of each method's mask, and the RMA gap."""
    masks = {
        "baseline": baseline,
        "rma": rankseg(probs, metric=metric, output_mode="multilabel", smooth=s, ignore_empty=True),
        "default": rankseg(probs, metric=metric, output_mode="multilabel", smooth=s),
        "exact": rankseg(probs, metric=metric, output_mode="multilabel", solver="exact", smooth=s),
    }
    expected = {m: expected_metric(probs, masks[m], metric=metric, smooth=s) for m in METHODS}
    real = {m: realised(masks[m], truth, metric, s) for m in METHODS}
    same = (masks["default"] == masks["exact"]).flatten(2).all(2)
    rows = []
    for b in range(probs.shape[0]):
        for c in range(probs.shape[1]):
            row = dict(data=name, metric=metric, smooth=s, image=b, cls=c, mu=probs[b, c].double().sum().item())
            for m in METHODS:
                row[f"E_{m}"] = expected[m][b, c].item()
                row[f"R_{m}"] = real[m][b, c].item()
                row[f"size_{m}"] = int(masks[m][b, c].sum())
            row["gap"] = row["E_exact"] - row["E_default"]
            row["default_is_exact"] = bool(same[b, c])
            rows.append(row)
    return rows


def summarise(rows: list[dict]) -> dict:
    """Means over images, the default's largest gap to the exact optimum, and how often its mask is the exact one."""
    gaps = [r["gap"] for r in rows]
    out = dict(n=len(rows))
    for m in METHODS:
        out[f"E_{m}"] = statistics.fmean(r[f"E_{m}"] for r in rows)
        out[f"R_{m}"] = statistics.fmean(r[f"R_{m}"] for r in rows)
    out["gap_mean"], out["gap_max"] = statistics.fmean(gaps), max(gaps)
    out["default_is_exact"] = statistics.fmean(r["default_is_exact"] for r in rows)
    out["gap_gt_1e-4"] = statistics.fmean(g > 1e-4 for g in gaps)
    empty = [r["size_exact"] == 0 < r["size_default"] for r in rows]
    out["exact_empty"] = statistics.fmean(empty)
    out["gap_max_nonempty"] = max((r["gap"] for r, e in zip(rows, empty) if not e), default=0.0)
    return out


def print_summary(name: str, metric: str, s: float, summary: dict) -> None:
    print(
        f"{name:<18}{metric:<5}{s:>4g}{summary['n']:>5}"
        + "".join(f"{summary[f'E_{m}']:>8.4f}" for m in METHODS)
        + "".join(f"{summary[f'R_{m}']:>8.4f}" for m in METHODS)
        + f"{summary['gap_mean']:>10.1e}{summary['gap_max']:>9.1e}{summary['default_is_exact']:>6.2f}"
        + f"{summary['gap_gt_1e-4']:>7.2f}{summary['exact_empty']:>7.2f}{summary['gap_max_nonempty']:>10.1e}"
    )


def print_header() -> None:
    head = f"{'data':<18}{'metric':<5}{'s':>4}{'n':>5}" + "".join(f"{'E ' + m[:5]:>8}" for m in METHODS)
    head += "".join(f"{'R ' + m[:5]:>8}" for m in METHODS)
    head += f"{'gap mean':>10}{'gap max':>9}{'same':>6}{'>1e-4':>7}{'empty':>7}{'max other':>10}"
    print(head)
    print("-" * len(head))


def synthetic(seed: int) -> list[Dataset]:
    """Datasets ``(name, probs, baseline masks, drawn labels)``."""
    out = []
    for name, n, size, kw in [
        ("model-like 64^2", 100, (64, 64), {}),
        ("faint 64^2", 100, (64, 64), dict(scale=(2, 4), shift=(-12, -4))),
        ("model-like 256^2", 20, (256, 256), {}),
        ("model-like 32^3", 20, (32, 32, 32), {}),
    ]:
        probs = calibrated_probs(n, size, seed, **kw)
        g = torch.Generator().manual_seed(seed + 1)
        out.append((name, probs, probs > 0.5, torch.rand(probs.shape, generator=g) < probs))
    return out


def from_files(probs_file: Path, labels_file: Path | None, seed: int) -> list[Dataset]:
    """A model's probabilities from ``.npy`` (and labels, else drawn from the probabilities)."""
    probs = torch.from_numpy(np.load(probs_file)).float()
    if probs.ndim < 3:
        raise SystemExit(f"{probs_file}: expected probabilities (B, C, *spatial), got shape {tuple(probs.shape)}")
    multiclass = probs.shape[1] > 1 and torch.allclose(probs.sum(1), torch.ones(()), atol=1e-3)
    baseline = F.one_hot(probs.argmax(1), probs.shape[1]).movedim(-1, 1).bool() if multiclass else probs > 0.5
    if labels_file is None:
        truth = torch.rand(probs.shape, generator=torch.Generator().manual_seed(seed)) < probs
    else:
        labels = torch.from_numpy(np.load(labels_file))
        one_hot = labels.ndim == probs.ndim - 1
        truth = F.one_hot(labels.long(), probs.shape[1]).movedim(-1, 1).bool() if one_hot else labels.bool()
    return [(probs_file.stem, probs, baseline, truth)]


def lits_demo() -> list[Dataset]:
    """The LiTS demo: held-out slabs of case 117 as images, regions liver (1+2) and tumour (2)."""
    from rankseg_eval import demo

    _, label, probs = demo.volume_probabilities()
    label = torch.from_numpy(label.astype(np.int64))
    slabs = [slice(z, z + demo.SLAB) for z in demo.HELD_OUT_STARTS]
    argmax = probs.argmax(0)
    regions = list(demo.REGIONS.values())
    region_p = torch.stack([torch.stack([probs[list(r)][:, sl].sum(0) for r in regions]) for sl in slabs])
    baseline = torch.stack([torch.stack([torch.isin(argmax[sl], torch.tensor(r)) for r in regions]) for sl in slabs])
    truth = torch.stack([torch.stack([torch.isin(label[sl], torch.tensor(r)) for r in regions]) for sl in slabs])
    return [("LiTS demo", region_p.clamp(0, 1), baseline, truth)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics", nargs="+", choices=["dice", "iou"], default=["dice", "iou"])
    parser.add_argument("--smooth", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo", action="store_true", help="the LiTS demo model instead of synthetic maps")
    parser.add_argument("--probs", type=Path, help=".npy probabilities (B, C, *spatial) instead of synthetic maps")
    parser.add_argument("--labels", type=Path, help=".npy labels for --probs (else drawn from the probabilities)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--csv", type=Path, help="write one row per image and class here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.probs is not None:
        data = from_files(args.probs, args.labels, args.seed)
    else:
        data = lits_demo() if args.demo else synthetic(args.seed)
    print("E: exact expected metric under the probabilities; R: realised against the labels; gap = E exact - E rma;")
    print("same: fraction of images where RMA's mask is the exact one; >1e-4: fraction with gap > 1e-4;")
    print("empty: fraction where the exact mask is empty and RMA's is not; max other: largest gap on the rest.\n")
    print_header()
    all_rows = []
    for name, probs, baseline, truth in data:
        for metric in args.metrics:
            rows = evaluate(probs, baseline, truth, metric, args.smooth, name)
            print_summary(name, metric, args.smooth, summarise(rows))
            all_rows += rows
    if args.demo or args.probs is not None:
        print("\nper image (class): E baseline, E rma, E exact, gap, R baseline, R rma, R exact")
        for r in all_rows:
            print(
                f"{r['data']:<12}{r['metric']:<5}{r['image']:>3}{r['cls']:>3}"
                + "".join(f"{r[f'E_{m}']:>9.4f}" for m in METHODS)
                + f"{r['gap']:>10.2e}"
                + "".join(f"{r[f'R_{m}']:>9.4f}" for m in METHODS)
            )
    if args.csv:
        with args.csv.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(all_rows[0]))
            writer.writeheader()
            writer.writerows(all_rows)


if __name__ == "__main__":
    main()
