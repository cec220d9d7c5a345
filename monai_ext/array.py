"""
RankSEG post-transforms for channel-first model outputs, in the style of :py:mod:`monai.transforms.post.array`.

Each transform works on one sample ``(C, *spatial)`` after ``decollate_batch`` (numpy, Tensor or MetaTensor, any
device) and returns the same type on the same device, with meta data and affine kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.config.type_definitions import DtypeLike, NdarrayOrTensor
from monai.data.meta_obj import get_track_meta
from monai.data.meta_tensor import MetaTensor
from monai.transforms.transform import Transform
from monai.utils import TransformBackends, convert_data_type, convert_to_tensor
from monai.utils.type_conversion import convert_to_dst_type

import rankseg_plugins

__all__ = ["RankSEG", "RankSEGNested", "RegionsToLabel", "LabelToRegions"]


def _to_sample_tensor(img: NdarrayOrTensor, name: str) -> tuple[NdarrayOrTensor, torch.Tensor]:
    """Return ``(img as MONAI would track it, plain tensor)`` after checking ``img`` is one channel-first sample."""
    if isinstance(img, MetaTensor) and img.is_batch:
        raise ValueError(
            f"{name} is a per-sample post-transform but got a batched MetaTensor of shape {tuple(img.shape)}; "
            "apply monai.data.decollate_batch first (SupervisedEvaluator does so by default)."
        )
    img = convert_to_tensor(img, track_meta=get_track_meta())
    img_t, *_ = convert_data_type(img, torch.Tensor)
    if img_t.ndim < 2:
        raise ValueError(f"{name} expects a channel-first (C, *spatial) sample, got shape {tuple(img_t.shape)}.")
    return img, img_t


def _check_channels(img: torch.Tensor, channels: int, name: str) -> None:
    """Raise unless the sample has ``channels`` channels."""
    if img.shape[0] != channels:
        raise ValueError(f"{name} expects {channels} channel(s) first, got shape {tuple(img.shape)}.")


def _check_onehot(to_onehot: int | None) -> int | None:
    """Return ``to_onehot`` if it is a number of classes or None, like ``AsDiscrete``'s check."""
    if to_onehot is not None and (isinstance(to_onehot, bool) or not isinstance(to_onehot, int)):
        raise ValueError(f"to_onehot must be the number of classes (an int) or None, got {to_onehot!r}.")
    return to_onehot


def _nested_regions(regions: Sequence[Sequence[int]]) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """Check ``regions`` is a chain of label sets, outermost first; return it and the label painted per region.

    Each region must strictly contain the next one and hold exactly one label more (the label of that ring of the
    label map); the innermost region holds exactly one label. Background 0 is in no region.
    """
    chain = tuple(tuple(int(label) for label in region) for region in regions)
    if not chain or any(not region or min(region) < 1 for region in chain):
        raise ValueError(
            "regions must be non-empty sets of foreground labels (>= 1), outermost first, "
            f"e.g. ((1, 2, 3), (2, 3), (2,)) for KiTS23; got {chain}."
        )
    rings = []
    for outer, inner in zip(chain, (*chain[1:], ())):
        ring = set(outer) - set(inner)
        if not set(inner) < set(outer) or len(ring) != 1:
            raise ValueError(
                "regions must be nested, outermost first, each holding exactly one label more than the next "
                f"(e.g. ((1, 2, 3), (2, 3), (2,))); got {chain}."
            )
        rings.append(ring.pop())
    return chain, tuple(rings)


