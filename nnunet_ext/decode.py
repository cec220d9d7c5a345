"""One case's probabilities -> the segmentation array nnU-Net would write, by nnU-Net's decoding or by RankSEG.

- ``argmax``: nnU-Net's own ``LabelManager.convert_probabilities_to_segmentation``, the function
  ``nnUNetv2_predict`` and ``nnUNetv2_ensemble`` call: argmax over the labels, or for a region-based dataset
  ``seg[p[i] > 0.5] = regions_class_order[i]`` channel after channel. Its output is nnU-Net's files, voxel for voxel.
- ``rankseg``, label-based dataset: ``RankSEG(output_mode="multiclass", **options)`` on the softmax probabilities,
  one decision per class (or per region of ``regions``, e.g. LiTS's ``[[1, 2], [2]]``, if given).
- ``rankseg``, region-based dataset: ``RankSEG(output_mode="multilabel", **options)`` decides each region channel's
  mask, and nnU-Net's own function paints the masks (a kept voxel is ``> 0.5``), so they land in
  ``regions_class_order`` exactly as nnU-Net paints its thresholded channels. For nested regions that each paint
  the one label no inner region holds (KiTS23: ``[[1, 2, 3], [2, 3], [2]]`` paints 1, 3, 2; BraTS) this equals
  ``RankSEG(regions=..., output_mode="multilabel")``; other ``regions_class_order`` are painted as nnU-Net would.

- ``rankseg`` with a plan (``rankseg-eval --fit-plan``, ``rankseg-nnunet --fit-plan``): the plan's decision per class
  (or region) in one pass, ``RankSEG.from_plan``; a plan for a region-based dataset decides each region channel
  and nnU-Net paints, as above.

Either is then optionally postprocessed with nnU-Net's ``apply_postprocessing`` and ``postprocessing.pkl``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from rankseg_eval.decoding import decision_text
from rankseg_plugins import Plan, RankSEG
from rankseg_plugins.options import Options, check_regions
from rankseg_plugins.regions import region_layout

DECODERS = ("rankseg", "argmax")

#: ``(pp_fns, pp_fn_kwargs)`` as ``postprocessing.pkl`` holds them.
Postprocessing = tuple[list[Any], list[dict[str, Any]]]


class Decoder:
    """``decoder(probs)``: the segmentation ``(*spatial)`` of probabilities ``(C, *spatial)`` (an ``.npz``'s
    ``probabilities``), in the dtype nnU-Net's decoding gives (int64 labels, uint16 for regions).

    ``decoder``: ``"rankseg"`` or ``"argmax"`` (nnU-Net's own); ``postprocessing``: ``(pp_fns, pp_fn_kwargs)`` from
    ``postprocessing.pkl``, applied after decoding; ``options``: RankSEG's (not ``output_mode``, which the dataset
    decides; ``regions`` only for a label-based dataset); ``plan``: a plan (file, dict or :class:`Plan`, which
    carries its own options) fitted on this dataset's probabilities.
    """

    def __init__(self, label_manager: LabelManager, decoder: str = "rankseg",
                 postprocessing: Postprocessing | None = None, plan: str | Path | dict[str, Any] | Plan | None = None,
                 **options: Any) -> None:
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}; got {decoder!r}")
        if decoder == "argmax" and options:
            raise ValueError(f"the argmax decoder is nnU-Net's own and takes no RankSEG options; got {sorted(options)}")
        if "output_mode" in options:
            raise ValueError("output_mode follows the dataset: softmax labels are decoded 'multiclass', sigmoid "
                             "regions 'multilabel'")
        self.label_manager = label_manager
        self.decoder = decoder
        self.postprocessing = postprocessing
        self.rankseg: RankSEG | None = None
        self.plan: Plan | None = None
        if plan is not None:
            if decoder != "rankseg" or options:
                raise ValueError("a plan carries its own RankSEG options and decodes with RankSEG: drop "
                                 + (f"{sorted(options)}" if options else "the argmax decoder"))
            self.plan = plan if isinstance(plan, Plan) else Plan.load(plan)
            self.rankseg = RankSEG.from_plan(_for_dataset(self.plan, label_manager))
        elif decoder == "rankseg":
            region_based = label_manager.has_regions
            if region_based and options.get("regions") is not None:
                raise ValueError("this dataset is region-based: its regions come from dataset.json (one sigmoid "
                                 "channel each), so regions= is only for label-based datasets")
            self.rankseg = RankSEG(output_mode="multilabel" if region_based else "multiclass", **options)
            if self.options.regions is not None:  # check them against the channels now, not in every case
                region_layout(self.options.regions, label_manager.num_segmentation_heads, softmax=True)

    @property
    def options(self) -> Options | None:
        """RankSEG's validated options (``None`` for ``argmax``)."""
        return None if self.rankseg is None else self.rankseg.options

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        lm = self.label_manager
        if self.rankseg is None:
            seg = lm.convert_probabilities_to_segmentation(probs)
        else:
            decided = self.rankseg(torch.from_numpy(probs)[None])[0].numpy()
            # region masks go through nnU-Net's own painting: regions_class_order, later channels on top, uint16
            seg = lm.convert_probabilities_to_segmentation(decided) if lm.has_regions else decided
        if self.postprocessing is not None:
            from nnunetv2.postprocessing.remove_connected_components import apply_postprocessing

            seg = apply_postprocessing(seg, *self.postprocessing)
        return seg

    def describe(self) -> str:
        """One line: what this decoder does."""
        lm = self.label_manager
        if self.rankseg is None:
            text = ("nnU-Net's own decoding: " + (f"p > 0.5 per region channel, painted in regions_class_order "
                    f"{list(lm.regions_class_order)}" if lm.has_regions else "argmax over the labels"))
        elif lm.has_regions:
            text = (f"RankSEG per region channel (sigmoid), painted in regions_class_order "
                    f"{list(lm.regions_class_order)} as nnU-Net paints")
        else:
            by = "by region " + str([list(r) for r in self.options.regions]) if self.options.regions else "by class"
            text = f"RankSEG {by} (softmax)"
        if self.plan is not None:
            decisions = zip(self.plan.targets, self.plan.decisions)
            text = f"plan: {', '.join(f'{t} {decision_text(d.as_dict())}' for t, d in decisions)}; {text}"
        if self.postprocessing is not None:
            text += ", then postprocessing.pkl: " + "; ".join(
                f"{getattr(fn, '__name__', fn)}({', '.join(f'{k}={_plain(v)!r}' for k, v in kw.items())})"
                for fn, kw in zip(*self.postprocessing))
        return text


