"""RMA (reciprocal moment approximation; Wang & Dai, NeurIPS 2025) for every (image, class) pair at once, sort-free.

For one pair with probabilities ``p_1..p_d``, ``mu = sum_i p_i`` and a mask ``A = {p > theta}`` with ``|A| = tau`` and
``S = sum_{i in A} p_i``, RMA maximises

    Dice:  f(A) = 2 S / (mu + tau + 1 + s)  +  s / (mu + tau + s)
    IoU:   g(A) = (S + s) / (mu - S + tau + s)

``f`` with ``s = 0`` and ``g`` are ratios ``(S + alpha) / (beta + tau - gamma S)`` of functions linear in the mask, so
Dinkelbach's iteration

    lam_{k+1} = (S_k + alpha) / (beta + tau_k - gamma S_k),    A_k = {p > lam_k / (1 + gamma lam_k)}

(Newton's method on the convex, decreasing ``F(lam) = max_A [S + alpha - lam (beta + tau - gamma S)]``) reaches the
optimum ``lam*`` exactly: after its first step every iterate is a lower bound, the masks shrink, and it stops when
a mask repeats. It starts at ``theta = 1/2``: ``lam* < 1/2`` for Dice and ``lam* <= 1`` (``theta* <= 1/2``) for IoU.
The optimal mask ``{p > theta*}`` keeps no pixel equal to ``theta*`` (adding one leaves the ratio unchanged), so it
never splits a group of tied probabilities and does not depend on pixel order.

Every pair steps together (MATH.md section 7): a step is one pass over the blocks of the batch (a compare and two
sums per block against a ``(B, C)`` tensor of thresholds) and one host sync. Converged pairs drop out; an image
whose unconverged classes are few is gathered to just those classes.

Dice with ``s > 0`` is a sum of two ratios. For sizes above the optimum of ``S / (mu + 1 + s + tau)`` both terms fall,
so that optimum bounds ``tau*`` from above, and every pixel above
``theta_hi = 1/2 + s (mu + 2 + s) / (2 (mu + s)(mu + 1 + s))`` pays off: one more pass collects the band in between,
which is sorted per pair, and ``f`` is evaluated at every tie-group boundary in it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch

from . import blocks, host, threads
from .blocks import Scratch, image_blocks, spatial_dims
from .tiles import Tiles, TileSet
from .validation import Stats

_MAX_STEPS = 100  # Dinkelbach stops exactly; on real maps after 4-9 steps
_GATHER_FRACTION = 0.5  # gather an image's unconverged classes once they are at most this fraction


class Candidates(NamedTuple):
    """The RMA-optimal mask ``probs > theta`` of every pair, with its size, sum and RMA objective (all ``(B, C)``)."""

    theta: torch.Tensor  # compute dtype
    tau: torch.Tensor  # int64
    S: torch.Tensor  # float64
    value: torch.Tensor  # float64: f or g above, a lower bound of the mask's exact expected metric (Jensen)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every narrower float is compared and summed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def objective(metric: str, smooth: float, mu: torch.Tensor, tau: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """RMA's objective of masks of size ``tau`` and probability sum ``S`` (float64)."""
    tau, s = tau.double(), smooth
    if metric == "dice":
        value = 2.0 * S / (mu + tau + 1.0 + s)
        return value + s / (mu + tau + s) if s > 0 else value
    den = mu - S + tau + s
    return torch.where(den > 0, (S + s) / den.clamp_min(1e-300), torch.zeros_like(den))


def solve(probs: torch.Tensor, stats: Stats, metric: str, smooth: float) -> Candidates:
    """RMA-optimal masks of every (image, class) pair of ``probs`` ``(B, C, *spatial)``, given its :class:`Stats`."""
    dtype = compute_dtype(probs.dtype)
    mu = stats.mu
    if metric == "dice":  # S / (mu + 1 + s + tau): exact for s = 0, and the bound the s > 0 band needs
        ratio = (torch.zeros_like(mu), mu + 1.0 + smooth, 0.0)
    else:  # (S + s) / (mu + s + tau - S)
        ratio = (torch.full_like(mu, smooth), mu + smooth, 1.0)
    theta, tau, S = _dinkelbach(probs, stats, dtype, *ratio)
    if metric == "dice" and smooth > 0:
        theta, tau, S = _dice_smooth_band(probs, stats.tiles, dtype, mu, smooth, theta, tau, S)
    return Candidates(theta, tau, S, objective(metric, smooth, mu, tau, S))


