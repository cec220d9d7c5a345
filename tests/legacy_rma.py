"""The per-class RMA solver as it stood before the batched solver (kept as the reference the batched one must equal).

RMA (reciprocal moment approximation) solver for one image and one class, without sorting the image.

For probabilities ``p_1..p_d`` with ``mu = sum_i p_i`` and a mask ``A`` with ``|A| = tau`` and ``S = sum_{i in A} p_i``,
RMA (Wang & Dai, NeurIPS 2025) maximises over masks

    Dice:  f(A) = 2 S / (mu + tau + 1 + s)  +  s / (mu + tau + s)
    IoU:   g(A) = (S + s) / (mu - S + tau + s)

The optimum keeps the pixels above a threshold. Both ``f`` with ``s = 0`` and ``g`` are ratios
``(S + alpha) / (beta + tau - gamma S)`` of functions that are linear in the mask, so Dinkelbach's iteration

    lam_{k+1} = (S_k + alpha) / (beta + tau_k - gamma S_k),   A_k = {p > lam_k / (1 + gamma lam_k)}

climbs to the optimum ``lam*`` and stops exactly when the mask stops changing. Each step only touches the pixels
kept by the previous one, so after one pass over the image the work shrinks to the uncertain band. For Dice with
``s > 0`` the optimum's size lies between the count of pixels that always pay off and the ``s``-free solution with
denominator ``mu + 1 + s``: only that band is sorted, never the whole image.

Every full pass walks the class map in chunks of about a million pixels, so a whole CT volume never needs more
than a chunk of scratch memory beyond the pixels that end up kept.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


CHUNK_ELEMENTS = 1 << 20


def chunk_views(t: torch.Tensor, dim: int = 0) -> list[torch.Tensor]:
    """Views of ``t`` split along ``dim``, each holding about ``CHUNK_ELEMENTS`` elements (at least one slice)."""
    if t.numel() <= CHUNK_ELEMENTS or t.ndim == 0:
        return [t]
    per_slice = t.numel() // t.shape[dim]
    return list(t.split(max(1, CHUNK_ELEMENTS // per_slice), dim=dim))

_BRACKET_STEPS = 8  # regula falsi steps before selecting pixels
_BRACKET_TOL = 1e-3  # or stop once the bracket is this narrow (relative)


class Decision(NamedTuple):
    """One class's mask ``{p > theta}`` and its size ``tau``."""

    theta: float
    tau: int


def _threshold(lam: float, gamma: float) -> float:
    """Pixels with ``p > lam / (1 + gamma lam)`` raise ``S + alpha - lam (beta + tau - gamma S)``."""
    return lam / (1.0 + gamma * lam)


def _parametric(parts: list[torch.Tensor], buf: torch.Tensor, alpha: float, beta: float, gamma: float, lam: float) -> float:
    """``F(lam) = max_A [S + alpha - lam (beta + tau - gamma S)] = (1 + gamma lam) G(theta) - lam beta + alpha``.

    ``G(theta) = sum_i (p_i - theta)_+ = sum_i max(p_i, theta) - d theta`` with ``theta = lam / (1 + gamma lam)``:
    one streaming pass and a sum, no selection. ``F`` is convex and strictly decreasing; its root is ``lam*``.
    """
    theta = _threshold(lam, gamma)
    G = -theta * sum(part.numel() for part in parts)
    for part in parts:
        scratch = buf[: part.shape[0]]
        if part.dtype == buf.dtype:
            torch.clamp(part, min=theta, out=scratch)
        else:
            scratch.copy_(part).clamp_(min=theta)
        G += scratch.sum().item()
    return (1.0 + gamma * lam) * G - lam * beta + alpha


def _bracket(parts: list[torch.Tensor], dtype: torch.dtype, alpha: float, beta: float, gamma: float, lam_lo: float, lam_hi: float) -> float:
    """A lower bound of ``lam*`` close to it, by Illinois regula falsi on ``F`` from ``lam_lo`` (``F >= 0``) and
    ``lam_hi`` (``F < 0``). Each step costs one streaming pass, far less than selecting pixels, and leaves only a
    thin band of pixels above the bound that are not in the optimal mask."""
    buf = torch.empty(parts[0].shape, dtype=dtype, device=parts[0].device)
    f_lo = _parametric(parts, buf, alpha, beta, gamma, lam_lo)
    f_hi = _parametric(parts, buf, alpha, beta, gamma, lam_hi)
    side = 0
    for _ in range(_BRACKET_STEPS):
        if f_lo <= 0.0 or lam_hi - lam_lo <= _BRACKET_TOL * lam_hi:
            break
        lam = (lam_lo * f_hi - lam_hi * f_lo) / (f_hi - f_lo)
        f = _parametric(parts, buf, alpha, beta, gamma, lam)
        if f >= 0.0:
            lam_lo, f_lo = lam, f
            f_hi = f_hi / 2 if side == 1 else f_hi
            side = 1
        else:
            lam_hi, f_hi = lam, f
            f_lo = f_lo / 2 if side == -1 else f_lo
            side = -1
    return lam_lo


def _select(parts: list[torch.Tensor], theta: float, dtype: torch.dtype) -> torch.Tensor:
    """The values above ``theta``, 1-D in ``dtype``: counted first, then copied chunk by chunk into place, so
    the kept values are held once (no concatenation of per-chunk copies)."""
    if len(parts) == 1:
        return parts[0][parts[0] > theta].to(dtype)
    counts = [int(torch.count_nonzero(part > theta)) for part in parts]
    kept = torch.empty(sum(counts), dtype=dtype, device=parts[0].device)
    for part, chunk in zip(parts, kept.split(counts)):
        chunk.copy_(part[part > theta])
    return kept