class RankSEG(Transform):
    """
    Turn class probabilities into the Dice/IoU-optimal segmentation with RankSEG: the drop-in replacement of
    ``AsDiscrete(argmax=True)`` (multiclass) or ``AsDiscrete(threshold=0.5)`` (multilabel).

    The input is one sample ``(C, *spatial)`` of probabilities in [0, 1]: put ``Activations(softmax=True)``
    (multiclass) or ``Activations(sigmoid=True)`` (multilabel) before it, and ``Invert(d)`` (with
    ``nearest_interp=False``) before it too, so that the optimal mask is chosen in the space where it is scored.
    ``C == 1`` is a binary foreground probability.

    Args:
        to_onehot: for label-map output (multiclass, or ``regions``); if not None, return one-hot
            ``(to_onehot, *spatial)`` masks that feed ``DiceMetric`` directly (``void_index`` voxels are zero in
            every channel).
        dtype: output data type, default float32 like ``AsDiscrete``.
        options: the RankSEG options of :class:`rankseg_plugins.RankSEG` (``metric``, ``output_mode``, ``solver``,
            ``smooth``, ``pruning_prob``, ``ignore_empty``, ``regions``, ``unassigned``, ``void_index``), declared in
            :mod:`rankseg_plugins.options` with their defaults, or ``plan=`` a plan file fitted by
            ``rankseg-eval --fit-plan`` (one decision per class or region). Multiclass output (and ``regions``) is
            one label map ``(1, *spatial)`` like ``AsDiscrete(argmax=True)``; multilabel output one mask per
            channel.

    Example:

        >>> import torch
        >>> from monai.transforms import AsDiscrete
        >>> from monai_ext import RankSEG
        >>> probs = torch.tensor([[[0.9, 0.4, 0.4, 0.4]]])  # one sample (C=1, H=1, W=4): a foreground probability
        >>> AsDiscrete(threshold=0.5)(probs).tolist()      # best expected pixel accuracy
        [[[1.0, 0.0, 0.0, 0.0]]]
        >>> RankSEG()(probs).tolist()                      # best expected Dice
        [[[1.0, 1.0, 1.0, 1.0]]]

    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self, to_onehot: int | None = None, dtype: DtypeLike | torch.dtype = torch.float32, **options: Any
    ) -> None:
        self.decoder = rankseg_plugins.RankSEG(**options)  # options are checked here, not at the first sample
        self.to_onehot = _check_onehot(to_onehot)
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor, to_onehot: int | None = None, **options: Any) -> NdarrayOrTensor:
        """
        Args:
            img: probabilities of one sample, ``(C, *spatial)``.
            to_onehot, options: if given, override the values given at construction for this call.
        """
        img, img_t = _to_sample_tensor(img, type(self).__name__)
        decoder = self.decoder
        if options:
            if decoder.plan is not None:
                raise ValueError("this transform decodes with a plan, which carries its options: no per-call options")
            decoder = rankseg_plugins.RankSEG(**decoder.options.replace(**options).as_dict())
        out = decoder(img_t.unsqueeze(0))[0]
        to_onehot = self.to_onehot if to_onehot is None else _check_onehot(to_onehot)
        opts = decoder.options
        if opts.output_mode == "multilabel" and opts.regions is None:  # one mask per channel already
            if to_onehot is not None:
                raise ValueError("to_onehot applies to label-map output only; multilabel output is already one-hot.")
        elif to_onehot is None:
            out = out.unsqueeze(0)
        else:
            if opts.regions is not None:
                num_classes = 1 + max(max(region) for region in opts.regions)
            else:
                num_classes = max(img_t.shape[0], 2)  # C == 1 is binary: labels 0 and 1
            if to_onehot < num_classes:
                raise ValueError(f"to_onehot={to_onehot} is smaller than the {num_classes} classes of the output.")
            classes = torch.arange(to_onehot, device=out.device).view(-1, *([1] * out.ndim))
            out = out.unsqueeze(0) == classes
        out, *_ = convert_to_dst_type(out, img, dtype=self.dtype)
        return out


class RankSEGNested(Transform):
    """
    Decode nested region probabilities (one sigmoid channel per region) into one label map ``(1, *spatial)``: the
    KiTS23 region-based network (kidney+tumour+cyst, tumour+cyst, tumour). The same as
    ``RankSEG(regions=regions, output_mode="multilabel")``: each region is decoded on its own, presence included,
    and painted outer first, inner last.

    Regions decoded independently need not be nested; nesting is enforced by **union** (outer |= inner):
    RankSEG keeps a voxel when its probability exceeds the region's adaptive threshold, which (for Dice) is half
    the region's optimal expected Dice, so the small, uncertain inner regions (tumour) get lower thresholds than the
    large, confident outer ones (kidney). A conflict is a voxel the inner region kept while the outer region left
    it just under its threshold. Union adds it to the large outer region, where one voxel moves the Dice least;
    intersection would remove it from the small inner region, where it moves the Dice most, and the inner regions
    are the hard, decisive ones. Union is also what nnU-Net's painting does, so the thresholded baseline decoded
    with :py:class:`RegionsToLabel` is comparable.

    Args:
        regions: label sets of the regions, outermost first; see :py:class:`RegionsToLabel`.
        dtype: output data type, default float32 like ``AsDiscrete``.
        options: other RankSEG options (``metric``, ``solver``, ``smooth``, ``ignore_empty``, ...), applied to
            every region.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self, regions: Sequence[Sequence[int]], dtype: DtypeLike | torch.dtype = torch.float32, **options: Any
    ) -> None:
        _nested_regions(regions)
        self.decoder = RankSEG(regions=regions, output_mode="multilabel", dtype=dtype, **options)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """
        Args:
            img: region probabilities ``(len(regions), *spatial)`` in [0, 1] (after ``Activations(sigmoid=True)``).
        """
        return self.decoder(img)


