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
from .plan import Decision, Plan
from .regions import RegionLayout, paint, region_layout, region_probs
from .validation import Stats, check_tensor, probability_stats


def decide(probs: torch.Tensor, stats: Stats, opts: Options) -> torch.Tensor:
    """``(B, C)`` thresholds in the compute dtype: pair ``(b, c)``'s mask is ``probs[b, c] > theta[b, c]``; ``inf``
    marks an empty decision (presence rule, ``pruning_prob``, or an empty optimum)."""
    theta, empty, bare = _solve(probs, stats, opts, presence_rule=opts.pruning_prob is None)
    if opts.pruning_prob is not None:
        empty = bare | (stats.pmax <= opts.pruning_prob)
    return theta.masked_fill(empty, torch.inf)


def _solve(
    probs: torch.Tensor, stats: Stats, opts: Options, presence_rule: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The solver's thresholds, where its decision is empty (under the presence rule when ``presence_rule`` and not
    ``ignore_empty``), and where the solver's optimum itself is empty."""
    if opts.solver == "exact":
        B, C = stats.mu.shape
        theta = exact_thresholds(probs.reshape(B * C, -1), opts.metric, opts.smooth, allow_empty=not opts.ignore_empty)
        theta = theta.view(B, C).to(rma.compute_dtype(probs.dtype))
        empty = theta.double() >= stats.pmax
        return theta, empty, empty
    cand = rma.solve(probs, stats, opts.metric, opts.smooth)
    bare = cand.tau == 0
    if opts.ignore_empty or not presence_rule:
        return cand.theta, bare, bare
    return cand.theta, presence.empty_wins(probs, stats, cand, opts.metric, opts.smooth), bare


