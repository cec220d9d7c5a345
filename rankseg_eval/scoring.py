"""Decode each case with the baseline and RankSEG, score every region, keep failures as per-case messages.

Dice and IoU are per case and region. A region whose truth and prediction are both empty scores 1 (``0/0 := 1``,
the per-case challenge convention, RankSEG's ``ignore_empty=False``); with ``ignore_empty=True`` a region whose
truth is empty is not scored in that case (``None``), as MONAI's ``DiceMetric(ignore_empty=True)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .cases import Case, CaseData, CaseError, error_message
from .decoding import Decoders
from .layouts import ScoredRegions, class_layout
from .preview import Preview, take_preview

#: scores[method][region][metric]: ``None`` where the region is not scored (``ignore_empty`` and empty truth).
Scores = dict[str, dict[str, dict[str, float | None]]]


class RunError(Exception):
    """A usage error found only once a case is loaded (e.g. a plan fitted for another channel count): it stops the
    whole run instead of skipping the case."""


@dataclass
class CaseResult:
    """Per-case outcome: ``scores``, decoding ``seconds`` per method and the channel count, or ``error``;
    ``stats``: what an ``observe`` hook of :func:`evaluate` kept of the case (e.g. a plan fit's statistics)."""

    case_id: str
    channels: int | None = None
    scores: Scores | None = None
    seconds: dict[str, float] | None = None
    error: str | None = None
    preview: Preview | None = None
    stats: Any = None


def overlap(pred: torch.Tensor, truth: torch.Tensor) -> tuple[int, int, int]:
    """``(|A∩Y|, |A|, |Y|)`` of two boolean masks: every metric here is a function of these counts."""
    return int((pred & truth).sum()), int(pred.sum()), int(truth.sum())


def from_counts(metric: str, inter: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice ``2I / (P + Y)`` or IoU ``I / (P + Y - I)`` from counts (arrays, or sums over cases for the pooled
    metric), 1.0 where prediction and truth are both empty."""
    inter, total = np.asarray(inter, np.float64), np.asarray(pred, np.float64) + np.asarray(truth, np.float64)
    num, den = (2.0 * inter, total) if metric == "dice" else (inter, total - inter)
    return np.divide(num, den, out=np.ones_like(den), where=den > 0)


def dice(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """``2|A∩Y| / (|A| + |Y|)``; 1.0 when both masks are empty."""
    return float(from_counts("dice", *overlap(pred, truth)))


def iou(pred: torch.Tensor, truth: torch.Tensor) -> float:
    """``|A∩Y| / |A∪Y|``; 1.0 when both masks are empty."""
    return float(from_counts("iou", *overlap(pred, truth)))


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


def region_mask(label_map: torch.Tensor, labels: Sequence[int]) -> torch.Tensor:
    """The region made of ``labels`` in a label map."""
    return torch.isin(label_map, torch.tensor(tuple(labels)))


def masks(pred: torch.Tensor, truth: torch.Tensor, labels: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The region made of ``labels`` in a predicted and a true label map."""
    return region_mask(pred, labels), region_mask(truth, labels)


def score(labels: dict[str, torch.Tensor], truth: torch.Tensor, regions: ScoredRegions, ignore_empty: bool) -> Scores:
    """Dice and IoU of each method's label map on each region."""
    scores: Scores = {}
    for method, pred in labels.items():
        scores[method] = {}
        for name, values in regions.items():
            inter, size, truth_size = overlap(*masks(pred, truth, values))
            skip = ignore_empty and truth_size == 0
            scores[method][name] = {m: None if skip else float(from_counts(m, inter, size, truth_size))
                                    for m in SCORERS}
    return scores


#: A hook that sees every loaded, checked case and returns what to keep of it (:attr:`CaseResult.stats`).
Observer = Callable[[CaseData], Any]


def load_checked(case: Case, decoders: Decoders) -> CaseData:
    """Load ``case`` and check it fits ``decoders``; raise :class:`CaseError` (or the loader's error) when not."""
    data = case.load()
    check_shapes(data)
    decoders.check(data.probs.shape[0], int(data.label.max()) if data.label.size else 0)
    return data


def evaluate_case(
    case: Case, decoders: Decoders, regions: ScoredRegions | None = None, observe: Observer | None = None
) -> CaseResult:
    """Load, decode and score one case; any failure becomes ``CaseResult.error`` with its root cause, except a
    :class:`RunError`, which stops the run."""
    try:
        data = load_checked(case, decoders)
        labels, seconds = decoders(data.probs)
        regions = regions or class_layout(data.probs.shape[0]).regions
        scores = score(labels, torch.from_numpy(data.label), regions, decoders.ignore_empty)
        # the preview compares the baseline with the Dice decoder, which preview.py knows as "rankseg_dice"
        shown = {decoders.baseline: labels[decoders.baseline], "rankseg_dice": labels[decoders.paired["dice"]]}
        preview = take_preview(data, shown, decoders.baseline)
        stats = None if observe is None else observe(data)
        return CaseResult(case.case_id, data.probs.shape[0], scores, seconds, preview=preview, stats=stats)
    except RunError:
        raise
    except Exception as err:  # a failure in one case must not stop the others
        return CaseResult(case.case_id, error=error_message(err))


def progress_bar(total: int, progress: bool, desc: str = "rankseg-eval") -> Any:
    """A tqdm bar when ``progress`` and tqdm is installed, else ``None``."""
    if not progress:
        return None
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:
        return None
    return tqdm(total=total, unit="case", desc=desc)


def evaluate(
    cases: Sequence[Case], decoders: Decoders, regions: ScoredRegions | None = None, progress: bool = False,
    observe: Observer | None = None,
) -> list[CaseResult]:
    """Evaluate ``cases`` in order; ``regions`` ``None`` scores one region per foreground class.

    Only the preview with the largest disagreement (the first one on a tie) is kept, so memory stays flat. With
    ``progress``, a tqdm bar (when tqdm is installed). ``observe`` sees each scored case's data once it is decoded
    (a plan fit collects its statistics there, so the case is loaded once for both).
    """
    results: list[CaseResult] = []
    best: CaseResult | None = None
    bar = progress_bar(len(cases), progress)
    for case in cases:
        result = evaluate_case(case, decoders, regions, observe)
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