def _for_dataset(plan: Plan, label_manager: LabelManager) -> Plan:
    """``plan`` as :class:`Decoder` runs it on this dataset, or ``ValueError`` when it was fitted for other outputs:
    a softmax plan for a label-based dataset; for a region-based one, a sigmoid plan for its regions, whose masks
    nnU-Net paints (so the plan's own painting is dropped)."""
    lm = label_manager
    plan.check_input(lm.num_segmentation_heads)
    multilabel = plan.options.output_mode == "multilabel"
    if multilabel != lm.has_regions:
        fitted = "sigmoid region channels" if multilabel else "softmax labels"
        ours = "region-based (sigmoid channels)" if lm.has_regions else "label-based (softmax)"
        raise ValueError(f"the plan was fitted on {fitted}, but this dataset is {ours}: use a plan fitted on this "
                         "model's predictions (rankseg-nnunet --fit-plan)")
    if not lm.has_regions:
        if plan.options.regions is not None:  # check them against the channels now, not in every case
            region_layout(plan.options.regions, lm.num_segmentation_heads, softmax=True)
        return plan
    ours = check_regions([[int(v) for v in np.atleast_1d(r)] for r in lm.foreground_regions])
    if plan.options.regions is not None and plan.options.regions != ours:
        raise ValueError(f"the plan was fitted for regions {[list(r) for r in plan.options.regions]}, but this "
                         f"dataset's are {[list(r) for r in ours]}")
    return dataclasses.replace(plan, options=plan.options.replace(regions=None))


def _plain(value: Any) -> Any:
    """``value`` with NumPy scalars as Python numbers (``postprocessing.pkl`` holds np.int64 labels)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value
