"""Functional API: ``rankseg(probs, **options)``; :func:`decode` and :func:`thresholds` serve :class:`RankSEG`.

A decode is: one validating pass of statistics (:mod:`~rankseg_plugins.validation`), one decision per (image,
class) pair (the solver's mask or the empty mask, :func:`decide`), then masks (multilabel), a label map
(multiclass, :mod:`~rankseg_plugins.assign`) or painted regions (:mod:`~rankseg_plugins.regions`).
"""

from __future__ import annotations

from typing import Any

import torch

from . import presence, rma, threads
from .assign import assign
from .exact import exact_thresholds
from .options import Options
from .regions import RegionLayout, paint, region_layout, region_probs
from .validation import Stats, check_tensor, probability_stats


def decide(probs: torch.Tensor, stats: Stats, opts: Options) -> torch.Tensor:
    """``(B, C)`` thresholds in the compute dtype: pair ``(b, c)``'s mask is ``probs[b, c] > theta[b, c]``; ``inf``
    marks an empty decision (presence rule, ``pruning_prob``, or an empty optimum)."""
    dtype = rma.compute_dtype(probs.dtype)
    if opts.solver == "exact":
        B, C = stats.mu.shape
        theta = exact_thresholds(probs.reshape(B * C, -1), opts.metric, opts.smooth, allow_empty=not opts.ignore_empty)
        theta = theta.view(B, C).to(dtype)
        empty = theta.double() >= stats.pmax
    else:
        cand = rma.solve(probs, stats, opts.metric, opts.smooth)
        theta = cand.theta
        if opts.ignore_empty or opts.pruning_prob is not None:
            empty = cand.tau == 0
        else:
            empty = presence.empty_wins(probs, stats, cand, opts.metric, opts.smooth)
    if opts.pruning_prob is not None:
        empty = empty | (stats.pmax <= opts.pruning_prob)
    return theta.masked_fill(empty, torch.inf)


def _lift(theta: torch.Tensor, ndim: int) -> torch.Tensor:
    return theta.view(*theta.shape, *(1,) * (ndim - 2))


def decode(probs: torch.Tensor, opts: Options) -> torch.Tensor:
    """Labels ``(B, *spatial)`` int64 (multiclass, regions) or masks ``(B, C, *spatial)`` bool (multilabel)."""
    with torch.no_grad(), threads.decoding():
        return _decode(probs, opts)


def _decode(probs: torch.Tensor, opts: Options) -> torch.Tensor:
    if opts.regions is not None:
        return _decode_regions(probs, opts)
    multiclass = opts.output_mode == "multiclass"
    stats = probability_stats(probs, multiclass)
    if opts.metric == "acc":
        if multiclass and probs.shape[1] > 1:
            return probs.argmax(dim=1)
        masks = probs > 0.5
        return masks[:, 0].long() if multiclass else masks
    theta = decide(probs, stats, opts)
    if not multiclass:
        return probs > _lift(theta, probs.ndim)
    if probs.shape[1] == 1:
        return (probs > _lift(theta, probs.ndim))[:, 0].long()
    return assign(probs, theta, stats, opts)


def _decode_regions(probs: torch.Tensor, opts: Options) -> torch.Tensor:
    layout, q, stats = _regions(probs, opts)
    if opts.metric == "acc":
        theta = torch.full_like(stats.mu, 0.5, dtype=rma.compute_dtype(q.dtype))
    else:
        theta = decide(q, stats, opts)
    return paint(q, theta, layout, probs if opts.output_mode == "multiclass" else None)


def _regions(probs: torch.Tensor, opts: Options) -> tuple[RegionLayout, torch.Tensor, Stats]:
    """Checked layout, region probabilities ``(B, R, *spatial)`` and their statistics (input validated first)."""
    softmax = opts.output_mode == "multiclass"
    layout = region_layout(opts.regions, check_tensor(probs).shape[1], softmax)
    if not softmax:
        return layout, probs, probability_stats(probs, multiclass=False)
    probability_stats(probs, multiclass=True)
    q = region_probs(probs, layout, rma.compute_dtype(probs.dtype))
    return layout, q, probability_stats(q, multiclass=False)


def thresholds(probs: torch.Tensor, opts: Options) -> torch.Tensor:
    """``(B, C)`` float64 (``(B, R)`` with regions): pair ``(b, c)``'s mask is ``probs[b, c] > theta[b, c]``
    (region ``r``'s: ``q[b, r] > theta[b, r]``); ``inf`` marks an empty decision. In multiclass mode these are the
    masks before overlaps are resolved."""
    with torch.no_grad(), threads.decoding():
        if opts.regions is not None:
            _, q, stats = _regions(probs, opts)
        else:
            q, stats = probs, probability_stats(probs, opts.output_mode == "multiclass")
        if opts.metric == "acc":
            if opts.output_mode == "multiclass" and probs.shape[1] > 1 and opts.regions is None:
                raise ValueError("metric='acc' in multiclass mode is argmax, which has no per-class threshold.")
            return torch.full(stats.mu.shape, 0.5, dtype=torch.float64, device=probs.device)
        return decide(q, stats, opts).double()


def rankseg(probs: torch.Tensor, **options: Any) -> torch.Tensor:
    """Dice/IoU-optimal segmentation of ``probs`` ``(B, C, *spatial)``; options and output as :class:`~rankseg_plugins.RankSEG`."""
    return decode(probs, Options.create(**options))
