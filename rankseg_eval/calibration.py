"""Per-class (or per-region) temperature and bias, fitted by likelihood, for a plan's recalibrated RankSEG candidate.

A plan decision ``{"decoder": "rankseg", "temperature": T, "bias": b}`` runs RankSEG on ``p' = sigmoid(z / T + b)``,
``z = logit(p)``, for one class (one-vs-rest: ``p`` its softmax probability, the truth its label) or one region
(``p`` the region's probability). ``a = 1 / T`` and ``b`` minimise the binary negative log-likelihood

    NLL(a, b) = - sum_i [ y_i log sigmoid(a z_i + b) + (1 - y_i) log(1 - sigmoid(a z_i + b)) ],

a logistic regression on one feature: convex, solved by Newton's method in a handful of steps.

Memory. A case is reduced to a histogram of ``z`` (:data:`Z_BINS` bins of width 0.02 over ``[-20, 20]``; values
beyond are counted in the end bins) per truth value: the sufficient statistics of the NLL up to the bin width,
from every voxel, a few tens of kilobytes per case and target whatever the volume's size. Histograms add, so the
fit on any set of cases (the fitting folds of a cross-validation) is the fit on the sum of theirs. The same
histograms give the reliability diagram (:func:`reliability`) before and after recalibration.
"""

from __future__ import annotations

import numpy as np
import torch

Z_LIMIT = 20.0
Z_BINS = 2000
EDGES = np.linspace(-Z_LIMIT, Z_LIMIT, Z_BINS + 1)
CENTRES = (EDGES[:-1] + EDGES[1:]) / 2
#: ``p`` is clamped to ``[P_MIN, 1 - 1e-7]`` before the logit, as the plan's decoder does (float32 resolution).
P_MIN = torch.finfo(torch.float32).tiny
#: Temperatures are kept in ``[1 / T_MAX, T_MAX]``: beyond, a "calibration" only says the class is not separable.
T_MAX = 100.0
#: Elements per chunk when streaming a volume (bounded memory).
CHUNK = 1 << 22


def expit(x: np.ndarray) -> np.ndarray:
    """``sigmoid(x)`` without overflow."""
    return np.exp(-np.logaddexp(0.0, -x))


def logits(p: torch.Tensor) -> torch.Tensor:
    """``logit(p)`` in float64 with the plan decoder's clamping."""
    return torch.logit(p.double().clamp(P_MIN, 1 - 1e-7))


def logit_histogram(p: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """``(2, Z_BINS)`` float64 voxel counts of ``logit(p)`` per bin, for truth 0 (row 0) and 1 (row 1)."""
    hist = torch.zeros((2, Z_BINS), dtype=torch.float64)
    edges = torch.from_numpy(EDGES[1:-1])
    for part, y in zip(p.reshape(-1).split(CHUNK), truth.reshape(-1).split(CHUNK)):
        index = torch.bucketize(logits(part), edges)
        total = torch.bincount(index, minlength=Z_BINS).double()
        positive = torch.bincount(index, weights=y.double(), minlength=Z_BINS)
        hist[0] += total - positive
        hist[1] += positive
    return hist.numpy()


def nll(hist: np.ndarray, a: float, b: float) -> float:
    """Mean binary negative log-likelihood per voxel of ``sigmoid(a z + b)`` under ``hist``."""
    s = a * CENTRES + b
    return float((hist[1] @ np.logaddexp(0.0, -s) + hist[0] @ np.logaddexp(0.0, s)) / hist.sum())


def fit_temperature(hist: np.ndarray, steps: int = 50) -> tuple[float, float] | None:
    """``(T, b)`` minimising the NLL of ``sigmoid(z / T + b)`` under the histogram ``hist`` (Newton's method with
    backtracking, from ``T = 1, b = 0``); ``None`` when the histogram holds only one truth value."""
    if hist[0].sum() == 0 or hist[1].sum() == 0:
        return None
    keep = hist.sum(0) > 0
    z, n0, n1 = CENTRES[keep], hist[0, keep] / hist.sum(), hist[1, keep] / hist.sum()
    n = n0 + n1
    x = np.stack([z, np.ones_like(z)])  # features (z, 1) of theta = (a, b)

    def loss(theta: np.ndarray) -> float:
        s = theta @ x
        return float(n1 @ np.logaddexp(0.0, -s) + n0 @ np.logaddexp(0.0, s))

    theta = np.array([1.0, 0.0])
    value = loss(theta)
    for _ in range(steps):
        sig = expit(theta @ x)
        grad = x @ (n * sig - n1)
        hess = (x * (n * sig * (1 - sig))) @ x.T + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        scale = 1.0
        while scale > 1e-6 and loss(theta - scale * step) > value:
            scale /= 2
        if scale <= 1e-6:
            break
        theta = theta - scale * step
        new = loss(theta)
        done = value - new < 1e-15
        value = new
        if done:
            break
    a = float(np.clip(theta[0], 1 / T_MAX, T_MAX))
    return 1.0 / a, float(theta[1])


def reliability(hists: list[tuple[np.ndarray, float, float]], bins: int = 20) -> dict[str, list[float]]:
    """Reliability diagram of ``sigmoid(z / T + b)`` over histograms ``[(hist, T, b), ...]`` (each with its own
    recalibration: the held-out folds of a cross-validation), in ``bins`` equal bins of the probability:
    per bin the mean predicted probability, the observed frequency of the truth and the voxel count (bins without
    voxels are left out). ``ece``: the expected calibration error, ``sum_bins n |frequency - confidence| / N``."""
    n, n_p, n_y = np.zeros(bins), np.zeros(bins), np.zeros(bins)
    for hist, T, b in hists:
        p = expit(CENTRES / T + b)
        which = np.minimum((p * bins).astype(int), bins - 1)
        total = hist.sum(0)
        n += np.bincount(which, weights=total, minlength=bins)
        n_p += np.bincount(which, weights=total * p, minlength=bins)
        n_y += np.bincount(which, weights=hist[1], minlength=bins)
    seen = n > 0
    confidence, frequency = n_p[seen] / n[seen], n_y[seen] / n[seen]
    ece = float((n[seen] * np.abs(frequency - confidence)).sum() / max(n.sum(), 1.0))
    return {"confidence": confidence.tolist(), "frequency": frequency.tolist(), "voxels": n[seen].tolist(),
            "ece": ece}