class RegionsToLabel(Transform):
    """
    Paint binary masks of nested regions into one label map ``(1, *spatial)``: outermost region first, each inner
    region overwriting the outer ones, as nnU-Net does for region-based training (KiTS, BraTS).

    Nesting is enforced by union: a voxel of an inner region keeps its label even where an outer mask missed it,
    so each region read back from the label map is the union of its own mask and all inner masks.
    :py:class:`RankSEGNested` explains why union rather than intersection.

    Args:
        regions: label sets of the regions, outermost first, each holding exactly one label more than the next.
            KiTS23: ``((1, 2, 3), (2, 3), (2,))`` (kidney+tumour+cyst, masses, tumour), painting 1, 3 then 2.
        dtype: output data type, default float32 like ``AsDiscrete``.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, regions: Sequence[Sequence[int]], dtype: DtypeLike | torch.dtype = torch.float32) -> None:
        self.regions, self.rings = _nested_regions(regions)
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """
        Args:
            img: binary masks ``(len(regions), *spatial)``, e.g. ``AsDiscrete(threshold=0.5)`` of sigmoid outputs.
        """
        img, img_t = _to_sample_tensor(img, type(self).__name__)
        _check_channels(img_t, len(self.regions), type(self).__name__)
        if img_t.dtype != torch.bool and not ((img_t == 0) | (img_t == 1)).all():
            raise ValueError("RegionsToLabel expects binary masks: threshold the probabilities or use RankSEGNested.")
        label = torch.zeros_like(img_t[:1], dtype=torch.int64)
        for ring, mask in zip(self.rings, img_t.bool()):
            label[0][mask] = ring
        out, *_ = convert_to_dst_type(label, img, dtype=self.dtype)
        return out


class LabelToRegions(Transform):
    """
    Split a label map ``(1, *spatial)`` into one binary mask per region ``(len(regions), *spatial)``: the
    inverse of :py:class:`RegionsToLabel`, used to score nested regions (KiTS23 "HEC") with ``DiceMetric``.

    Args:
        regions: label sets of the regions, outermost first, as in :py:class:`RegionsToLabel`.
        dtype: output data type, default float32 like ``AsDiscrete``.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, regions: Sequence[Sequence[int]], dtype: DtypeLike | torch.dtype = torch.float32) -> None:
        self.regions, _ = _nested_regions(regions)
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """
        Args:
            img: label map ``(1, *spatial)``.
        """
        img, img_t = _to_sample_tensor(img, type(self).__name__)
        _check_channels(img_t, 1, type(self).__name__)
        label = img_t.long()
        masks = [torch.isin(label, torch.tensor(region, device=label.device)) for region in self.regions]
        out, *_ = convert_to_dst_type(torch.cat(masks), img, dtype=self.dtype)
        return out
