"""Presence: where does the empty mask beat the best non-empty one? (MATH.md section 5)

Per-case metrics score a case whose truth is empty by convention. With ``ignore_empty=False`` (``0/0 := 1``: per-case
challenge Dice, MONAI ``DiceMetric(ignore_empty=False)``, ``rankseg-eval``) an empty prediction scores 1 there, so for
every (image, class) pair the decision is the better of the solver's mask ``A`` and the empty mask, which scores

    E[s / (s + X)] = P(X = 0) = prod_i (1 - p_i)    at s = 0,        X = number of foreground pixels.

(With ``ignore_empty=True`` such cases are not scored and an empty prediction can only lose: this module is not
used.) Cheap bounds settle almost every pair from statistics the solver already has:

    candidate:  value(A) <= E[metric(A)] <= U(A)
        value = RMA's objective, a lower bound by Jensen (1/(a + X) is convex);
        U = (2S + s) / (tau + S + s) for Dice, as Dice <= (2W + s)/(tau + W + s), concave in W = |A∩Y|;
        for IoU also (S + s) / (tau + s).
    empty:      L <= E[s / (s + X)] <= exact.empty_upper_bound(mu)   (e^-mu at s = 0)
        L = exp(-mu / (1 - pmax)) at s = 0 (log(1 - p) >= -p / (1 - pmax)), s / (s + mu) otherwise (Jensen).

``A`` stays where ``value(A)`` exceeds the empty mask's upper bound; the empty mask wins where ``U(A)`` is below its
lower bound. Only the pairs in between are evaluated exactly (:func:`rankseg_plugins.exact.candidate_and_empty`:
relative error ``1e-9 (1 + mu)``, one pass over that pair's pixels): these are faint classes, a few expected
foreground pixels, exactly where RMA's approximation is poorest. As in the exact solver, expected values within
``1e-13`` count as equal and the smaller (empty) mask wins.
"""

from __future__ import annotations

import torch

from . import host
from .exact import candidate_and_empty, empty_upper_bound
from .rma import Candidates
from .validation import Stats

TIE = 1e-13  # expected values this close count as equal; the empty mask wins the tie


def empty_wins(probs: torch.Tensor, stats: Stats, cand: Candidates, metric: str, smooth: float) -> torch.Tensor:
    """``(B, C)`` bool: where the empty mask's exact expected metric is at least the candidate's (``0/0 := 1``)."""
    s, mu, S = smooth, stats.mu, cand.S
    tau = cand.tau.double()
    d = probs[0, 0].numel()
    upper_cand = (2.0 * S + s) / (tau + S + s).clamp_min(1e-300)
    if metric == "iou":
        upper_cand = torch.minimum(upper_cand, (S + s) / (tau + s).clamp_min(1e-300))
    if s == 0.0:
        lower_empty = torch.where(stats.pmax < 1.0, torch.exp(-mu / (1.0 - stats.pmax).clamp_min(1e-300)), 0.0)
    else:
        lower_empty = s / (s + mu)
    empty = (cand.tau == 0) | (upper_cand < lower_empty)
    keep = ~empty & (cand.value > empty_upper_bound(mu, s, d) + TIE)
    unsure = host.to_host(~empty & ~keep)
    for b, c in unsure.nonzero().tolist():
        e_cand, e_empty = candidate_and_empty(probs[b, c], cand.theta[b, c], metric, s)
        empty[b, c] = e_empty >= e_cand - TIE
    return empty