def chunks(
    probs: torch.Tensor, tiles: Tiles | None, chosen: TileSet | None, active: torch.Tensor, scratch: Scratch
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(values (R, ...), pair (R,))``: the probabilities of the ``active`` (host ``(B, C)`` bool) pairs, as the
    ``chosen`` tiles gathered a quarter block at a time when they :meth:`~Tiles.fits`, else as blocks of the batch
    (on the CPU an image's active classes are gathered once they are few)."""
    if tiles is not None and chosen is not None and tiles.fits(chosen.index.numel()):
        for values, pair, _ in tiles.gather_parts(chosen, threads.share(blocks.BLOCK_ELEMENTS // 4)):
            yield values, pair
        return
    yield from _block_chunks(probs, active, scratch)


def _block_chunks(probs: torch.Tensor, active: torch.Tensor, scratch: Scratch) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    B, C = active.shape
    for b in range(B):
        classes = active[b].nonzero().flatten()
        if classes.numel() == 0:
            continue
        gather = probs.device.type == "cpu" and classes.numel() <= _GATHER_FRACTION * C
        if not gather:
            classes = torch.arange(C)
        classes = classes.to(probs.device)
        for _, block in image_blocks(probs, b):
            if gather:
                shape = (classes.numel(), *block.shape[1:])
                block = torch.index_select(block, 0, classes, out=scratch.take(shape, 1, block.dtype))
            yield block, b * C + classes


def count_sum_above(
    parts: Iterator[tuple[torch.Tensor, torch.Tensor]], theta: torch.Tensor, scratch: Scratch
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tau, S)`` ``(B, C)`` float64: count and sum of the values above ``theta[pair]`` over the ``parts`` (pairs
    not in them get 0). Per part: ``w = (p > theta)`` as floats, ``sum(w)``, ``w *= p``, ``sum(w)``."""
    flat = theta.flatten()
    tau = torch.zeros(flat.shape, dtype=torch.float64, device=theta.device)
    S = torch.zeros_like(tau)
    for values, pair in parts:
        # share out rows, or, for a block of a few classes, runs of its first spatial dim
        by_row = values.ndim < 3 or values.shape[0] >= threads.count() * threads.PARTS_PER_THREAD

        def count_sum(part: slice) -> tuple[torch.Tensor, torch.Tensor]:
            """Per row of the part: the count and the sum of its values above its pair's threshold."""
            v = values[part] if by_row else values[:, part]
            w = scratch.take(v.shape)
            torch.gt(v, flat[pair[part] if by_row else pair].view(-1, *(1,) * (v.ndim - 1)), out=w)
            dims = spatial_dims(w)
            n = w.sum(dims, dtype=w.dtype).double()
            return n, w.mul_(v).sum(dims, dtype=w.dtype).double()

        length = values.shape[0 if by_row else 1]
        cut = threads.pieces(length, values.numel(),
                             most=max(1, length * threads.share(blocks.BLOCK_ELEMENTS // 4) // max(values.numel(), 1)))
        for part, (n, total) in zip(cut, threads.map_parts(count_sum, cut, values.numel())):
            tau.index_add_(0, pair[part] if by_row else pair, n)
            S.index_add_(0, pair[part] if by_row else pair, total)
    return tau.view(theta.shape), S.view(theta.shape)


def _dinkelbach(
    probs: torch.Tensor,
    stats: Stats,
    dtype: torch.dtype,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Maximise ``(S + alpha) / (beta + tau - gamma S)`` over ``{p > theta}`` for every pair: ``(theta, tau, S)``.

    Each pair keeps a bracket ``lo <= lam* < hi``: ``hi`` starts at 1/2 (Dice; 1 for IoU), ``lo`` is the best
    ratio seen (of ``{p > 1/2}`` after the first step, or of the top pixel). A step evaluates ``A_q = {p > theta(q)}``
    with ratio ``r``, a new lower bound. At ``q = lo`` it is Dinkelbach's step: ``A_q`` contains the optimum, and a
    mask that repeats is optimal. With tiles, a step runs on the tiles whose maximum exceeds ``theta(q)``; where
    those would be more than twice as many as at the bracket's (geometric) middle, the pair probes the middle
    instead: ``F(q) = (beta + tau - gamma S)(r - q)``, so ``r >= q`` puts ``lam*`` above ``q`` (every later mask
    lies in ``A_q``) and ``r < q`` puts it below (``hi = q``). So the gathered tiles stay close to the optimum's.
    """
    ones = torch.ones_like(beta)
    hi = ones * (0.5 if gamma == 0.0 else 1.0)
    top = stats.pmax
    lo = torch.clamp_min((top + alpha) / (beta + 1.0 - gamma * top), 0.0)  # the top pixel alone
    q = hi.clone()
    prev = torch.full_like(beta, -1.0)  # size of the last mask known to contain the optimum (-1: none)
    out_theta = torch.zeros_like(beta, dtype=dtype)
    out_tau, out_S = torch.zeros_like(beta), torch.zeros_like(beta)
    active = torch.ones_like(beta, dtype=torch.bool)
    active_host = torch.ones(active.shape, dtype=torch.bool)
    scratch = Scratch(dtype, probs.device)
    tiles, universe = stats.tiles, None  # universe: the tiles above theta(lo), where every later step looks
    chosen = None if tiles is None else tiles.above(_threshold(q, gamma, dtype), active)  # a step's tiles
    for step in range(_MAX_STEPS):
        theta = _threshold(q, gamma, dtype)
        tau, S = count_sum_above(chunks(probs, tiles, chosen, active_host, scratch), theta, scratch)
        den = beta + tau - gamma * S
        r = torch.where(den > 0, (S + alpha) / den.clamp_min(1e-300), torch.zeros_like(den))
        newton = q <= lo
        # at q = lo the mask contains the optimum: one that repeats (or grows back by a rounding step) is optimal
        done = active & newton & (prev >= 0) & (tau >= prev)
        out_theta = torch.where(done, theta, out_theta)
        out_tau = torch.where(done, tau, out_tau)
        out_S = torch.where(done, S, out_S)
        active &= ~done
        active_host = host.to_host(active)
        if not active_host.any():
            break
        above = r >= q  # lam* >= r >= q: later masks lie inside this one
        prev = torch.where(newton | above, tau, torch.full_like(tau, -1.0))
        hi = torch.where(newton | above, hi, q)
        lo = torch.maximum(lo, r)
        if tiles is None:
            q = lo
            continue
        chosen = None  # used: freed before the next step's tiles are found
        floor = _threshold(lo, gamma, dtype)
        if universe is None:
            universe = tiles.above(floor, active)
            at_floor = torch.ones(universe.index.shape, dtype=torch.bool, device=beta.device)
        else:
            at_floor = universe.above(floor, active)
        q, at_q = _next_point(tiles, universe, at_floor, lo, hi, active & (prev < 0), gamma, dtype, first=step == 0)
        universe, at_q = universe.narrow(at_floor, at_q)  # at_q lies inside at_floor
        chosen = universe.take(at_q)
    else:  # not reached on any input seen; the last lower bound's mask is a near-optimal superset
        out_theta, out_tau, out_S = (torch.where(active, new, old) for new, old in
                                     ((theta, out_theta), (tau, out_tau), (S, out_S)))
    return out_theta, out_tau.round().long(), out_S


def _threshold(lam: torch.Tensor, gamma: float, dtype: torch.dtype) -> torch.Tensor:
    """Pixels with ``p > lam / (1 + gamma lam)`` raise ``S + alpha - lam (beta + tau - gamma S)``."""
    return (lam / (1.0 + gamma * lam)).to(dtype)


def _next_point(
    tiles: Tiles, universe: TileSet, at_floor: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, probing: torch.Tensor,
    gamma: float, dtype: torch.dtype, first: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next point: ``lo`` (Dinkelbach's step), or, for the ``probing`` pairs (no mask known to contain the
    optimum yet), the bracket's geometric middle where ``lo`` would gather more than twice as many tiles (after the
    first step, whose ``lo`` from ``{p > 1/2}`` may be far below, always) as long as the middle's tiles can be
    gathered at all; and which tiles of the ``universe`` lie above it (``at_floor``: those above ``theta(lo)``)."""
    if not bool(probing.any()):
        return lo, at_floor
    mid = torch.maximum(torch.where(lo > 0, (lo * hi).sqrt(), hi / 2), lo)
    at_mid = universe.above(_threshold(mid, gamma, dtype), probing)
    n_mid = universe.count(at_mid, lo.shape)
    if not tiles.fits(int(n_mid.sum())):
        return lo, at_floor
    middle = probing & (first | (universe.count(at_floor, lo.shape) > 2 * n_mid + 8))
    return torch.where(middle, mid, lo), torch.where(middle.flatten().index_select(0, universe.pair), at_mid, at_floor)


def _dice_smooth_band(
    probs: torch.Tensor,
    tiles: Tiles | None,
    dtype: torch.dtype,
    mu: torch.Tensor,
    s: float,
    theta_free: torch.Tensor,
    tau_free: torch.Tensor,
    S_free: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact RMA Dice optimum for ``s > 0`` from the optimum of ``S / (mu + 1 + s + tau)`` (module docstring).

    Adding a pixel ``p`` to a mask of size ``tau`` raises ``f`` iff ``p > S / D + s (D + 1) / (2 D (D - 1))`` with
    ``D = mu + tau + 1 + s``; as ``S / D < 1/2`` every pixel above ``theta_hi`` pays off. The band
    ``(theta_free, theta_hi]`` of every pair is collected in one pass, sorted per pair (descending, stable), and the
    first maximum of ``f`` over the tie-group boundaries wins (the smaller mask on ties).
    """
    B, C = mu.shape
    theta_hi = (0.5 + s * (mu + 2.0 + s) / (2.0 * (mu + s) * (mu + 1.0 + s))).to(dtype)
    everything = torch.ones((B, C), dtype=torch.bool)
    chosen = None if tiles is None else tiles.above(theta_free, everything.to(mu.device))
    lo, hi = theta_free.flatten(), theta_hi.flatten()
    values, pairs = [], []
    for v, pair in chunks(probs, tiles, chosen, everything, Scratch(dtype, probs.device)):
        lift = (-1, *(1,) * (v.ndim - 1))
        band = (v > lo[pair].view(lift)) & (v <= hi[pair].view(lift))
        values.append(v[band].to(dtype))  # row by row: masked_select walks the chunk in logical order
        pairs.append(torch.repeat_interleave(pair, band.sum(spatial_dims(band))))
    if sum(v.numel() for v in values) == 0:  # no pixel between the bounds: the s-free optimum is the optimum
        return theta_free, tau_free, S_free
    v, pair = torch.cat(values).double(), torch.cat(pairs)
    order = torch.sort(v, descending=True, stable=True).indices
    v, pair = v[order], pair[order]
    order = torch.sort(pair, stable=True).indices
    v, pair = v[order], pair[order]
    n = torch.bincount(pair, minlength=B * C)
    start = torch.cumsum(n, 0) - n
    tau_top = tau_free.flatten() - n
    S_top = S_free.flatten() - torch.zeros_like(mu.flatten()).index_add_(0, pair, v)
    mu_flat = mu.flatten()
    j = torch.arange(v.numel(), device=v.device)
    cum = torch.cumsum(v, 0)
    S_j = S_top[pair] + cum - (cum - v)[start[pair]]  # band values up to j kept
    tau_j = tau_top[pair] + (j - start[pair]) + 1
    boundary = torch.ones_like(pair, dtype=torch.bool)
    boundary[:-1] = (pair[1:] != pair[:-1]) | (v[1:] != v[:-1])  # keeping up to j splits no tie group
    f_j = objective("dice", s, mu_flat[pair], tau_j, S_j).masked_fill(~boundary, -torch.inf)
    f_0 = objective("dice", s, mu_flat, tau_top, S_top)
    best = torch.full_like(f_0, -torch.inf).scatter_reduce(0, pair, f_j, "amax")
    band_wins = best > f_0
    is_best = band_wins[pair] & (f_j == best[pair])
    first = torch.full_like(n, v.numel()).scatter_reduce(0, pair[is_best], j[is_best], "amin")
    k, nxt = first.clamp_max(v.numel() - 1), (first + 1).clamp_max(v.numel() - 1)
    theta = theta_free.flatten().double()
    theta = torch.where(band_wins & (first + 1 < start + n), v[nxt], theta)  # the largest value left out
    theta = torch.where(~band_wins & (n > 0), v[start.clamp_max(v.numel() - 1)], theta)  # no band value kept
    tau = torch.where(band_wins, tau_j[k], tau_top)
    S = torch.where(band_wins, S_j[k], S_top)
    return theta.to(dtype).view(B, C), tau.view(B, C), S.view(B, C)
