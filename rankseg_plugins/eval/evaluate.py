"""Decode each case with argmax and RankSEG, score per region, and keep failures as per-case messages."""

from __future__ import annotations

import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rankseg_plugins import RankSEG

from .datasets import Case, CaseData, CaseError, Regions, class_regions

METHODS = ("argmax", "rankseg_dice", "rankseg_iou")
METRICS = ("dice", "iou")
#: The RankSEG decoder paired with argmax for each metric: each objective is judged on its own metric.
PAIRED = {"dice": "rankseg_dice", "iou": "rankseg_iou"}


@dataclass
class Preview:
    """One 2D slice of a case for the figure: image, ground truth, argmax and RankSEG (Dice) label maps."""

    index: int
    disagreement: int
    image: np.ndarray | None
    truth: np.ndarray
    argmax: np.ndarray
    rankseg: np.ndarray


@dataclass
class CaseResult:
    """Per-case outcome: ``scores[method][region][metric]``, ``seconds[method]`` and channels, or ``error``."""

    case_id: str
    num_classes: int | None = None
    scores: dict[str, dict[str, dict[str, float]]] | None = None
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


class Decoders:
    """argmax (``p > 0.5`` for a single-channel map) and RankSEG with Dice and IoU objectives."""

    def __init__(self, solver: str = "rma", pruning_prob: float = 0.5, smooth: float = 0.0) -> None:
        self.rankseg = {
            "rankseg_dice": RankSEG(metric="dice", solver=solver, pruning_prob=pruning_prob, smooth=smooth),
            "rankseg_iou": RankSEG(metric="iou", solver=solver, pruning_prob=pruning_prob, smooth=smooth),
        }

    def __call__(self, probs: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Label maps ``(*spatial)`` and wall-clock seconds per method for probabilities ``(C, *spatial)``."""
        labels: dict[str, torch.Tensor] = {}
        seconds: dict[str, float] = {}
        for name, decoder in self.rankseg.items():  # RankSEG first: it validates the probabilities
            start = time.perf_counter()
            try:
                labels[name] = decoder(probs[None])[0]
            except (ValueError, TypeError) as err:
                raise CaseError(f"RankSEG rejected the probabilities: {err}") from err
            seconds[name] = time.perf_counter() - start
        start = time.perf_counter()
        labels["argmax"] = (probs[0] > 0.5).long() if probs.shape[0] == 1 else probs.argmax(0)
        seconds["argmax"] = time.perf_counter() - start
        return {m: labels[m] for m in METHODS}, {m: seconds[m] for m in METHODS}


def check_shapes(data: CaseData) -> None:
    """Raise ``CaseError`` unless probabilities are ``(C, *label.shape)`` and labels fit ``C``."""
    probs, label = data.probs, data.label
    if probs.ndim != label.ndim + 1 or tuple(probs.shape[1:]) != tuple(label.shape):
        raise CaseError(
            f"shape mismatch: probabilities {tuple(probs.shape)} vs label {tuple(label.shape)}; expected "
            f"(C, {', '.join(map(str, label.shape))}) with the label's voxel grid"
        )
    num_classes = max(probs.shape[0], 2)
    if label.size and int(label.max()) >= num_classes:
        raise CaseError(f"label value {int(label.max())} but the probabilities have only {probs.shape[0]} channels")


def _preview(data: CaseData, labels: dict[str, torch.Tensor], axis: int) -> Preview:
    """The slice along ``axis`` where argmax and RankSEG disagree most (most foreground on a tie).

    A slice across the last of three axes (NIfTI voxel order x, y, z) is rotated so x runs across and y up.
    """
    truth = torch.from_numpy(data.label)
    image = data.image
    if truth.ndim == 2:  # a single slice: show all of it
        truth, labels, axis = truth[None], {k: v[None] for k, v in labels.items()}, 0
        image = None if image is None else np.asarray(image)[None]
    axis %= truth.ndim
    other = tuple(d for d in range(truth.ndim) if d != axis)
    differ = (labels["argmax"] != labels["rankseg_dice"]).sum(dim=other)
    foreground = (truth > 0).sum(dim=other)
    index = int(torch.argmax(differ * (foreground.max() + 1) + foreground))

    rotate = truth.ndim == 3 and axis == 2

    def view(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.rot90(a) if rotate else a)

    def take(a: torch.Tensor) -> np.ndarray:
        return view(a.select(axis, index).numpy().astype(np.uint8))

    img = None
    if image is not None and tuple(image.shape[: truth.ndim]) == tuple(truth.shape):
        where: list[int | slice] = [slice(None)] * truth.ndim + [0] * (len(image.shape) - truth.ndim)  # channel 0
        where[axis] = index
        img = view(np.asarray(image[tuple(where)], dtype=np.float32))  # reads one slice of a nibabel proxy
    return Preview(index, int(differ[index]), img, take(truth), take(labels["argmax"]), take(labels["rankseg_dice"]))


def evaluate_case(case: Case, regions: Regions | None, decoders: Decoders, preview_axis: int = -1) -> CaseResult:
    """Load, decode and score one case; any failure becomes ``CaseResult.error``."""
    try:
        data = case.load()
        check_shapes(data)
        labels, seconds = decoders(data.probs)
        truth = torch.from_numpy(data.label)
        scores: dict[str, dict[str, dict[str, float]]] = {}
        for method, pred in labels.items():
            scores[method] = {}
            for name, values in (regions or class_regions(data.probs.shape[0])).items():
                v = torch.tensor(values)
                p, t = torch.isin(pred, v), torch.isin(truth, v)
                scores[method][name] = {"dice": dice(p, t), "iou": iou(p, t)}
        return CaseResult(
            case.case_id, data.probs.shape[0], scores, seconds, preview=_preview(data, labels, preview_axis)
        )
    except CaseError as err:
        return CaseResult(case.case_id, error=str(err))
    except Exception as err:  # an unexpected failure in one case must not stop the others
        where = traceback.extract_tb(err.__traceback__)[-1]
        return CaseResult(case.case_id, error=f"{type(err).__name__}: {err} ({where.filename}:{where.lineno})")


def evaluate(
    cases: Sequence[Case], regions: Regions | None, decoders: Decoders, preview_axis: int = -1, progress: bool = True
) -> list[CaseResult]:
    """Evaluate ``cases`` in order with a progress bar (tqdm when installed and ``progress``).

    Only the preview with the largest disagreement (the first one on a tie) is kept, so memory stays flat.
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
        result = evaluate_case(case, regions, decoders, preview_axis)
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
