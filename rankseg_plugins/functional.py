"""Functional API: ``rankseg(probs, ...)``; ``decode`` and ``rankseg_thresholds`` serve :class:`RankSEG`."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .assign import assign_image
from .options import Options
from .rma import Decision, rma_decision
from .validation import check_probs, spatial_dims


class ClassMasks(NamedTuple):
    """Per-image, per-class masks ``{p > theta}``: thresholds on the input's device, statistics on the CPU."""

    theta: torch.Tensor  # (B, C) in the compute dtype; inf for pruned classes
    tau: torch.Tensor  # (B, C) int64, size of each mask
    mu: torch.Tensor  # (B, C) float64, total probability of each class


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every narrower float is decided in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _decide(row: torch.Tensor, mu: float, opts: Options, dtype: torch.dtype) -> Decision:
    if opts.solver == "exact":
        from .exact import exact_thresholds

        theta = exact_thresholds(row.reshape(1, -1), opts.metric, opts.smooth).item()
        return Decision(theta, int(torch.count_nonzero(row > theta)))
    return rma_decision(row, mu, opts.metric, opts.smooth, dtype)


def class_masks(probs: torch.Tensor, opts: Options, pmax: torch.Tensor) -> ClassMasks:
    """Solve every (image, class) pair; prune classes with ``max p <= pruning_prob`` in multiclass mode."""
    dtype = compute_dtype(probs.dtype)
    mu = probs.sum(dim=spatial_dims(probs), dtype=dtype).double().cpu()
    pruned = (pmax <= opts.pruning_prob).cpu() if opts.output_mode == "multiclass" else torch.zeros_like(mu, dtype=torch.bool)
    B, C = mu.shape
    theta = torch.full((B, C), torch.inf, dtype=torch.float64)
    tau = torch.zeros((B, C), dtype=torch.int64)
    for b in range(B):
        for c in range(C):
            if pruned[b, c]:
                continue
            theta[b, c], tau[b, c] = _decide(probs[b, c], mu[b, c].item(), opts, dtype)
    return ClassMasks(theta.to(probs.device, dtype), tau, mu)


def decode(probs: torch.Tensor, opts: Options) -> torch.Tensor:
    """Validate ``probs`` and decode them with ``opts``: labels (multiclass) or masks (multilabel)."""
    multiclass = opts.output_mode == "multiclass"
    pmax = check_probs(probs, multiclass)
    expand = (...,) + (None,) * (probs.ndim - 2)
    if opts.metric == "acc":
        if multiclass and probs.shape[1] > 1:
            return probs.argmax(dim=1)
        masks = probs > 0.5
        return masks[:, 0].long() if multiclass else masks
    cm = class_masks(probs, opts, pmax)
    if not multiclass:
        return probs > cm.theta[expand]
    if probs.shape[1] == 1:
        return (probs > cm.theta[expand])[:, 0].long()
    labels = torch.empty((probs.shape[0], *probs.shape[2:]), dtype=torch.int64, device=probs.device)
    for b in range(probs.shape[0]):
        assign_image(probs[b], cm.theta[b], cm.tau[b], cm.mu[b], opts, out=labels[b])
    return labels


def rankseg(
    probs: torch.Tensor,
    metric: str = "dice",
    output_mode: str = "multiclass",
    solver: str = "rma",
    smooth: float = 0.0,
    pruning_prob: float = 0.5,
    unassigned: str = "max_score",
    void_index: int = 255,
) -> torch.Tensor:
    """Dice/IoU-optimal segmentation of ``probs`` ``(B, C, *spatial)``; see :class:`~rankseg_plugins.RankSEG`."""
    opts = Options.create(metric, output_mode, solver, smooth, pruning_prob, unassigned, void_index)
    with torch.no_grad():
        return decode(probs, opts)


def rankseg_thresholds(probs: torch.Tensor, opts: Options) -> torch.Tensor:
    """``(B, C)`` float64 thresholds ``theta`` such that class ``c``'s mask in image ``b`` is ``probs > theta``."""
    with torch.no_grad():
        pmax = check_probs(probs, opts.output_mode == "multiclass")
        if opts.metric == "acc":
            if opts.output_mode == "multiclass" and probs.shape[1] > 1:
                raise ValueError("metric='acc' in multiclass mode is argmax, which has no per-class threshold.")
            return torch.full(probs.shape[:2], 0.5, dtype=torch.float64, device=probs.device)
        return class_masks(probs, opts, pmax).theta.double()
