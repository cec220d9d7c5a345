"""Independent, sort-based references for the core's tests (deliberately simple, float64, no shared code)."""

from __future__ import annotations

import itertools

import numpy as np


def rma_objective(p: np.ndarray, mask: np.ndarray, metric: str, s: float) -> float:
    """RMA objective of ``mask`` for probabilities ``p`` (the formulas of rankseg_plugins.rma, written out)."""
    p = np.asarray(p, dtype=np.float64).ravel()
    mask = np.asarray(mask, dtype=bool).ravel()
    mu, S, tau = p.sum(), p[mask].sum(), mask.sum()
    if metric == "dice":
        return 2 * S / (mu + tau + 1 + s) + (s / (mu + tau + s) if s > 0 else 0.0)
    den = mu - S + tau + s
    return (S + s) / den if den > 0 else 0.0


def rma_best(p: np.ndarray, metric: str, s: float, split_ties: bool = False) -> float:
    """Max of the RMA objective over top-tau masks, by sorting; tau only at tie boundaries unless ``split_ties``."""
    p = np.sort(np.asarray(p, dtype=np.float64).ravel())[::-1]
    best = -np.inf
    for tau in range(p.size + 1):
        if not split_ties and 0 < tau < p.size and p[tau - 1] == p[tau]:
            continue
        mask = np.zeros(p.size, dtype=bool)
        mask[:tau] = True
        best = max(best, rma_objective(p, mask, metric, s))
    return best


def multiclass_assign(probs: np.ndarray, masks: np.ndarray, metric: str, s: float, unassigned: str, void: int) -> np.ndarray:
    """Step 2 and 3 of the multiclass rule, pixel by pixel. ``probs``/``masks`` are ``(C, d)``.

    Only classes with a non-empty mask compete for contested and unclaimed pixels; with none, pixels get their argmax
    class (``void`` with ``unassigned="void"``).
    """
    C, d = probs.shape
    eligible = masks.any(1)
    if not eligible.any():
        return np.full(d, void) if unassigned == "void" else probs.argmax(0)
    count = masks.sum(0)
    labels = np.full(d, -1, dtype=np.int64)
    m, t = np.zeros(C), np.zeros(C)
    for i in range(d):
        if count[i] == 1:
            c = int(np.argmax(masks[:, i]))
            labels[i] = c
            m[c] += probs[c, i]
            t[c] += 1
    mu = probs.sum(1)
    for i in range(d):
        if count[i] == 1:
            continue
        if count[i] == 0 and unassigned == "void":
            labels[i] = void
            continue
        scores = []
        for c in range(C):
            if not eligible[c]:
                scores.append(-np.inf)
                continue
            p = probs[c, i]
            if metric == "dice":
                D = t[c] + mu[c] + 1 + s
                scores.append(2 * ((m[c] + p + s) / (D + 1) - (m[c] + s) / D))
            else:
                D = t[c] + mu[c] - m[c] + s
                cur = (m[c] + s) / D if D > 0 else 0.0
                scores.append((m[c] + p + s) / (D - p + 1) - cur)
        labels[i] = int(np.argmax(scores))
    return labels


def expected_bruteforce(p: np.ndarray, mask: np.ndarray, metric: str = "dice", s: float = 0.0, empty: float = 0.0) -> float:
    """E[metric(mask, Y)] for independent ``Y_i ~ Bernoulli(p_i)`` by enumerating all 2^d outcomes.

    ``empty`` is the score of an empty mask on an empty truth at ``s = 0`` (``0/0``): 1 for per-case challenge Dice.
    """
    p = np.asarray(p, dtype=np.float64).ravel()
    mask = np.asarray(mask, dtype=bool).ravel()
    total = 0.0
    for y in itertools.product((0, 1), repeat=p.size):
        y = np.array(y, dtype=bool)
        prob = np.prod(np.where(y, p, 1 - p))
        inter = (mask & y).sum()
        if metric == "dice":
            num, den = 2 * inter + s, mask.sum() + y.sum() + s
        else:
            num, den = inter + s, (mask | y).sum() + s
        total += prob * (num / den if den > 0 else empty)
    return total


def best_mask_bruteforce(p: np.ndarray, metric: str, s: float, allow_empty: bool) -> float:
    """Largest E[metric] (``0/0 := 1``) over every mask of ``p`` (all 2^d of them; non-empty ones if not ``allow_empty``)."""
    d = np.asarray(p).size
    best = -np.inf
    for bits in itertools.product((False, True), repeat=d):
        mask = np.array(bits)
        if mask.any() or allow_empty:
            best = max(best, expected_bruteforce(p, mask, metric, s, empty=1.0))
    return best
