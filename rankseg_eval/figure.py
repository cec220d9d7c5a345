"""The report figures: the slice where the baseline and RankSEG (or a plan) differ most with per-case Dice deltas per
region; with a plan fit, reliability diagrams per class or region before and after temperature scaling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .scoring import CaseResult

LABEL_COLOURS = ["#00000000", "#2ca02c", "#d62728", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b"]
CHANGE_COLOURS = {"added": "#00e5ff", "removed": "#ff00ff", "relabelled": "#ffd700"}


def _painted_label(region: list[int], regions: list[list[int]]) -> int:
    """The label a region shows in a label map: its first label that no region inside it holds."""
    inner = {label for other in regions if set(other) < set(region) for label in other}
    return next((label for label in region if label not in inner), region[0])


def _dice_line(scores: dict[str, dict[str, float | None]]) -> str:
    return ", ".join(f"{region} {'n/a' if s['dice'] is None else format(s['dice'], '.3f')}"
                     for region, s in scores.items())


def figure(path: Path, report: dict[str, Any], results: list[CaseResult]) -> bool:
    """Overlays (ground truth, baseline, RankSEG-Dice, their difference) and the per-case Dice delta per region.

    Label colours are named after the labels; panel titles give every region's Dice of the case. Returns ``False``
    (writing nothing) when no case was scored.
    """
    shown = max((r for r in results if r.preview is not None), key=lambda r: r.preview.disagreement, default=None)
    if shown is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    pv, base, compared = shown.preview, report["baseline"], report["compared"]
    ours = report["paired"]["dice"]
    decoder = "RankSEG-Dice" if compared == "RankSEG" else compared
    names = {int(value): name for value, name in report["labels"].items()}
    top = max(int(max(pv.truth.max(), pv.baseline.max(), pv.rankseg.max())), max(names, default=1), 1)
    colours = [LABEL_COLOURS[i % len(LABEL_COLOURS)] for i in range(top + 1)]
    cmap = ListedColormap(colours)
    fig = plt.figure(figsize=(14, 8), layout="constrained")
    grid = fig.add_gridspec(2, 4, height_ratios=[3, 2])
    background = pv.image if pv.image is not None else np.zeros(pv.truth.shape, np.float32)
    lo, hi = np.percentile(background, [1, 99]) if background.any() else (0.0, 1.0)
    added = (pv.baseline == 0) & (pv.rankseg > 0)
    removed = (pv.baseline > 0) & (pv.rankseg == 0)
    relabelled = (pv.baseline > 0) & (pv.rankseg > 0) & (pv.baseline != pv.rankseg)
    change = np.select([added, removed, relabelled], [1, 2, 3], 0)
    panels = [
        (f"ground truth: {shown.case_id}\nslice {pv.index}, {pv.view}", pv.truth, cmap),
        (f"{base}: case Dice\n{_dice_line(shown.scores[base])}", pv.baseline, cmap),
        (f"{decoder}: case Dice\n{_dice_line(shown.scores[ours])}", pv.rankseg, cmap),
        (f"{compared} vs {base}:\n{int((change > 0).sum())} voxels of this slice differ", change,
         ListedColormap(["#00000000", *CHANGE_COLOURS.values()])),
    ]
    for col, (title, labels, colour_map) in enumerate(panels):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(background, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.imshow(np.ma.masked_equal(labels, 0), cmap=colour_map, vmin=0, vmax=colour_map.N - 1,
                  alpha=0.9 if col == 3 else 0.45, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    handles = [Patch(color=colours[i], label=f"{names.get(i, f'label {i}')} ({i})") for i in range(1, top + 1)]
    handles += [Patch(color=c, label=f"{t} by {compared}" if t == "added" else t) for t, c in CHANGE_COLOURS.items()]
    fig.legend(handles=handles, loc="outside upper center", ncol=len(handles), fontsize=9, frameon=False)

    ax = fig.add_subplot(grid[1, :])
    cases = [c["case_id"] for c in report["cases"]]
    x = np.arange(len(cases))
    regions = list(report["summary"])
    width = 0.8 / max(len(regions), 1)
    for i, region in enumerate(regions):  # each region in the colour of the label it paints in the overlays
        deltas = [np.nan if c["delta_pp"].get(region, {}).get("dice") is None else c["delta_pp"][region]["dice"]
                  for c in report["cases"]]
        colour = LABEL_COLOURS[_painted_label(report["regions"][region], list(report["regions"].values()))
                               % len(LABEL_COLOURS)]
        ax.bar(x + (i - (len(regions) - 1) / 2) * width, deltas, width, label=region, color=colour)
    stable = report["stable_within_pp"]
    ax.axhspan(-stable, stable, color="0.85", zorder=0, label=f"+-{stable:g} pp (stable)")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel(f"Dice: {compared} - {base} (pp)")
    ax.set_title("per-case paired Dice delta", fontsize=10)
    if len(cases) <= 24:
        ax.set_xticks(x, cases, rotation=30, ha="right", fontsize=8)
    else:
        ax.set_xlabel(f"{len(cases)} cases")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def reliability_figure(path: Path, fit: dict[str, Any]) -> bool:
    """Per fitted class or region: observed frequency against predicted probability, before temperature scaling
    and after it (each fold's cases with the ``T, b`` fitted on the other folds), and the voxels per bin below.
    Returns ``False`` (writing nothing) when there is nothing to show."""
    diagrams = fit.get("reliability") or {}
    if not diagrams:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(diagrams)
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n, 5.6), height_ratios=[3, 1], squeeze=False, sharex=True,
                             layout="constrained")
    for col, (target, entry) in enumerate(diagrams.items()):
        top, bottom = axes[0, col], axes[1, col]
        top.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="calibrated")
        curves = [("before", "before (T=1, b=0)", "#1f77b4", -0.011)]
        if "after" in entry:
            curves.append(("after", "after, held-out folds", "#ff7f0e", 0.011))
        for key, label, colour, shift in curves:
            d = entry[key]
            top.plot(d["confidence"], d["frequency"], "o-", ms=3.5, color=colour,
                     label=f"{label}: ECE {d['ece']:.4f}")
            bottom.bar(np.add(d["confidence"], shift), d["voxels"], width=0.022, color=colour)
        title = f"{target}: {fit['targets'][target]['choice']}"
        if "temperature" in entry:
            title += f"\nfitted on all cases: T={entry['temperature']:.3g}, b={entry['bias']:+.3g}"
        top.set_title(title, fontsize=9)
        top.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed frequency" if col == 0 else None)
        top.set_aspect("equal", adjustable="box")
        top.legend(fontsize=7, loc="upper left")
        bottom.set_yscale("log")
        bottom.set(xlabel="predicted probability", ylabel="voxels" if col == 0 else None)
    fig.suptitle(f"reliability {fit['decoded'].split(':')[0]}, {fit['cases']} cases", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
