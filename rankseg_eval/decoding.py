"""The decoders compared: a baseline and RankSEG with its Dice and IoU objectives, by class or by region.

- Softmax probabilities ``(C, *spatial)`` (background first): the baseline is ``argmax`` (``p > 0.5`` for a single
  channel); RankSEG decodes by class, or by region (``RankSEG(regions=...)`` on the summed class probabilities of
  each region, painted outermost first).
- Sigmoid probabilities, one channel per scored region, outermost first (nnU-Net's region-based networks, the
  kits23 bundle config): the baseline is nnU-Net's ``threshold`` (``p > 0.5`` per channel, painted outermost
  first); RankSEG is ``RankSEG(regions=..., output_mode="multilabel")``.

With a plan (``Decoders(..., plan="plan.json")``, ``rankseg-eval --plan``) the one decoder compared with the baseline
is the plan's (:mod:`rankseg_plugins.plan`), judged on both metrics.

Every decoder returns a label map, so all are scored alike.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from rankseg_plugins import Plan, RankSEG
from rankseg_plugins.options import check_regions
from rankseg_plugins.regions import region_layout

from .cases import CaseError
from .layouts import ScoredRegions

ACTIVATIONS = ("softmax", "sigmoid")
METRICS = ("dice", "iou")
#: The RankSEG decoder paired with the baseline for each metric: each objective is judged on its own metric.
PAIRED = {"dice": "rankseg_dice", "iou": "rankseg_iou"}
#: RankSEG options that the evaluation sets itself: both metrics run, and the probabilities fix the rest.
SET_BY_EVALUATION = ("metric", "output_mode", "regions")


def regions_text(regions: ScoredRegions) -> str:
    """``kidney {1,2} ⊃ tumour {2}``: each region with its labels, ``⊃`` where the next one lies inside it."""
    items = list(regions.items())
    text = ""
    for i, (name, labels) in enumerate(items):
        if i:
            text += " ⊃ " if set(labels) < set(items[i - 1][1]) else ", "
        text += f"{name} {{{','.join(map(str, labels))}}}"
    return text


def check_plan(plan: Plan, regions: ScoredRegions | None, activation: str) -> None:
    """Raise ``ValueError`` unless ``plan`` decodes what is scored: the same regions (or by class) and the same kind
    of probabilities."""
    multilabel = plan.options.output_mode == "multilabel"
    if multilabel != (activation == "sigmoid"):
        kind = "sigmoid region channels" if multilabel else "softmax classes"
        raise ValueError(f"the plan was fitted on {kind}, but the probabilities are {activation}: use a plan fitted "
                         "on this model's outputs")
    mine = None if not regions else check_regions([list(labels) for labels in regions.values()])
    if plan.options.regions != mine:
        fitted = "by class" if plan.options.regions is None else f"regions {[list(r) for r in plan.options.regions]}"
        asked = "by class" if mine is None else f"regions {regions_text(regions)}"
        raise ValueError(f"the plan was fitted {fitted} ({', '.join(plan.targets)}), but this evaluation decodes "
                         f"{asked}: fit a plan for these regions with rankseg-eval --fit-plan")


class Decoders:
    """The baseline and ``RankSEG(metric="dice")`` / ``RankSEG(metric="iou")`` with the same options, or the baseline
    and a plan's decoder.

    ``regions``: decode by these regions, outermost first (``None``: by class, softmax only); ``activation``: what
    the probabilities are (see the module docstring); ``options``: any other RankSEG option
    (:func:`rankseg_plugins.options.option_specs`), e.g. ``solver="exact"``; ``plan``: a plan (file, dict or
    :class:`~rankseg_plugins.Plan`, which carries its own options) fitted for these regions and probabilities.
    """

    def __init__(
        self, regions: ScoredRegions | None = None, activation: str = "softmax",
        plan: str | Path | dict[str, Any] | Plan | None = None, **options: Any,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}; got {activation!r}")
        fixed = sorted(set(options) & set(SET_BY_EVALUATION))
        if fixed:
            raise ValueError(f"{fixed} are set by the evaluation (both metrics run; regions and activation decide "
                             "the rest); pass regions= and activation= instead")
        if activation == "sigmoid" and not regions:
            raise ValueError("sigmoid probabilities hold one channel per region: give the regions, outermost first")
        self.regions = regions
        self.activation = activation
        if activation == "sigmoid":
            self._paint = region_layout(check_regions([list(r) for r in regions.values()]), len(regions), softmax=False)
        self.baseline = "threshold" if activation == "sigmoid" else "argmax"
        #: The method paired with the baseline for each metric, and what the reports call it.
        self.paired, self.label = dict(PAIRED), "RankSEG"
        self.plan: Plan | None = None
        if plan is not None:
            if options:
                raise ValueError(f"a plan carries its own RankSEG options; drop {sorted(options)}")
            self.plan = plan if isinstance(plan, Plan) else Plan.load(plan)
            check_plan(self.plan, regions, activation)
            self.rankseg = {"plan": RankSEG.from_plan(self.plan)}
            self.paired, self.label = {m: "plan" for m in METRICS}, "plan"
            return
        if regions:
            options["regions"] = [list(labels) for labels in regions.values()]
        if activation == "sigmoid":
            options["output_mode"] = "multilabel"
        self.rankseg = {PAIRED[m]: RankSEG(metric=m, **options) for m in METRICS}

    @property
    def methods(self) -> tuple[str, ...]:
        """Method names, baseline first, as the scores and reports key them."""
        return (self.baseline, *self.rankseg)

    @property
    def ignore_empty(self) -> bool:
        """How a region whose truth is empty is scored: ``False``, 1 for an empty prediction; ``True``, not at all."""
        return self.rankseg[self.paired["dice"]].options.ignore_empty

    def check(self, channels: int, max_label: int) -> None:
        """Raise :class:`CaseError` unless ``channels`` probabilities fit a label map whose largest label is given,
        and :class:`~rankseg_eval.scoring.RunError` when they do not fit the plan."""
        if self.plan is not None and channels != self.plan.channels:
            from .scoring import RunError

            fitted = f"{self.plan.channels} input channels ({', '.join(self.plan.targets)})"
            raise RunError(f"the plan was fitted for {fitted}, but the probabilities have {channels}: use the plan "
                           "fitted for this model")
        if self.activation == "sigmoid":
            if channels != len(self.regions):
                raise CaseError(
                    f"{channels} sigmoid channels but {len(self.regions)} regions ({regions_text(self.regions)}): a "
                    "region network has one channel per region, outermost first"
                )
        elif max_label >= max(channels, 2):
            raise CaseError(f"label value {max_label} but the probabilities have only {channels} channels")

    def baseline_labels(self, probs: torch.Tensor) -> torch.Tensor:
        """The baseline's label map ``(*spatial)`` for probabilities ``(C, *spatial)``."""
        if self.activation == "softmax":
            # max(0).indices is argmax(0) (the first maximum on ties), several times faster on CPU
            return (probs[0] > 0.5).long() if probs.shape[0] == 1 else probs.max(0).indices
        labels = torch.zeros(probs.shape[1:], dtype=torch.int64)
        for channel in self._paint.order:  # nnU-Net: for i, c in enumerate(regions_class_order): seg[p[i] > 0.5] = c
            labels[probs[channel] > 0.5] = self._paint.own[channel][0]
        return labels

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
        labels[self.baseline] = self.baseline_labels(probs)
        seconds[self.baseline] = time.perf_counter() - start
        return {m: labels[m] for m in self.methods}, {m: seconds[m] for m in self.methods}

    def describe(self) -> dict[str, Any]:
        """What the report says about decoding: the baseline, RankSEG's mode and every option of both decoders."""
        if self.activation == "sigmoid":
            baseline = "p > 0.5 per region channel, painted outermost first (nnU-Net's region decoding)"
        else:
            baseline = "argmax over the classes (p > 0.5 for a single channel)"
        by = f"by region: {regions_text(self.regions)}" if self.regions else "by class"
        described = {
            "baseline": baseline,
            "rankseg": f"RankSEG {by} ({self.activation} probabilities)",
            "options": {name: decoder.options.as_dict() for name, decoder in self.rankseg.items()},
        }
        if self.plan is not None:
            decisions = ", ".join(f"{t}: {decision_text(d.as_dict())}" for t, d in zip(self.plan.targets,
                                                                                      self.plan.decisions))
            described["rankseg"] = f"plan {by} ({self.activation} probabilities): {decisions}"
            described["plan"] = self.plan.as_dict()
        return described


def decision_text(decision: dict[str, Any]) -> str:
    """A plan decision in a few words: ``rankseg``, ``rankseg pruning_prob=0.5``, ``rankseg T=1.3 b=-0.2``, ..."""
    words = [decision["decoder"]]
    if "pruning_prob" in decision:
        words.append(f"pruning_prob={decision['pruning_prob']:g}")
    if "temperature" in decision:
        words.append(f"T={decision['temperature']:.3g} b={decision['bias']:+.3g}")
    if "threshold" in decision:
        words.append(f"p>{decision['threshold']:g}")
    return " ".join(words)


def options_text(decoding: dict[str, Any]) -> str:
    """RankSEG's options from :meth:`Decoders.describe` in one line (the metric differs between the decoders)."""
    options = decoding["options"]
    first = next(iter(options.values()))
    metric = " / ".join(o["metric"] for o in options.values())
    return ", ".join([f"metric={metric}"] + [f"{k}={v!r}" for k, v in first.items() if k != "metric"])
