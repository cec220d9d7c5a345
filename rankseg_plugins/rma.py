"""RMA (reciprocal moment approximation) solver for one image and one class, without sorting the image.

For probabilities ``p_1..p_d`` with ``mu = sum_i p_i`` and a mask ``A`` with ``|A| = tau`` and ``S = sum_{i in A} p_i``,
RMA maximises over masks (MATH.md section 2)

    Dice:  f(A) = 2 S / (mu + tau + 1 + s)  +  s / (mu + tau + s)
    IoU:   g(A) = (S + s) / (mu - S + tau + s)

The optimum keeps the pixels above a threshold. Both ``f`` with ``s = 0`` and ``g`` are ratios
``(S + alpha) / (beta + tau - gamma S)`` of functions that are linear in the mask, so Dinkelbach's iteration

    lam_{k+1} = (S_k + alpha) / (beta + tau_k - gamma S_k),   A_k = {p > lam_k / (1 + gamma lam_k)}

climbs to the optimum ``lam*`` and stops exactly when the mask stops changing. Each step only touches the pixels
kept by the previous one, so after one pass over the image the work shrinks to the uncertain band. For Dice with
``s > 0`` the optimum's size lies between the count of pixels that always pay off and the ``s``-free solution with
denominator ``mu + 1 + s``: only that band is sorted, never the whole image.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Decision(NamedTuple):
    """One class's mask ``{p > theta}``, its probability sum ``S`` and its size ``tau``."""

    theta: float
    S: float
    tau: int


def _dinkelbach(row: torch.Tensor, alpha: float, beta: float, gamma: float, lam: float) -> tuple[float, torch.Tensor, float]:
    """Maximise ``(S + alpha) / (beta + tau - gamma S)`` over masks ``{p > theta}``, starting from a feasible ``lam``.

    Returns the optimal threshold ``theta``, the kept values (1-D) and their sum ``S``.
    """
    theta = lam / (1.0 + gamma * lam)
    kept = row[row > theta]
    tau = kept.numel()
    while True:
        S = kept.sum().item()
        lam = (S + alpha) / (beta + tau - gamma * S)
        theta = lam / (1.0 + gamma * lam)
        kept = kept[kept > theta]
        if kept.numel() == tau:
            return theta, kept, S
        tau = kept.numel()


def _dice_smooth_band(kept: torch.Tensor, S_all: float, theta_all: float, mu: float, s: float) -> Decision:
    """Exact RMA Dice optimum for ``s > 0`` given the ``s``-free optimum ``kept`` of ``S/(mu + 1 + s + tau)``.

    ``f = 2 S / (D) + s / (D - 1)`` with ``D = mu + tau + 1 + s``. For sizes above the ``s``-free optimum both terms
    only fall, so ``tau* <= |kept|``. Adding a pixel ``p`` to a mask of size ``tau`` raises ``f`` iff
    ``p > S / D + s (D + 1) / (2 D (D - 1))``; since ``S / D < 1/2`` every pixel above
    ``theta_hi = 1/2 + s (mu + 2 + s) / (2 (mu + s)(mu + 1 + s))`` always pays off. Only the band in between is
    sorted, and ``f`` is evaluated at every tie-group boundary in it.
    """
    theta_hi = 0.5 + s * (mu + 2.0 + s) / (2.0 * (mu + s) * (mu + 1.0 + s))
    band = torch.sort(kept[kept <= theta_hi], descending=True).values.double()
    tau_hi = kept.numel() - band.numel()
    S_k = (S_all - band.sum().item()) + torch.cat([band.new_zeros(1), band.cumsum(0)])
    tau_k = tau_hi + torch.arange(band.numel() + 1, dtype=torch.float64, device=band.device)
    f = 2.0 * S_k / (mu + tau_k + 1.0 + s) + s / (mu + tau_k + s)
    splits_tie = torch.zeros_like(f, dtype=torch.bool)
    splits_tie[1:-1] = band[:-1] == band[1:]
    k = int(torch.argmax(f.masked_fill(splits_tie, -torch.inf)).item())  # first maximum: the smaller mask
    theta = band[k].item() if k < band.numel() else theta_all
    return Decision(theta, S_k[k].item(), tau_hi + k)


def rma_decision(row: torch.Tensor, mu: float, metric: str, smooth: float) -> Decision:
    """RMA-optimal mask of one class of one image as ``{p > theta}``; ``row`` holds its probabilities.

    ``mu`` is ``row.sum()``. ``metric`` is ``"dice"`` or ``"iou"``; ``smooth`` is ``s >= 0``.
    The mask keeps no pixel equal to ``theta``, so it never splits a group of tied probabilities.
    """
    d, s = row.numel(), smooth
    if metric == "dice":
        # Ratio S / (mu + 1 + s + tau); the full mask gives the feasible start lam_0 = mu / (mu + 1 + s + d).
        beta = mu + 1.0 + s
        theta, kept, S = _dinkelbach(row, 0.0, beta, 0.0, mu / (beta + d))
        if s > 0:
            return _dice_smooth_band(kept, S, theta, mu, s)
    else:
        # Ratio (S + s) / (mu + s + tau - S); start from the full mask, (mu + s) / (d + s).
        if mu + s == 0.0:  # all-zero map, plain IoU: every mask scores 0, keep the empty one
            return Decision(0.0, 0.0, 0)
        theta, kept, S = _dinkelbach(row, s, mu + s, 1.0, (mu + s) / (d + s))
    return Decision(theta, S, kept.numel())
