"""Summaries and report files: terminal table, JSON, CSV, Markdown and a PNG figure."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .evaluate import METHODS, METRICS, PAIRED, CaseResult

#: A paired delta within +-STABLE_PP percentage points counts as "stable".
STABLE_PP = 1.0
LABEL_COLOURS = ["#00000000", "#2ca02c", "#d62728", "#1f77b4", "#ff7f0e", "#9467bd", "#8c564b"]


def sign_test(deltas: list[float]) -> float:
    """Exact two-sided sign test (binomial, p = 1/2) on the non-zero deltas; 1.0 when all are zero."""
    pos = sum(d > 0 for d in deltas)
    neg = sum(d < 0 for d in deltas)
    n = pos + neg
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(pos, neg) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def wilcoxon(deltas: list[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value (scipy), or ``None`` without scipy or non-zero deltas."""
    try:
        from scipy.stats import wilcoxon as scipy_wilcoxon
    except ModuleNotFoundError:
        return None
    if not any(deltas):
        return None
    return float(scipy_wilcoxon(deltas).pvalue)


def regions_of(results: list[CaseResult]) -> list[str]:
    """Region names in first-seen order over the scored cases."""
    names: dict[str, None] = {}
    for r in results:
        if r.scores:
            names.update(dict.fromkeys(r.scores["argmax"]))
    return list(names)


def summarise(results: list[CaseResult]) -> dict[str, Any]:
    """Samplewise means per method, paired deltas (pp), improved/stable/worsened counts and paired tests."""
    ok = [r for r in results if r.scores]
    summary: dict[str, Any] = {}
    for region in regions_of(ok):
        scored = [r for r in ok if region in r.scores["argmax"]]
        summary[region] = {}
        for metric in METRICS:
            values = {m: [r.scores[m][region][metric] for r in scored] for m in METHODS}
            deltas = [100.0 * (b - a) for a, b in zip(values["argmax"], values[PAIRED[metric]])]
            summary[region][metric] = {
                "n": len(scored),
                "mean": {m: float(np.mean(v)) for m, v in values.items()},
                "rankseg": PAIRED[metric],
                "delta_pp": float(np.mean(deltas)),
                "improved": sum(d > STABLE_PP for d in deltas),
                "stable": sum(abs(d) <= STABLE_PP for d in deltas),
                "worsened": sum(d < -STABLE_PP for d in deltas),
                "sign_test_p": sign_test(deltas),
                "wilcoxon_p": wilcoxon(deltas),
            }
    return summary


def timing(results: list[CaseResult]) -> dict[str, dict[str, float]]:
    """Mean and total decoding seconds per method over the scored cases."""
    ok = [r for r in results if r.seconds]
    return {
        m: {"mean_s": float(np.mean([r.seconds[m] for r in ok])), "total_s": float(sum(r.seconds[m] for r in ok))}
        for m in METHODS
    } if ok else {}


def payload(results: list[CaseResult], config: dict[str, Any], regions: dict[str, list[int]]) -> dict[str, Any]:
    """Everything the JSON report holds. Timings live only under ``timing`` and ``cases[*].decode_seconds``."""
    cases = []
    for r in results:
        if not r.scores:
            continue
        deltas = {
            region: {
                metric: 100.0 * (r.scores[PAIRED[metric]][region][metric] - r.scores["argmax"][region][metric])
                for metric in METRICS
            }
            for region in r.scores["argmax"]
        }
        cases.append({"case_id": r.case_id, "scores": r.scores, "delta_pp": deltas, "decode_seconds": r.seconds})
    return {
        "tool": "rankseg-eval",
        "config": config,
        "averaging": "samplewise: per case, then mean over cases; both masks empty scores 1",
        "stable_within_pp": STABLE_PP,
        "regions": regions,
        "methods": list(METHODS),
        "paired": PAIRED,
        "summary": summarise(results),
        "timing": timing(results),
        "cases": cases,
        "skipped": [{"case_id": r.case_id, "reason": r.error} for r in results if r.error],
    }


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    """Rows (with header) of the summary table shared by the terminal and Markdown output."""
    header = ["region", "metric", "n", "argmax", "RankSEG", "delta pp", "better", "same", "worse", "sign p"]
    rows = [header + ["Wilcoxon p"]]
    for region, per_metric in report["summary"].items():
        for metric, s in per_metric.items():
            rows.append([
                region, metric, str(s["n"]), f"{s['mean']['argmax']:.4f}", f"{s['mean'][s['rankseg']]:.4f}",
                f"{s['delta_pp']:+.2f}", str(s["improved"]), str(s["stable"]), str(s["worsened"]),
                _p(s["sign_test_p"]), _p(s["wilcoxon_p"]),
            ])
    return rows


