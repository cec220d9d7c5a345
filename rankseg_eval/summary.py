"""The report's content: per-case scores, paired differences (RankSEG - baseline) and paired tests per region."""

from __future__ import annotations

from typing import Any

import numpy as np

from .decoding import METRICS, PAIRED, Decoders
from .layouts import Layout, class_layout
from .scoring import CaseResult

#: A paired delta within +-STABLE_PP percentage points counts as "stable".
STABLE_PP = 1.0


def sign_test(deltas: list[float]) -> float:
    """Exact two-sided sign test (``scipy.stats.binomtest``, p = 1/2) on the non-zero deltas; 1.0 when all are 0."""
    from scipy.stats import binomtest

    pos, neg = sum(d > 0 for d in deltas), sum(d < 0 for d in deltas)
    return 1.0 if pos + neg == 0 else float(binomtest(pos, pos + neg, 0.5).pvalue)


def wilcoxon(deltas: list[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``); ``None`` when every delta is 0."""
    from scipy.stats import wilcoxon as scipy_wilcoxon

    return float(scipy_wilcoxon(deltas).pvalue) if any(deltas) else None


def paired(
    results: list[CaseResult], baseline: str, region: str, metric: str, methods: dict[str, str] = PAIRED
) -> tuple[list[float], list[float]]:
    """The baseline's and the paired decoder's (``methods[metric]``: RankSEG's, or a plan's) scores over the cases
    where ``region`` is scored."""
    pairs = [
        (r.scores[baseline][region][metric], r.scores[methods[metric]][region][metric])
        for r in results
        if r.scores and region in r.scores[baseline] and r.scores[baseline][region][metric] is not None
    ]
    return [a for a, _ in pairs], [b for _, b in pairs]


def summarise(
    results: list[CaseResult], baseline: str, regions: list[str], methods: dict[str, str] = PAIRED
) -> dict[str, Any]:
    """Samplewise means, mean paired delta (pp), improved/stable/worsened counts and paired tests per region, of
    ``methods[metric]`` against the baseline."""
    summary: dict[str, Any] = {}
    for region in regions:
        summary[region] = {}
        for metric in METRICS:
            base, ours = paired(results, baseline, region, metric, methods)
            if not base:
                continue
            deltas = [100.0 * (b - a) for a, b in zip(base, ours)]
            summary[region][metric] = {
                "n": len(deltas),
                "mean": {baseline: float(np.mean(base)), methods[metric]: float(np.mean(ours))},
                "rankseg": methods[metric],
                "delta_pp": float(np.mean(deltas)),
                "improved": sum(d > STABLE_PP for d in deltas),
                "stable": sum(abs(d) <= STABLE_PP for d in deltas),
                "worsened": sum(d < -STABLE_PP for d in deltas),
                "sign_test_p": sign_test(deltas),
                "wilcoxon_p": wilcoxon(deltas),
            }
    return {region: s for region, s in summary.items() if s}


def timing(results: list[CaseResult]) -> dict[str, dict[str, float]]:
    """Mean and total decoding seconds per method over the scored cases."""
    ok = [r for r in results if r.seconds]
    if not ok:
        return {}
    methods = list(ok[0].seconds)
    return {m: {"mean_s": float(np.mean([r.seconds[m] for r in ok])), "total_s": float(sum(r.seconds[m] for r in ok))}
            for m in methods}


def build_report(
    results: list[CaseResult], decoders: Decoders, layout: Layout | None = None, config: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Everything the reports show, as JSON-ready data.

    ``layout`` names the labels and scored regions (``None``: one region per foreground class, as
    :func:`~rankseg_eval.evaluate` scored them); ``config`` says where the cases came from (``source``, a sentence,
    and whatever else the front end wants recorded).
    """
    if layout is None:
        layout = class_layout(max((r.channels for r in results if r.channels), default=2))
    methods = decoders.paired
    cases = []
    for r in results:
        if r.scores:
            base = r.scores[decoders.baseline]
            deltas = {
                region: {
                    m: None if base[region][m] is None else 100.0 * (r.scores[methods[m]][region][m] - base[region][m])
                    for m in METRICS
                }
                for region in base
            }
            cases.append({"case_id": r.case_id, "scores": r.scores, "delta_pp": deltas, "decode_seconds": r.seconds})
    return {
        "tool": "rankseg-eval",
        "config": dict(config or {}),
        "decoding": decoders.describe(),
        "averaging": "samplewise, Dice and IoU per case and region, then the mean over cases; a region whose truth "
        + ("is empty is not scored in that case" if decoders.ignore_empty else "and prediction are both empty scores 1"),
        "stable_within_pp": STABLE_PP,
        "labels": {str(value): name for value, name in layout.labels.items()},
        "regions": {name: list(labels) for name, labels in layout.regions.items()},
        "methods": list(decoders.methods),
        "baseline": decoders.baseline,
        "paired": methods,
        "compared": decoders.label,
        "summary": summarise(results, decoders.baseline, list(layout.regions), methods),
        "timing": timing(results),
        "cases": cases,
        "skipped": [{"case_id": r.case_id, "reason": r.error} for r in results if r.error],
    }
