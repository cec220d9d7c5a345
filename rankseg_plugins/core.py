"""The :class:`RankSEG` decoder: validated options plus the functional core."""

from __future__ import annotations

import torch

from .functional import decode, rankseg_thresholds
from .options import Options


class RankSEG:
    """Dice/IoU-optimal prediction from class probabilities (RankSEG; Dai & Li 2023, Wang & Dai 2025).

    Instead of ``argmax``, each image and class keeps the mask that maximises the expected metric under the
    model's probabilities. The optimal mask keeps the pixels above a per-image, per-class threshold; the
    default solver finds it with the reciprocal moment approximation (RMA) in O(d), without sorting.

    Args:
        metric: ``"dice"``, ``"iou"`` or ``"acc"`` (argmax / threshold 0.5, the usual baseline).
        output_mode: ``"multiclass"`` (softmax input, non-overlapping labels ``(B, *spatial)`` int64) or
            ``"multilabel"`` (sigmoid input, one mask per class ``(B, C, *spatial)`` bool). ``C == 1`` means a
            binary foreground probability; multiclass output is then the 0/1 label map.
        solver: ``"rma"`` (default) or ``"exact"`` (true expected metric, see :mod:`rankseg_plugins.exact`).
        smooth: ``s >= 0`` in ``Dice = (2|A∩Y| + s) / (|A| + |Y| + s)`` (likewise IoU).
        pruning_prob: multiclass only; a class whose largest probability in an image is ``<= pruning_prob``
            claims no pixels there (it can still win contested pixels). The default 0.5 never creates a class
            the model is not confident about anywhere, so a faint small lesion stays missed; lower it to keep one.
        unassigned: multiclass pixels that no class claims go to the class with the largest increment score
            (``"max_score"``) or get ``void_index`` (``"void"``).
        void_index: label for unclaimed pixels with ``unassigned="void"``.

    Option strings are case-insensitive. Input: ``(B, C, *spatial)`` float16/bfloat16/float32/float64
    probabilities in [0, 1], any number of spatial dims, any memory layout, any device; the output is on the
    input's device and the input is never modified.

    Example::

        >>> probs = torch.softmax(logits, dim=1)        # (B, C, H, W)
        >>> labels = RankSEG(metric="dice")(probs)      # (B, H, W) int64, instead of probs.argmax(1)
    """

    def __init__(
        self,
        metric: str = "dice",
        output_mode: str = "multiclass",
        solver: str = "rma",
        smooth: float = 0.0,
        pruning_prob: float = 0.5,
        unassigned: str = "max_score",
        void_index: int = 255,
    ) -> None:
        self.options = Options.create(metric, output_mode, solver, smooth, pruning_prob, unassigned, void_index)

    def predict(self, probs: torch.Tensor) -> torch.Tensor:
        """Labels ``(B, *spatial)`` int64 (multiclass) or masks ``(B, C, *spatial)`` bool (multilabel)."""
        with torch.no_grad():
            return decode(probs, self.options)

    __call__ = predict

    def thresholds(self, probs: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` float64 thresholds: class ``c``'s own mask in image ``b`` is ``probs[b, c] > thresholds[b, c]``.

        ``inf`` marks a pruned class. In multiclass mode these are the masks before overlaps are resolved.
        """
        return rankseg_thresholds(probs, self.options)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self.options).items())
        return f"RankSEG({fields})"