def terminal_table(report: dict[str, Any]) -> str:
    """The summary, timings and skipped cases as plain text."""
    rows = summary_rows(report)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    if report["timing"]:
        lines.append("decoding time per case: " + ", ".join(
            f"{m} {t['mean_s'] * 1000:.1f} ms" for m, t in report["timing"].items()))
    lines.append(f"cases scored: {len(report['cases'])}, skipped: {len(report['skipped'])}")
    lines += [f"  skipped {s['case_id']}: {s['reason']}" for s in report["skipped"]]
    return "\n".join(lines)


def write_csv(path: Path, report: dict[str, Any]) -> None:
    """One row per case and region: every method's Dice and IoU, paired deltas, decoding seconds."""
    fields = ["case_id", "region"] + [f"{x}_{m}" for x in METRICS for m in METHODS]
    fields += [f"delta_{x}_pp" for x in METRICS] + [f"seconds_{m}" for m in METHODS]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        for case in report["cases"]:
            for region, d in case["delta_pp"].items():
                writer.writerow(
                    [case["case_id"], region]
                    + [f"{case['scores'][m][region][x]:.6f}" for x in METRICS for m in METHODS]
                    + [f"{d[x]:.4f}" for x in METRICS]
                    + [f"{case['decode_seconds'][m]:.6f}" for m in METHODS]
                )