def decide_plan(probs: torch.Tensor, stats: Stats, plan: Plan, softmax_classes: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Thresholds ``(B, C)`` as :func:`decide` gives, one decision per class (or region) of ``plan``, and which
    classes take their argmax mask (``(C,)`` bool: softmax classes with an ``argmax`` decision, whose threshold is
    ``inf``; elsewhere ``argmax`` is the threshold 1/2)."""
    decisions = plan.decisions
    dtype = rma.compute_dtype(probs.dtype)
    device = probs.device
    kind = lambda name: torch.tensor([d.decoder == name for d in decisions], device=device)  # noqa: E731
    argmax = kind("argmax") & softmax_classes
    fixed = torch.tensor([d.threshold if d.decoder == "threshold" else 0.5 for d in decisions], dtype=dtype, device=device)
    theta = torch.where(kind("threshold") | (kind("argmax") & ~argmax), fixed, torch.inf).expand(stats.mu.shape).clone()
    plain = [c for c, d in enumerate(decisions) if d.decoder == "rankseg" and not d.calibrated]
    if plain:
        limits = [decisions[c].pruning_prob for c in plain]
        solved, empty, bare = _solve(probs, stats, plan.options, presence_rule=any(x is None for x in limits))
        if any(limit is not None for limit in limits):  # the reference's heuristic instead, for these classes
            limit = torch.tensor([-1.0 if x is None else x for x in limits], dtype=torch.float64, device=device)
            heuristic = bare[:, plain] | (stats.pmax[:, plain] <= limit)
            empty[:, plain] = torch.where(limit >= 0, heuristic, empty[:, plain])
        theta[:, plain] = solved.masked_fill(empty, torch.inf)[:, plain]
    for c, d in enumerate(decisions):
        if d.decoder == "rankseg" and d.calibrated:
            theta[:, c] = _calibrated_thresholds(probs[:, c : c + 1], d, plan.options)[:, 0].to(dtype)
    return theta, argmax


def _calibrated_thresholds(p: torch.Tensor, d: Decision, opts: Options) -> torch.Tensor:
    """RankSEG's thresholds on ``p' = sigmoid(logit(p) / T + b)`` mapped back to ``p`` (the map is increasing)."""
    eps = torch.finfo(torch.float32).tiny
    q = torch.sigmoid(torch.logit(p.double().clamp(eps, 1 - 1e-7)) / d.temperature + d.bias).to(p.dtype)
    single = opts.replace(output_mode="multilabel", regions=None, pruning_prob=d.pruning_prob)
    theta_q = decide(q, probability_stats(q, multiclass=False), single).double()
    back = torch.sigmoid((torch.logit(theta_q.clamp(0.0, 1.0)) - d.bias) * d.temperature)
    return torch.where(torch.isfinite(theta_q), back, theta_q)


def _lift(theta: torch.Tensor, ndim: int) -> torch.Tensor:
    return theta.view(*theta.shape, *(1,) * (ndim - 2))


def decode(probs: torch.Tensor, opts: Options, plan: Plan | None = None) -> torch.Tensor:
    """Labels ``(B, *spatial)`` int64 (multiclass, regions) or masks ``(B, C, *spatial)`` bool (multilabel); with a
    ``plan``, its decision per class (``opts`` are then the plan's)."""
    with torch.no_grad():
        check_tensor(probs)
        if plan is not None:
            plan.check_input(probs.shape[1])
        masks = opts.output_mode == "multilabel" and opts.regions is None
        shape = probs.shape if masks else probs.shape[:1] + probs.shape[2:]

        def result() -> torch.Tensor:
            return torch.empty(shape, dtype=torch.bool if masks else torch.int64, device=probs.device)

        batched = threads.per_image(lambda b, out: _decode(probs[b], opts, plan, out), probs, result)
        if batched is not None:
            return batched
        with threads.decoding(probs.device):
            return _decode(probs, opts, plan)


def _decode(probs: torch.Tensor, opts: Options, plan: Plan | None, out: torch.Tensor | None = None) -> torch.Tensor:
    """The decode of ``probs``, written into ``out`` when given (a batch's output slice, so that a batch shared out
    image by image is never concatenated)."""
    if opts.regions is not None:
        return _into(out, _decode_regions(probs, opts, plan))
    multiclass = opts.output_mode == "multiclass"
    stats = probability_stats(probs, multiclass)
    if opts.metric == "acc":
        if multiclass and probs.shape[1] > 1:
            return _into(out, probs.argmax(dim=1))
        masks = probs > 0.5
        return _into(out, masks[:, 0].long() if multiclass else masks)
    argmax = None
    if plan is None:
        theta = decide(probs, stats, opts)
    else:
        theta, argmax = decide_plan(probs, stats, plan, softmax_classes=multiclass and probs.shape[1] > 1)
    if not multiclass:
        return _into(out, probs > _lift(theta, probs.ndim))
    if probs.shape[1] == 1:
        return _into(out, (probs > _lift(theta, probs.ndim))[:, 0].long())
    return assign(probs, theta, stats, opts, argmax, out)


def _into(out: torch.Tensor | None, result: torch.Tensor) -> torch.Tensor:
    return result if out is None else out.copy_(result)


def _decode_regions(probs: torch.Tensor, opts: Options, plan: Plan | None) -> torch.Tensor:
    layout, q, stats = _regions(probs, opts)
    if opts.metric == "acc":
        theta = torch.full_like(stats.mu, 0.5, dtype=rma.compute_dtype(q.dtype))
    elif plan is not None:
        theta, _ = decide_plan(q, stats, plan, softmax_classes=False)
        softmax = opts.output_mode == "multiclass"
        by_argmax = [j for j, d in enumerate(plan.decisions) if d.decoder == "argmax"] if softmax else []
        if by_argmax:  # the region of the argmax class, so that a plan of argmax everywhere is argmax
            return paint(q, theta, layout, probs, argmax_regions=by_argmax)
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


def thresholds(probs: torch.Tensor, opts: Options, plan: Plan | None = None) -> torch.Tensor:
    """``(B, C)`` float64 (``(B, R)`` with regions): pair ``(b, c)``'s mask is ``probs[b, c] > theta[b, c]``
    (region ``r``'s: ``q[b, r] > theta[b, r]``); ``inf`` marks an empty decision. In multiclass mode these are the
    masks before overlaps are resolved."""
    with torch.no_grad(), threads.decoding(getattr(probs, "device", None)):
        if opts.regions is not None:
            _, q, stats = _regions(probs, opts)
        else:
            q, stats = probs, probability_stats(probs, opts.output_mode == "multiclass")
        if opts.metric == "acc":
            if opts.output_mode == "multiclass" and probs.shape[1] > 1 and opts.regions is None:
                raise ValueError("metric='acc' in multiclass mode is argmax, which has no per-class threshold.")
            return torch.full(stats.mu.shape, 0.5, dtype=torch.float64, device=probs.device)
        if plan is not None:
            plan.check_input(probs.shape[1])
            theta, argmax = decide_plan(q, stats, plan, opts.output_mode == "multiclass" and opts.regions is None
                                        and probs.shape[1] > 1)
            if argmax.any():
                raise ValueError("classes decoded by argmax have no threshold; this plan's thresholds() would hide them")
            return theta.double()
        return decide(q, stats, opts).double()


def rankseg(probs: torch.Tensor, **options: Any) -> torch.Tensor:
    """Dice/IoU-optimal segmentation of ``probs`` ``(B, C, *spatial)``; options and output as :class:`~rankseg_plugins.RankSEG`."""
    return decode(probs, Options.create(**options))
