"""The :class:`RankSEG` decoder: validated options plus the functional core."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from .functional import decode, thresholds
from .options import Options, option_specs
from .plan import Plan


def options_signature(*leading: inspect.Parameter) -> inspect.Signature:
    """A signature ``(*leading, *, metric=..., ...)`` listing every option with its default, for ``help()`` and IDEs."""
    kw = inspect.Parameter.KEYWORD_ONLY
    return inspect.Signature([*leading, *(inspect.Parameter(n, kw, default=s.default) for n, s in option_specs().items())])


class RankSEG:
    """Dice/IoU-optimal prediction from class probabilities (RankSEG; Dai & Li 2023, Wang & Dai 2025).

    Instead of ``argmax``, each image and class keeps the mask that maximises the expected metric under the
    model's probabilities: the pixels above a per-image, per-class threshold, found without sorting by the
    reciprocal moment approximation (RMA), or exactly with ``solver="exact"``. By default a class keeps its mask
    only where that beats predicting it absent (``ignore_empty`` says how an absent structure is scored).

    Options (keyword only; :func:`rankseg_plugins.options.option_specs` lists them with their help):
    ``metric`` (``"dice"``, ``"iou"``, ``"acc"``), ``output_mode`` (``"multiclass"``, ``"multilabel"``), ``solver``
    (``"rma"``, ``"exact"``), ``smooth``, ``pruning_prob`` (``None``: presence rule), ``ignore_empty``, ``regions``,
    ``unassigned``, ``void_index``. Names and values are case- and space-insensitive, and the reference package's
    spellings are accepted.

    Input: ``(B, C, *spatial)`` float16/bfloat16/float32/float64 probabilities in [0, 1], any number of spatial dims,
    any memory layout, any device. Output on the input's device, the input never modified: multiclass (and
    regions) ``(B, *spatial)`` int64 labels, multilabel ``(B, C, *spatial)`` bool masks. ``C == 1`` is a binary
    foreground probability.

    Example::

        >>> import torch
        >>> from rankseg_plugins import RankSEG
        >>> probs = torch.tensor([[[[0.9, 0.4, 0.4, 0.4]]]])  # (B, C, H, W): one foreground probability map
        >>> (probs > 0.5).long()[:, 0]                      # thresholding: best expected pixel accuracy
        tensor([[[1, 0, 0, 0]]])
        >>> RankSEG(metric="dice")(probs)                   # best expected Dice
        tensor([[[1, 1, 1, 1]]])
    """

    def __init__(self, plan: str | Path | dict | Plan | None = None, **options: Any) -> None:
        if plan is not None and options:
            raise ValueError(f"a plan carries its own options; pass either plan= or options, not both ({sorted(options)})")
        self.plan = None if plan is None else plan if isinstance(plan, Plan) else Plan.load(plan)
        self.options = Options.create(**options) if self.plan is None else self.plan.options

    @classmethod
    def from_plan(cls, plan: str | Path | dict | Plan) -> RankSEG:
        """The decoder a plan describes (``rankseg-eval --fit-plan``): one decision per class or region, see
        :mod:`rankseg_plugins.plan`. A plan of ``argmax`` everywhere is argmax; of ``rankseg`` everywhere,
        ``RankSEG(**plan options)``."""
        return cls(plan=plan)

    def predict(self, probs: torch.Tensor) -> torch.Tensor:
        """Labels ``(B, *spatial)`` int64 (multiclass, regions) or masks ``(B, C, *spatial)`` bool (multilabel)."""
        return decode(probs, self.options, self.plan)

    __call__ = predict

    def thresholds(self, probs: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` float64 thresholds (``(B, R)`` with regions): class ``c``'s own mask in image ``b`` is
        ``probs[b, c] > thresholds[b, c]``; ``inf`` marks a class decided absent. In multiclass mode these are the
        masks before overlaps are resolved."""
        return thresholds(probs, self.options, self.plan)

    def __repr__(self) -> str:
        if self.plan is not None:
            decisions = ", ".join(f"{name}: {d.as_dict()}" for name, d in zip(self.plan.targets, self.plan.decisions))
            return f"RankSEG(plan={{{decisions}}}, {', '.join(f'{k}={v!r}' for k, v in self.options.as_dict().items())})"
        return f"RankSEG({', '.join(f'{k}={v!r}' for k, v in self.options.as_dict().items())})"


RankSEG.__init__.__signature__ = options_signature(
    inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY),
    inspect.Parameter("plan", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None),
)
