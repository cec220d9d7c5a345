"""``--labels DIR``: rankseg-eval's paired report (nnU-Net's decoding vs RankSEG) on the decoded cases.

The scores, statistics, figure and report files are :mod:`rankseg_eval`'s. This module only says how to decode an
nnU-Net case for them (:class:`ReportDecoders`: nnU-Net's own decoding as the baseline, RankSEG painted as nnU-Net
paints, both postprocessed like the written files) and adds the means in nnU-Net's own convention, the numbers
``nnUNetv2_evaluate_folder`` puts in ``summary.json``.

Empty cases. rankseg-eval scores, per case and region, Dice and IoU with ``0/0 := 1``: empty truth and empty
prediction score 1 (RankSEG's ``ignore_empty=False``); with ``--ignore-empty`` a region whose truth is empty is not
scored in that case. nnU-Net's summary scores empty truth and empty prediction as ``NaN``, left out of the mean,
and an empty truth with a non-empty prediction as 0 (so does rankseg-eval). Both are in the report.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn, region_or_label_to_mask

from rankseg_eval import CaseData, Decoders
from rankseg_eval.decoding import METRICS, PAIRED
from rankseg_eval.layouts import Layout, ScoredRegions
from rankseg_plugins import Plan

from .decode import Decoder, Postprocessing
from .folders import Dataset

#: nnU-Net's names of the two metrics in summary.json.
NNUNET_METRICS = ("Dice", "IoU")
NNUNET_CONVENTION = (
    "nnUNetv2_evaluate_folder's summary.json: per case Dice = 2TP / (2TP + FP + FN), IoU = TP / (TP + FP + FN), "
    "NaN when the truth and the prediction are both empty (left out of the mean: n counts the cases kept); 'mean' "
    "per label or region, 'foreground_mean' the mean of those"
)


def layout(dataset: Dataset, regions: list[list[int]] | None = None) -> Layout:
    """Label names and scored regions from ``dataset.json``: one region per foreground label, the dataset's own
    regions (in channel order), or ``regions`` given for a label-based dataset (named after their labels)."""
    lm = dataset.label_manager
    if lm.has_regions:
        names = dataset.channel_names
        scored = {n: tuple(int(v) for v in np.atleast_1d(r)) for n, r in zip(names, lm.foreground_regions)}
        return Layout("nnunet", dict(zip((int(c) for c in lm.regions_class_order), names)), scored)
    labels = dict(zip((int(v) for v in lm.all_labels), dataset.channel_names))
    labels.pop(0, None)
    if regions is None:
        return Layout("nnunet", labels, {name: (value,) for value, name in labels.items()})
    return Layout("nnunet", labels, {"+".join(labels.get(v, str(v)) for v in r): tuple(r) for r in regions})


class _OnTensors:
    """A :class:`~nnunet_ext.decode.Decoder` called as rankseg-eval calls RankSEG: ``(1, C, *spatial)`` tensor in,
    ``(1, *spatial)`` int64 labels out."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder, self.options = decoder, decoder.options

    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.decoder(probs[0].numpy()).astype(np.int64))[None]