def markdown(report: dict[str, Any], figure: str | None) -> str:
    """The Markdown report."""
    cfg = report["config"]
    rows = summary_rows(report)
    out = [
        "# rankseg-eval: argmax vs RankSEG",
        "",
        f"Source: {cfg['source']}. RankSEG options: solver `{cfg['solver']}`, pruning_prob {cfg['pruning_prob']}, "
        f"smooth {cfg['smooth']}.",
        "",
        "Dice and IoU are computed per case, then averaged over cases (samplewise); a case where both masks are "
        f"empty scores 1. RankSEG is the Dice objective for the Dice rows and the IoU objective for the IoU rows. "
        f"Better / same / worse: paired delta above +{STABLE_PP:g}, within +-{STABLE_PP:g}, below -{STABLE_PP:g} "
        "percentage points. p: two-sided exact sign test and Wilcoxon signed-rank test over cases.",
        "",
        "## Summary",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "---|" * len(rows[0]),
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    if report["timing"]:
        out += ["", "## Decoding time per case", "", "| method | mean (ms) | total (s) |", "|---|---|---|"]
        out += [f"| {m} | {t['mean_s'] * 1000:.1f} | {t['total_s']:.2f} |" for m, t in report["timing"].items()]
    out += ["", f"## Skipped cases ({len(report['skipped'])})", ""]
    out += [f"- `{s['case_id']}`: {s['reason']}" for s in report["skipped"]] or ["None."]
    out += ["", "## Per case (Dice: RankSEG-Dice; IoU: RankSEG-IoU)", "",
            "| case | region | Dice argmax | Dice RankSEG | delta pp | IoU argmax | IoU RankSEG | delta pp |",
            "|---|---|---|---|---|---|---|---|"]
    for case in report["cases"]:
        s = case["scores"]
        for region, d in case["delta_pp"].items():
            out.append(
                f"| {case['case_id']} | {region} | {s['argmax'][region]['dice']:.4f} | "
                f"{s['rankseg_dice'][region]['dice']:.4f} | {d['dice']:+.2f} | {s['argmax'][region]['iou']:.4f} | "
                f"{s['rankseg_iou'][region]['iou']:.4f} | {d['iou']:+.2f} |"
            )
    if figure:
        out += ["", "## Figure", "", f"![argmax vs RankSEG]({figure})"]
    return "\n".join(out) + "\n"


def figure(path: Path, report: dict[str, Any], results: list[CaseResult]) -> bool:
    """Overlays (ground truth, argmax, RankSEG-Dice) on the slice where they differ most, and per-case Dice deltas.

    Returns ``False`` (writing nothing) when no case was scored.
    """
    shown = max((r for r in results if r.preview is not None), key=lambda r: r.preview.disagreement, default=None)
    if shown is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    pv = shown.preview
    n_labels = int(max(pv.truth.max(), pv.argmax.max(), pv.rankseg.max())) + 1
    colours = [LABEL_COLOURS[i % len(LABEL_COLOURS)] for i in range(max(n_labels, 2))]
    cmap = ListedColormap(colours)
    fig = plt.figure(figsize=(14, 7.5), layout="constrained")
    grid = fig.add_gridspec(2, 4, height_ratios=[3, 2])
    background = pv.image if pv.image is not None else np.zeros(pv.truth.shape, np.float32)
    lo, hi = np.percentile(background, [1, 99]) if background.any() else (0.0, 1.0)
    region = next(iter(shown.scores["argmax"]))
    added = (pv.argmax == 0) & (pv.rankseg > 0)
    removed = (pv.argmax > 0) & (pv.rankseg == 0)
    relabelled = (pv.argmax > 0) & (pv.rankseg > 0) & (pv.argmax != pv.rankseg)
    change = np.select([added, removed, relabelled], [1, 2, 3], 0)
    panels = [
        (f"ground truth: case {shown.case_id}, slice {pv.index}", pv.truth, cmap),
        (f"argmax ({region} Dice {shown.scores['argmax'][region]['dice']:.3f})", pv.argmax, cmap),
        (f"RankSEG-Dice ({region} Dice {shown.scores['rankseg_dice'][region]['dice']:.3f})", pv.rankseg, cmap),
        (f"RankSEG vs argmax: {int((change > 0).sum())} voxels differ", change,
         ListedColormap(["#00000000", "#00e5ff", "#ff00ff", "#ffd700"])),
    ]
    for col, (title, labels, colour_map) in enumerate(panels):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(background, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.imshow(np.ma.masked_equal(labels, 0), cmap=colour_map, vmin=0, vmax=colour_map.N - 1,
                  alpha=0.9 if col == 3 else 0.45, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    handles = [Patch(color=colours[i], label=f"label {i}") for i in range(1, len(colours))]
    handles += [Patch(color=c, label=t) for c, t in
                [("#00e5ff", "added by RankSEG"), ("#ff00ff", "removed"), ("#ffd700", "relabelled")]]
    fig.legend(handles=handles, loc="outside upper center", ncol=len(handles), fontsize=8, frameon=False)

    ax = fig.add_subplot(grid[1, :])
    cases = [c["case_id"] for c in report["cases"]]
    x = np.arange(len(cases))
    regions = list(report["summary"])
    width = 0.8 / max(len(regions), 1)
    for i, region in enumerate(regions):
        deltas = [c["delta_pp"][region]["dice"] if region in c["delta_pp"] else np.nan for c in report["cases"]]
        ax.bar(x + (i - (len(regions) - 1) / 2) * width, deltas, width, label=region)
    ax.axhspan(-STABLE_PP, STABLE_PP, color="0.85", zorder=0, label=f"+-{STABLE_PP:g} pp (stable)")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("Dice: RankSEG - argmax (pp)")
    ax.set_title("per-case paired Dice delta", fontsize=10)
    if len(cases) <= 24:
        ax.set_xticks(x, cases, rotation=30, ha="right", fontsize=8)
    else:
        ax.set_xlabel(f"{len(cases)} cases")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_reports(out_dir: Path, report: dict[str, Any], results: list[CaseResult]) -> list[Path]:
    """Write ``report.json``, ``cases.csv``, ``figure.png`` and ``report.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "report.json", out_dir / "cases.csv"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    write_csv(paths[1], report)
    has_figure = figure(out_dir / "figure.png", report, results)
    if has_figure:
        paths.append(out_dir / "figure.png")
    (out_dir / "report.md").write_text(markdown(report, "figure.png" if has_figure else None))
    paths.append(out_dir / "report.md")
    return paths