class Optimum(NamedTuple):
    """Dinkelbach's result: the mask ``{p > theta}``, its size and sum, and ``kept``, the values above the
    starting bound (a superset of the mask's values)."""

    theta: float
    tau: int
    S: float
    kept: torch.Tensor


def _dinkelbach(
    parts: list[torch.Tensor], dtype: torch.dtype, alpha: float, beta: float, gamma: float, lam_lo: float, lam_hi: float
) -> Optimum:
    """Maximise ``(S + alpha) / (beta + tau - gamma S)`` over masks ``{p > theta}``; ``lam_lo <= lam* < lam_hi``.

    The pixels above the bracket's bound are selected once; each step then only subtracts the few that fall
    below the new threshold, so no large index tensor is built. The bound is only a shortcut: if float rounding
    put it above ``lam*``, the first exact ratio shows it and the iteration restarts from that ratio, which is
    always a valid bound. Later steps rise monotonically, so a ratio a rounding error lower means convergence.
    """
    # A relative margin keeps float rounding in the bracket from landing a hair above lam* (and a restart).
    theta = _threshold(_bracket(parts, dtype, alpha, beta, gamma, lam_lo, lam_hi) * (1.0 - 1e-4), gamma)
    kept = _select(parts, theta, dtype)
    tau, S = kept.numel(), kept.sum().item()
    first = True
    while True:
        new_theta = _threshold((S + alpha) / (beta + tau - gamma * S), gamma)
        if first and new_theta < theta:  # the bound overshot lam*: restart from this ratio, a valid bound
            kept, theta, first = _select(parts, new_theta, dtype), new_theta, False
            tau, S = kept.numel(), kept.sum().item()
            continue
        first = False
        dropped = kept[(kept > theta) & (kept <= new_theta)]
        if dropped.numel() == 0:
            return Optimum(new_theta, tau, S, kept)
        tau, S, theta = tau - dropped.numel(), S - dropped.sum().item(), new_theta


def _dice_smooth_band(opt: Optimum, mu: float, s: float) -> Decision:
    """Exact RMA Dice optimum for ``s > 0`` given ``opt``, the ``s``-free optimum of ``S / (mu + 1 + s + tau)``.

    ``f = 2 S / D + s / (D - 1)`` with ``D = mu + tau + 1 + s``. For sizes above the ``s``-free optimum both terms
    only fall, so ``tau* <= opt.tau``. Adding a pixel ``p`` to a mask of size ``tau`` raises ``f`` iff
    ``p > S / D + s (D + 1) / (2 D (D - 1))``; since ``S / D < 1/2`` every pixel above
    ``theta_hi = 1/2 + s (mu + 2 + s) / (2 (mu + s)(mu + 1 + s))`` always pays off. Only the band in between is
    sorted, and ``f`` is evaluated at every tie-group boundary in it.
    """
    theta_hi = 0.5 + s * (mu + 2.0 + s) / (2.0 * (mu + s) * (mu + 1.0 + s))
    kept = opt.kept
    band = torch.sort(kept[(kept > opt.theta) & (kept <= theta_hi)], descending=True).values.double()
    tau_hi = opt.tau - band.numel()
    S_k = (opt.S - band.sum().item()) + torch.cat([band.new_zeros(1), band.cumsum(0)])
    tau_k = tau_hi + torch.arange(band.numel() + 1, dtype=torch.float64, device=band.device)
    f = 2.0 * S_k / (mu + tau_k + 1.0 + s) + s / (mu + tau_k + s)
    splits_tie = torch.zeros_like(f, dtype=torch.bool)
    splits_tie[1:-1] = band[:-1] == band[1:]
    k = int(torch.argmax(f.masked_fill(splits_tie, -torch.inf)).item())  # first maximum: the smaller mask
    theta = band[k].item() if k < band.numel() else opt.theta
    return Decision(theta, tau_hi + k)


def rma_decision(row: torch.Tensor, mu: float, metric: str, smooth: float, dtype: torch.dtype) -> Decision:
    """RMA-optimal mask of one class of one image as ``{p > theta}``; ``row`` holds its probabilities.

    ``mu`` is ``row.sum()``. ``metric`` is ``"dice"`` or ``"iou"``; ``smooth`` is ``s >= 0``; comparisons and
    sums run in ``dtype`` (float32 or float64). The mask keeps no pixel equal to ``theta``, so it never splits a
    group of tied probabilities.
    """
    parts, d, s = chunk_views(row), row.numel(), smooth
    if metric == "dice":
        # Ratio S / (mu + 1 + s + tau); the full mask gives the feasible start lam_0 = mu / (mu + 1 + s + d).
        beta = mu + 1.0 + s
        opt = _dinkelbach(parts, dtype, 0.0, beta, 0.0, mu / (beta + d), 0.5)
        if s > 0:
            return _dice_smooth_band(opt, mu, s)
    else:
        # Ratio (S + s) / (mu + s + tau - S); start from the full mask, (mu + s) / (d + s).
        if mu + s == 0.0:  # all-zero map, plain IoU: every mask scores 0, keep the empty one
            return Decision(0.0, 0)
        opt = _dinkelbach(parts, dtype, s, mu + s, 1.0, (mu + s) / (d + s), 1.0)
    return Decision(opt.theta, opt.tau)
