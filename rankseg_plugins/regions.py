"""Nested regions, decoded as the objects that KiTS and LiTS score (MATH.md section 6).

KiTS19: kidney ``{1, 2}`` ⊃ tumour ``{2}``; KiTS23: ``{1, 2, 3}`` ⊃ masses ``{2, 3}`` ⊃ tumour ``{2}``; LiTS: liver
``{1, 2}`` ⊃ tumour ``{2}``. Each region is one binary problem (presence included) on its probability

* softmax input (``output_mode="multiclass"``): ``q_r = sum_{c in r} p_c``, the probability of the region's
  indicator under the model;
* sigmoid input (``output_mode="multilabel"``): one channel per region, as nnU-Net's region-based training gives.

The region masks are painted into one label map, outer regions first and inner ones last, so a region read back
from the map is its own mask plus every mask inside it (nesting by union, as nnU-Net paints). A region paints its
*own* labels, those in no region inside it: one own label as is; several (softmax input) by their argmax; none (the
region is the union of regions inside it) by the argmax over its labels. Labels outside every region are never
painted, so with softmax input every foreground class must belong to some region.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .options import Regions


class RegionLayout(NamedTuple):
    """Checked regions, their paint order (outer first) and the labels each one paints."""

    regions: Regions
    order: tuple[int, ...]
    own: tuple[tuple[int, ...], ...]


def region_layout(regions: Regions, channels: int, softmax: bool) -> RegionLayout:
    """Check ``regions`` (already normalised by :func:`~rankseg_plugins.options.check_regions`) against the input's
    channel count and work out the paint order and painted labels."""
    own = []  # labels of each region that no region inside it holds
    for r in regions:
        covered = set().union(*(q for q in regions if set(q) < set(r)))
        own.append(tuple(label for label in r if label not in covered))
    if softmax:
        top = max(max(r) for r in regions)
        if top >= channels:
            raise ValueError(
                f"regions name label {top}, but the softmax input has only {channels} channels (labels 0..{channels - 1})."
            )
        missing = sorted(set(range(1, channels)) - set().union(*regions))
        if missing:
            raise ValueError(
                f"foreground label(s) {missing} belong to no region, so they would never be painted: add them, "
                f"e.g. regions={[list(r) for r in regions] + [[label] for label in missing]}."
            )
    else:
        if channels != len(regions):
            raise ValueError(
                f"output_mode='multilabel' with regions takes one sigmoid channel per region: {len(regions)} "
                f"regions but {channels} channels."
            )
        several = [list(r) for r, o in zip(regions, own) if len(o) != 1]
        if several:
            raise ValueError(
                f"with one sigmoid channel per region, each region must hold exactly one label that no inner region "
                f"holds (the label it paints); {several} do not. KiTS23: [[1, 2, 3], [2, 3], [2]] paints 1, 3, 2."
            )
    depth = [sum(set(r) < set(q) for q in regions) for r in regions]
    order = tuple(sorted(range(len(regions)), key=lambda j: depth[j]))
    return RegionLayout(regions, order, tuple(o or r for o, r in zip(own, regions)))


def region_probs(probs: torch.Tensor, layout: RegionLayout, dtype: torch.dtype) -> torch.Tensor:
    """``(B, R, *spatial)`` region probabilities ``q_r = sum_{c in r} p_c`` in ``dtype``, clipped to [0, 1]."""
    q = torch.empty((probs.shape[0], len(layout.regions), *probs.shape[2:]), dtype=dtype, device=probs.device)
    for j, region in enumerate(layout.regions):
        q[:, j].copy_(probs[:, region[0]])
        for label in region[1:]:
            q[:, j].add_(probs[:, label])
    return q.clamp_(0.0, 1.0)


def paint(
    q: torch.Tensor,
    theta: torch.Tensor,
    layout: RegionLayout,
    probs: torch.Tensor | None,
    argmax_regions: list[int] | None = None,
) -> torch.Tensor:
    """Label map ``(B, *spatial)`` int64: region ``r``'s mask ``q[:, r] > theta[:, r]`` painted in ``layout.order``.

    ``probs`` (softmax input) picks among several own labels by argmax; ``None`` for sigmoid input. The regions in
    ``argmax_regions`` (a plan's ``argmax`` decisions, softmax input) take the pixels whose argmax class they hold.
    """
    out = torch.zeros((q.shape[0], *q.shape[2:]), dtype=torch.int64, device=q.device)
    lift = (1,) * (q.ndim - 2)
    argmax = None if not argmax_regions else probs.max(1).indices
    for j in layout.order:
        if argmax is not None and j in argmax_regions:
            mask = torch.isin(argmax, torch.tensor(layout.regions[j], device=q.device))
        else:
            mask = q[:, j] > theta[:, j].view(-1, *lift)
        own = layout.own[j]
        if len(own) == 1:
            out.masked_fill_(mask, own[0])
        else:
            assert probs is not None
            labels = torch.tensor(own, device=q.device)[probs[:, list(own)].argmax(1)]
            torch.where(mask, labels, out, out=out)
    return out
