"""Decode each case with the baseline and RankSEG, score every region, keep failures as per-case messages.

Dice and IoU are per case and region. A region whose truth and prediction are both empty scores 1 (``0/0 := 1``,
the per-case challenge convention, RankSEG's ``ignore_empty=False``); with ``ignore_empty=True`` a region whose
truth is empty is not scored in that case (``None``), as MONAI's ``DiceMetric(ignore_empty=True)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .cases import Case, CaseData, CaseError, error_message
from .decoding import Decoders
from .layouts import ScoredRegions, class_layout
from .preview import Preview, take_preview

#: scores[method][region][metric]: ``None`` where the region is not scored (``ignore_empty`` and empty truth).
Scores = dict[str, dict[str, dict[str, float | None]]]


@dataclass
class CaseResult:
    """Per-case outcome: ``scores``, decoding ``seconds`` per method and the channel count, or ``error``."""

    case_id: str
    channels: int | None = None
    scores: Scores | None = None
    seconds: dict[str, float] | None = None
    error: str | None = None
    preview: Preview | None = None


def dice(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """``2|A∩Y| / (|A| + |Y|)``; 1.0 when both masks are empty."""
    inter = int((pred & truth).sum())
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * inter / total


def iou(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """``|A∩Y| / |A∪Y|``; 1.0 when both masks are empty."""
    union = int((pred | truth).sum())
    return 1.0 if union == 0 else int((pred & truth).sum()) / union


#: Each metric of :data:`~rankseg_eval.decoding.METRICS` and its function.
SCORERS = {"dice": dice, "iou": iou}


def check_shapes(data: CaseData) -> None:
    """Raise :class:`CaseError` unless the probabilities are ``(C, *label.shape)``."""
    probs, label = data.probs, data.label
    if probs.ndim != label.ndim + 1 or tuple(probs.shape[1:]) != tuple(label.shape):
        raise CaseError(
            f"shape mismatch: probabilities {tuple(probs.shape)} vs label {tuple(label.shape)}; expected "
            f"(C, {', '.join(map(str, label.shape))}) with the label's voxel grid"
        )


def score(labels: dict[str, torch.Tensor], truth: torch.Tensor, regions: ScoredRegions, ignore_empty: bool) -> Scores:
    """Dice and IoU of each method's label map on each region."""
    scores: Scores = {}
    for method, pred in labels.items():
        scores[method] = {}
        for name, values in regions.items():
            v = torch.tensor(values)
            p, t = torch.isin(pred, v), torch.isin(truth, v)
            skip = ignore_empty and not bool(t.any())
            scores[method][name] = {m: None if skip else f(p, t) for m, f in SCORERS.items()}
    return scores


def evaluate_case(case: Case, decoders: Decoders, regions: ScoredRegions | None = None) -> CaseResult:
    """Load, decode and score one case; any failure becomes ``CaseResult.error`` with its root cause."""
    try:
        data = case.load()
        check_shapes(data)
        decoders.check(data.probs.shape[0], int(data.label.max()) if data.label.size else 0)
        labels, seconds = decoders(data.probs)
        regions = regions or class_layout(data.probs.shape[0]).regions
        scores = score(labels, torch.from_numpy(data.label), regions, decoders.ignore_empty)
        preview = take_preview(data, labels, decoders.baseline)
        return CaseResult(case.case_id, data.probs.shape[0], scores, seconds, preview=preview)
    except Exception as err:  # a failure in one case must not stop the others
        return CaseResult(case.case_id, error=error_message(err))


def evaluate(
    cases: Sequence[Case], decoders: Decoders, regions: ScoredRegions | None = None, progress: bool = False
) -> list[CaseResult]:
    """Evaluate ``cases`` in order; ``regions`` ``None`` scores one region per foreground class.

    Only the preview with the largest disagreement (the first one on a tie) is kept, so memory stays flat. With
    ``progress``, a tqdm bar (when tqdm is installed).
    """
    results: list[CaseResult] = []
    best: CaseResult | None = None
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(cases), unit="case", desc="rankseg-eval")
        except ModuleNotFoundError:
            bar = None
    for case in cases:
        result = evaluate_case(case, decoders, regions)
        if result.preview is not None:
            if best is None or result.preview.disagreement > best.preview.disagreement:
                if best is not None:
                    best.preview = None
                best = result
            else:
                result.preview = None
        results.append(result)
        if bar is not None:
            bar.set_postfix_str(case.case_id)
            bar.update()
    if bar is not None:
        bar.close()
    return results