class ReportDecoders(Decoders):
    """rankseg-eval's decoders for nnU-Net predictions: the baseline is nnU-Net's own decoding, and RankSEG (Dice
    and IoU objectives) decodes as :class:`~nnunet_ext.decode.Decoder` does; every label map is postprocessed like
    the written files, so the report scores what ``nnUNetv2_evaluate_folder`` would see.

    ``scored``: the regions scored (:func:`layout`); ``regions``: RankSEG's regions for a label-based dataset
    (``None``: by class); ``options``: the other RankSEG options; ``plan``: a plan instead (the one decoder compared
    with the baseline, as ``rankseg-eval --plan``). ``labels`` holds the label maps of the last call;
    :meth:`for_case` gives each case (thread) its own copy.
    """

    def __init__(self, dataset: Dataset, scored: ScoredRegions, postprocessing: Postprocessing | None = None,
                 regions: list[list[int]] | None = None, plan: Plan | None = None, **options: Any) -> None:
        super().__init__(**options)  # checks the options left to the user, as rankseg-eval does
        lm = dataset.label_manager
        self.regions = scored
        self.activation = "sigmoid" if lm.has_regions else "softmax"
        self.baseline = "threshold" if lm.has_regions else "argmax"
        self.nnunet = Decoder(lm, "argmax", postprocessing)
        if plan is not None:
            self.plan, self.label = plan, "plan"
            self.rankseg = {"plan": _OnTensors(Decoder(lm, "rankseg", postprocessing, plan=plan))}
            self.paired = {m: "plan" for m in METRICS}
        else:
            self.rankseg = {PAIRED[m]: _OnTensors(Decoder(lm, "rankseg", postprocessing, metric=m, regions=regions,
                                                          **options)) for m in METRICS}
        self.labels: dict[str, torch.Tensor] | None = None

    def baseline_labels(self, probs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.nnunet(probs.numpy()).astype(np.int64))

    def __call__(self, probs: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        labels, seconds = super().__call__(probs)
        self.labels = labels
        return labels, seconds

    def for_case(self) -> ReportDecoders:
        """A copy sharing the decoders, with its own :attr:`labels`."""
        return copy.copy(self)

    def describe(self) -> dict[str, Any]:
        described = super().describe()
        described["baseline"] = self.nnunet.describe()
        described["rankseg"] = self.rankseg[self.paired["dice"]].decoder.describe()
        return described


def case_data(probs: np.ndarray, dataset: Dataset, label_file: Path, properties: dict[str, Any]) -> CaseData:
    """rankseg-eval's case: the probabilities, the label map read with nnU-Net's reader (same voxel order), no
    image, and the RAS affine of the grid (for the figure's orientation) when the properties give one."""
    seg, _ = dataset.reader_writer().read_seg(str(label_file))
    return CaseData(torch.from_numpy(probs), seg[0].astype(np.int64), None, affine(properties))


def affine(properties: dict[str, Any]) -> np.ndarray | None:
    """The 4 x 4 voxel-to-RAS affine of nnU-Net's ``(z, y, x)`` arrays, from SimpleITKIO's or NibabelIO's
    properties; ``None`` when they describe no 3D grid."""
    try:
        if "sitk_stuff" in properties:
            sitk = properties["sitk_stuff"]
            if len(sitk["spacing"]) != 3:
                return None
            lps = np.asarray(sitk["direction"], np.float64).reshape(3, 3) * np.asarray(sitk["spacing"], np.float64)
            matrix = np.eye(4)
            matrix[:3, :3] = (lps * [[-1], [-1], [1]])[:, ::-1]  # LPS -> RAS; columns x, y, z -> array axes z, y, x
            matrix[:3, 3] = np.asarray(sitk["origin"], np.float64) * [-1, -1, 1]
            return matrix
        nib = properties["nibabel_stuff"]
        matrix = np.array(nib.get("reoriented_affine", nib["original_affine"]), np.float64)
        matrix[:, :3] = matrix[:, [2, 1, 0]]  # NibabelIO transposes nibabel's (x, y, z) array to (z, y, x)
        return matrix
    except (KeyError, TypeError, ValueError):
        return None


def nnunet_scores(labels: dict[str, torch.Tensor], truth: np.ndarray, keys: list[Any]) -> dict[str, Any]:
    """Per method and nnU-Net label/region (``foreground_labels`` or ``foreground_regions``): Dice and IoU as
    nnU-Net's ``compute_metrics`` gives them, with its own mask and count functions (``NaN`` for empty/empty)."""
    scores: dict[str, Any] = {}
    for method, pred in labels.items():
        scores[method] = {}
        for key in keys:
            tp, fp, fn, _ = compute_tp_fp_fn_tn(region_or_label_to_mask(truth, key),
                                                region_or_label_to_mask(pred.numpy(), key))
            scores[method][_key(key)] = ({"Dice": math.nan, "IoU": math.nan} if tp + fp + fn == 0 else
                                         {"Dice": 2 * tp / (2 * tp + fp + fn), "IoU": tp / (tp + fp + fn)})
    return scores


def _key(key: Any) -> str:
    """summary.json's key of a label (``"2"``) or region (``"(1, 2, 3)"``)."""
    return str(tuple(int(k) for k in key)) if isinstance(key, tuple) else str(int(key))


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def nnunet_summary(per_case: list[dict[str, Any]], dataset: Dataset, methods: list[str]) -> dict[str, Any]:
    """Means over cases in nnU-Net's convention (``NaN`` cases left out; ``None`` where no case is left), per
    method, as summary.json's ``mean`` and ``foreground_mean``."""
    lm = dataset.label_manager
    keys = [_key(k) for k in (lm.foreground_regions if lm.has_regions else lm.foreground_labels)]
    names = dict(zip(keys, dataset.channel_names if lm.has_regions else dataset.channel_names[1:]))
    summary: dict[str, Any] = {"convention": NNUNET_CONVENTION, "names": names, "mean": {}, "foreground_mean": {}}
    for method in methods:
        means = {}
        for key in keys:
            values = {m: np.array([c[method][key][m] for c in per_case], np.float64) for m in NNUNET_METRICS}
            means[key] = {m: _finite(np.nanmean(v)) if (~np.isnan(v)).any() else None for m, v in values.items()}
            means[key]["n"] = int((~np.isnan(values["Dice"])).sum())
        summary["mean"][method] = means
        summary["foreground_mean"][method] = {  # like nnU-Net, None (NaN) if any label's mean is
            m: None if any(v[m] is None for v in means.values()) else float(np.mean([v[m] for v in means.values()]))
            for m in NNUNET_METRICS
        }
    return summary


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The nnU-Net-convention means as Markdown table rows (with header)."""
    rows = ["| label / region | method | Dice | IoU | n |", "|---|---|---|---|---|"]
    show = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    for method, means in summary["mean"].items():
        for key, m in means.items():
            rows.append(f"| {summary['names'].get(key, key)} {key} | {method} | {show(m['Dice'])} | {show(m['IoU'])} "
                        f"| {m['n']} |")
    for method, m in summary["foreground_mean"].items():
        rows.append(f"| foreground mean | {method} | {show(m['Dice'])} | {show(m['IoU'])} | |")
    return rows


def markdown_section(summary: dict[str, Any]) -> str:
    """The report.md section with the means in nnU-Net's convention."""
    return "\n".join([
        "", "## In nnU-Net's convention (comparable with summary.json)", "",
        f"Means as {summary['convention']}. The tables above score an empty truth with an empty prediction as "
        "stated under Averaging; an empty truth with a non-empty prediction scores 0 in both.", "",
        *summary_lines(summary),
    ]) + "\n"
