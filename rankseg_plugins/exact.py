"""Exact expected Dice and IoU under independent Bernoulli labels, and the exactly optimal mask (``solver="exact"``).

Model. Labels ``Y_i ~ Bernoulli(p_i)`` independent, ``X = sum_i Y_i``,
``G(t) = E[t^X] = prod_j (1 - p_j + p_j t)``. For ``a > 0``, ``E[1/(a + X)] = int_0^1 t^(a-1) G(t) dt``; with
``t = e^-u`` this is ``int_0^inf e^(-a u) G(e^-u) du``. For a mask ``A`` with ``|A| = tau``, ``S = sum_{i in A} p_i``
and smoothing ``s >= 0``::

    E[Dice] = 2 int e^-(tau+s+1)u G H_A du + s int e^-(tau+s)u G du,    H_A(t) = sum_{i in A} p_i / (1 - p_i + p_i t)
    E[IoU]  = (S + s) int e^-(tau+s)u G_out du,                         G_out(t) = prod_{j not in A} (1 - p_j + p_j t)

(IoU: ``|A∩Y|`` and ``|Y \\ A|`` are independent, so ``E[(W + s)/(tau + s + Z)] = (S + s) E[1/(tau + s + Z)]``.)
The empty mask scores ``E[s / (s + X)] = 1 - E[X / (s + X)] = 1 - int e^-(s+1)u G H_all du``, which is ``P(X = 0)``
at ``s = 0``: two empty masks score 1 (``0/0 := 1``, the limit ``s -> 0`` and the convention of
``rankseg-eval``). All integrals run over ``u in (0, inf)``.

Quadrature. ``u = e^y`` and the trapezoid rule in ``y`` with step ``h = 1/4`` on ``[log u_min, log u_max]``:
nodes ``u_k``, weights ``h u_k``; about ``4 (log u_max - log u_min)`` nodes: 180 for ``d = 14``, 230 for a 512x512
map, 250 for ``d = 10^7``, the same for every ``tau``.

* Discretisation: every integrand is ``e^-a u`` times a polynomial in ``e^-u`` with non-negative coefficients (the
  label distribution), so it is analytic for ``Re u > 0`` and bounded there by its value at ``Re u``. In ``y`` it is
  analytic in the strip ``|Im y| < pi/2`` with ``int |f(y + ib)| dy <= I / cos b``; the trapezoid error is then
  at most ``2 I / (cos b (exp(2 pi b / h) - 1))`` (Trefethen & Weideman 2014, Thm 5.1): ``1e-15 I`` at
  ``b = pi/2 - 0.04``.
* Truncation: each integrand is at most ``2d + s`` near ``u = 0``, so ``u_min = 1e-16 / (2d + s + 2)`` drops at most
  ``1e-16``; for ``tau + s >= 1`` it is at most ``2 d e^-u`` for ``u >= 1``, so ``u_max = 40 + log(2d + 2)`` drops less.

Bulk sums. ``log G`` and the prefix sums ``H`` need every pixel at every node; instead of ``O(Q d)`` work, pixels with
``0 < p < 1`` are put in geometric bins of ``q = 1 - p`` (``|q - q_c| <= rho q_c``, ``rho = 1/32``) and expanded around
the bin centre ``c = 1 - q_c``: with ``x = 1 - t``, ``D = 1 - c x = q_c + c t``, ``z = hw x / D`` (``|z| <= rho``) and
the moments ``M_k = sum_bin y^k`` of ``y = (p - c) / hw in [-1, 1]``::

    sum_bin log(1 - p x) = M_0 log D - sum_{k=1..K} z^k M_k / k
    sum_bin p / (1 - p x) = M_0 c / D + hw / D^2 sum_{k=1..K} z^(k-1) M_k

The ``log`` series' remainder is at most ``n rho^(K+1) / ((K+1)(1 - rho))`` for ``n`` pixels; ``K`` (10 to 15) keeps it
below ``1e-16``; the second series' remainder moves an expected value by at most about ``rho^K < 1e-15``. That is
``K`` passes over the sorted pixels plus ``O(Q * bins * K)`` work. ``p = 0`` and ``p = 1`` are exact.

Solver. The optimal mask keeps the ``tau`` largest probabilities. For every tie-group boundary ``tau >= 1`` the
bounds ``L(tau) <= E(tau) <= U(tau)`` (Jensen, and ``E[1/(a + Y)] <= 1/(a + m) + var(Y) / (a (a + m)^2)``) cost
``O(d)`` after one sort; only the boundaries with ``U(tau) >= max L`` (a window of about ``sqrt(d)`` pixels on
model-like maps) are evaluated node by node, with prefix sums over the window.

Accuracy (``benchmarks/bench_exact.py --accuracy``). Against enumeration of all ``2^d`` outcomes (``d <= 14``, 1800
curves) the largest error is ``4e-15``; halving ``h`` and widening the range changes 512x512 values by ``2e-16``;
Monte-Carlo means agree within one standard error up to ``d = 10^7``. Expected values within ``1e-13`` of the
maximum count as equal and the smaller mask wins.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

from . import host
from .options import Options
from .validation import probability_stats

_RHO = 1.0 / 32.0  # bin half width over bin centre, in q = 1 - p
_BETA = (1.0 + _RHO) / (1.0 - _RHO)  # ratio of consecutive bin edges
_STEP = 0.25  # trapezoid step in y = log u
_TRUNC = 1e-16  # bound on each truncation error
_TIE_TOL = 1e-13  # expected values this close to the maximum count as equal
_CHUNK = 1 << 18  # pixels per block of a pass over a row
_MOMENT_CHUNK = 1 << 14  # pixels per block of the K powers y^k (kept in cache)
_BLOCK = 256  # sizes per block of the window search (a divisor of _CHUNK)
_WINDOW_ENTRIES = 1 << 18  # (pixels x nodes) per block of the window


class _Nodes(NamedTuple):
    """Trapezoid nodes ``u`` and weights ``w`` in ``u``, with ``t = e^-u`` and ``x = 1 - t``."""

    u: torch.Tensor
    w: torch.Tensor
    t: torch.Tensor
    x: torch.Tensor


class _Moments(NamedTuple):
    """Non-empty bins of a sorted run of pixels: centre ``qc`` and half width ``hw`` in ``q = 1 - p``, and
    ``M[k] = sum y^k`` for ``k = 0..K``, shape ``(K + 1, bins)``."""

    qc: torch.Tensor
    hw: torch.Tensor
    M: torch.Tensor


def _nodes(d: int, s: float, device: torch.device) -> _Nodes:
    """Nodes ``u_k = exp(y_0 + k h)`` covering ``[1e-16 / (2d + s + 2), 40 + log(2d + 2)]``, weights ``h u_k``."""
    lo = math.log(_TRUNC / (2.0 * d + s + 2.0))
    hi = math.log(40.0 + math.log(2.0 * d + 2.0))
    y = lo + _STEP * torch.arange(math.ceil((hi - lo) / _STEP) + 1, dtype=torch.float64, device=device)
    u = y.exp()
    return _Nodes(u, _STEP * u, torch.exp(-u), -torch.expm1(-u))


def _order(n: int) -> int:
    """Smallest ``K`` with ``n rho^(K+1) / ((K+1)(1 - rho)) <= 1e-16`` (remainder of the ``log`` series)."""
    K = 1
    while n * _RHO ** (K + 1) / ((K + 1) * (1.0 - _RHO)) > _TRUNC:
        K += 1
    return K


def _edges(device: torch.device) -> torch.Tensor:
    """Ascending bin edges ``beta^-m`` of ``q = 1 - p``, down past ``2^-54`` (below any float64 ``1 - p > 0``)."""
    m = math.ceil(54.0 * math.log(2.0) / math.log(_BETA))
    return _BETA ** -torch.arange(m, -1, -1, dtype=torch.float64, device=device)


def _moments(p: torch.Tensor, K: int) -> _Moments:
    """Moments ``M_k = sum y^k`` (``k <= K``) per bin of ``p``: 1-D float64, descending, all in ``(0, 1)``.

    Bin ``i`` holds ``edges[i-1] < q <= edges[i]``; ``y = (q_c - q) / hw = (p - c) / hw``. Sorted input makes the
    bins contiguous runs, summed slice by slice (pairwise summation) in blocks of ``_MOMENT_CHUNK`` pixels.
    """
    edges = _edges(p.device)
    ends = sum(torch.searchsorted(1.0 - pc, edges, right=True) for pc in p.split(_CHUNK))
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])
    nz = (ends > starts).nonzero().squeeze(1)
    qc, hw = (edges[nz] + edges[nz - 1]) / 2, (edges[nz] - edges[nz - 1]) / 2
    M = p.new_zeros(K + 1, nz.numel())
    M[0] = (ends - starts)[nz].double()
    bounds = list(zip(starts[nz].tolist(), ends[nz].tolist()))
    j = 0
    for a in range(0, p.numel(), _MOMENT_CHUNK):
        b = min(a + _MOMENT_CHUNK, p.numel())
        pieces = []
        while j < len(bounds) and bounds[j][0] < b:
            pieces.append((j, max(bounds[j][0], a) - a, min(bounds[j][1], b) - a))
            if bounds[j][1] > b:
                break
            j += 1
        lengths = torch.tensor([hi - lo for _, lo, hi in pieces], device=p.device)
        ids = torch.tensor([i for i, _, _ in pieces], device=p.device)
        Y = p.new_empty(K, b - a)
        q = 1.0 - p[a:b]
        torch.div(torch.repeat_interleave(qc[ids], lengths) - q, torch.repeat_interleave(hw[ids], lengths), out=Y[0])
        for k in range(1, K):
            torch.mul(Y[k - 1], Y[0], out=Y[k])
        M[1:].index_add_(1, ids, torch.stack([Y[:, lo:hi].sum(1) for _, lo, hi in pieces], 1))
    return _Moments(qc, hw, M)


def _segment_sums(nodes: _Nodes, mom: _Moments) -> tuple[torch.Tensor, torch.Tensor]:
    """Per segment and node ``(segments, Q)``: ``sum log(1 - p x)`` and ``sum p / (1 - p x)`` (series in the module
    docstring, as products of the powers ``z^k`` with the moments)."""
    qc, hw = mom.qc[:, None], mom.hw[:, None]
    c = 1.0 - qc
    D = qc + c * nodes.t
    cx = c * nodes.x
    log_D = torch.where(cx <= 0.5, torch.log1p(-cx), torch.log(D))
    z = hw * nodes.x / D
    K = mom.M.shape[0] - 1
    Z = z[..., None].expand(*z.shape, K).cumprod(-1)  # z^1 .. z^K
    k = torch.arange(1, K + 1, dtype=z.dtype, device=z.device)
    log_series = torch.einsum("bqk,kb->bq", Z, mom.M[1:] / k[:, None])
    f_series = torch.einsum("bqk,kb->bq", Z[..., :-1], mom.M[2:]) + mom.M[1][:, None]
    n = mom.M[0][:, None]
    return n * log_D - log_series, (n * c + hw * f_series / D) / D


def _run_sums(nodes: _Nodes, p: torch.Tensor, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum_i log(1 - p_i x)`` and ``sum_i p_i / (1 - p_i x)`` at every node ``(Q,)`` for a descending run ``p``.

    ``p = 1`` contributes ``-u`` and ``1/t`` exactly, ``p = 0`` nothing, the rest the binned series.
    """
    n1, n_pos = _count_down(p, lambda v: v >= 1.0), _count_down(p, lambda v: v > 0.0)
    log_sum, f_sum = -n1 * nodes.u, n1 / nodes.t
    if n_pos > n1:
        log_bins, f_bins = _segment_sums(nodes, _moments(p[n1:n_pos], K))
        log_sum, f_sum = log_sum + log_bins.sum(0), f_sum + f_bins.sum(0)
    return log_sum, f_sum


def _count_down(p: torch.Tensor, keep: Callable[[float], bool]) -> int:
    """Length of the leading run of the descending ``p`` whose values satisfy the monotone test ``keep`` (bisection)."""
    lo, hi = 0, p.numel()
    while lo < hi:
        mid = (lo + hi) // 2
        if keep(p[mid].item()):
            lo = mid + 1
        else:
            hi = mid
    return lo


def _dice(nodes: _Nodes, log_G: torch.Tensor, tau: torch.Tensor, H: torch.Tensor, s: float) -> torch.Tensor:
    """``E[Dice] = 2 int e^-(tau+s+1)u G H du + s int e^-(tau+s)u G du``, ``tau >= 1``; ``tau (n, 1)``, ``H (n, Q)``."""
    e = torch.exp(log_G - (tau + s) * nodes.u)
    value = 2.0 * (e * nodes.t * H) @ nodes.w
    return value + s * (e @ nodes.w) if s > 0 else value


def _iou(nodes: _Nodes, log_G_out: torch.Tensor, tau: torch.Tensor, S: torch.Tensor, s: float) -> torch.Tensor:
    """``E[IoU] = (S + s) int e^-(tau+s)u G_out du`` for ``tau >= 1``; ``log_G_out (n, Q)``, ``tau, S (n,)``."""
    return (S + s) * (torch.exp(log_G_out - (tau[:, None] + s) * nodes.u) @ nodes.w)


def _empty(nodes: _Nodes, log_G: torch.Tensor, H_all: torch.Tensor, s: float) -> float:
    """Empty mask: ``E[s / (s + X)] = 1 - int e^-(s+1)u G H_all du`` (``P(X = 0)`` at ``s = 0``)."""
    return 1.0 - (torch.exp(log_G - (s + 1.0) * nodes.u) * H_all @ nodes.w).item()


def _window_values(
    p: torch.Tensor, metric: str, s: float, lo: int, hi: int, boundaries_only: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact expected metric of the top-``tau`` masks of the descending ``p`` for ``tau = 0`` and ``lo <= tau <= hi``.

    Pixels before ``lo`` (and ``log G``) go through the binned moments; pixels ``lo..hi-1`` are added one at a
    time at every node (prefix sums). With ``boundaries_only`` only ``tau`` that do not split a tie group are
    returned. Returns ``(tau, value)``, both 1-D, ``tau`` ascending and starting with 0.
    """
    d = p.numel()
    nodes = _nodes(d, s, p.device)
    K = _order(d)
    log_in, f_in = _run_sums(nodes, p[:lo], K)
    log_out, f_out = _run_sums(nodes, p[lo:], K)
    log_G = log_in + log_out
    taus = [torch.zeros(1, dtype=torch.int64, device=p.device)]
    values = [p.new_full((1,), _empty(nodes, log_G, f_in + f_out, s))]
    if metric == "dice":
        base = f_in  # H at tau = lo
    else:
        base, S_base = log_out, p[:lo].sum()  # log G_out and S at tau = lo
    if lo >= 1:
        tau = torch.tensor([lo], dtype=torch.int64, device=p.device)
        taus.append(tau)
        if metric == "dice":
            values.append(_dice(nodes, log_G, tau[:, None].double(), base[None], s))
        else:
            values.append(_iou(nodes, base[None], tau.double(), S_base[None], s))
    rows = max(1, _WINDOW_ENTRIES // nodes.u.numel())
    for a in range(lo, hi, rows):
        pw = p[a : min(a + rows, hi)][:, None]
        D = (1.0 - pw) + pw * nodes.t  # 1 - p x without cancellation
        tau = torch.arange(a + 1, a + 1 + pw.shape[0], device=p.device)
        if boundaries_only:
            nxt = p[a + 1 : a + 1 + pw.shape[0]]
            keep = torch.ones_like(tau, dtype=torch.bool)
            keep[: nxt.numel()] = pw[: nxt.numel(), 0] > nxt
        else:
            keep = slice(None)
        if metric == "dice":
            H = base + torch.cumsum(pw / D, 0)
            base = H[-1]
            values.append(_dice(nodes, log_G, tau[keep, None].double(), H[keep], s))
        else:
            px = pw * nodes.x
            log_out = base - torch.cumsum(torch.where(px <= 0.5, torch.log1p(-px), torch.log(D)), 0)
            S = S_base + torch.cumsum(pw[:, 0], 0)
            base, S_base = log_out[-1], S[-1]
            values.append(_iou(nodes, log_out[keep], tau[keep].double(), S[keep], s))
        taus.append(tau[keep])
    return torch.cat(taus), torch.cat(values)


def _bounds(
    tau: torch.Tensor, S: torch.Tensor, S2: torch.Tensor, mu: float, var: float, metric: str, s: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``L(tau) <= E[metric] <= U(tau)`` for top-``tau`` masks, ``tau >= 1``; ``var = sum_j p_j (1 - p_j)``.

    ``S2`` is the prefix sum ``sum_{i<=tau} p_i^2`` (Dice) or ``sum_{i<=tau} p_i (1 - p_i)`` (IoU). Jensen gives
    ``E[1/(a + Y)] >= 1/(a + E Y)``; expanding ``1/(a + Y)`` around ``m = E Y`` to second order with ``a + Y >= a``
    gives ``E[1/(a + Y)] <= 1/(a + m) + var(Y) / (a (a + m)^2)``. Dice's term for pixel ``i`` has ``a = tau + s + 1``,
    ``Y = X - Y_i`` and ``1/(A + 1 - p_i) <= 1/(A + 1) + p_i / (A (A + 1))``. With ``A = tau + s + mu``::

        Dice:  L = 2 S/(A+1) + s/A
               U = 2 [S/(A+1) + S2/(A (A+1)) + S var/((tau+s+1) A^2)] + s [1/A + var/((tau+s) A^2)]
        IoU:   B = tau + s + mu - S,  L = (S+s)/B,  U = (S+s) [1/B + (var - S2)/((tau+s) B^2)]
    """
    if metric == "dice":
        A = tau + s + mu
        L = 2.0 * S / (A + 1.0) + s / A
        U = 2.0 * (S / (A + 1.0) + S2 / (A * (A + 1.0)) + S * var / ((tau + s + 1.0) * A * A)) + s * (
            1.0 / A + var / ((tau + s) * A * A)
        )
        return L, U
    B = tau + s + (mu - S).clamp_min(0.0)
    L = (S + s) / B
    return L, (S + s) * (1.0 / B + (var - S2).clamp_min(0.0) / ((tau + s) * B * B))


def _window(p: torch.Tensor, metric: str, s: float) -> tuple[int, int]:
    """Smallest and largest tie-group boundary ``tau >= 1`` of the descending ``p`` with ``U(tau) >= max L``.

    Every optimal ``tau >= 1`` lies in between. ``U`` grows with ``S`` (and with ``S2`` for Dice, falls for IoU) and
    falls with ``tau``, so a block of ``_BLOCK`` sizes ``(tau_a, tau_b]`` is bounded by ``U`` at ``tau_a + 1`` with the
    block end's ``S``: one pass of block sums, then ``L`` and ``U`` pixel by pixel only in blocks that may reach
    ``max L`` (first bounded below by ``L`` at the block ends that are tie-group boundaries).
    """
    d = p.numel()
    sums = torch.cat([_block_sums(pc) for pc in p.split(_CHUNK)], 1)
    S_end, Q_end = sums[0].cumsum(0), sums[1].cumsum(0)  # prefix sums of p and p^2 at block ends
    S_start, Q_start = S_end - sums[0], Q_end - sums[1]
    mu = S_end[-1].item()
    var = mu - Q_end[-1].item()
    tau_a = torch.arange(0, d, _BLOCK, dtype=torch.float64, device=p.device)
    tau_b = (tau_a + _BLOCK).clamp_max(d)
    if metric == "dice":
        L_end, _ = _bounds(tau_b, S_end, Q_end, mu, var, metric, s)
        _, U_block = _bounds(tau_a + 1.0, S_end, Q_end, mu, var, metric, s)
    else:
        L_end, _ = _bounds(tau_b, S_end, S_end - Q_end, mu, var, metric, s)
        _, U_block = _bounds(tau_a + 1.0, S_end, S_start - Q_start, mu, var, metric, s)
    ends = tau_b.long()
    at_boundary = torch.ones_like(L_end, dtype=torch.bool)
    at_boundary[:-1] = p[ends[:-1] - 1] > p[ends[:-1]]
    best = L_end[at_boundary].max().item() if at_boundary.any() else 0.0
    blocks = (U_block >= best - max(1e-9 * best, 2.0 * _TIE_TOL)).nonzero().squeeze(1).tolist()
    runs = []  # contiguous runs of candidate blocks, as pixel ranges
    for j in blocks:
        if runs and runs[-1][1] == j * _BLOCK:
            runs[-1][1] = min((j + 1) * _BLOCK, d)
        else:
            runs.append([j * _BLOCK, min((j + 1) * _BLOCK, d), S_start[j], Q_start[j]])
    found = []
    for a, b, S0, Q0 in runs:
        pc = p[a:b]
        S, Q = S0 + torch.cumsum(pc, 0), Q0 + torch.cumsum(pc * pc, 0)
        tau = torch.arange(a + 1, b + 1, dtype=torch.float64, device=p.device)
        L, U = _bounds(tau, S, Q if metric == "dice" else S - Q, mu, var, metric, s)
        boundary = torch.ones_like(pc, dtype=torch.bool)
        boundary[: min(b, d - 1) - a] = pc[: min(b, d - 1) - a] > p[a + 1 : min(b + 1, d)]
        if boundary.any():
            best = max(best, L[boundary].max().item())
        found.append((tau, U.masked_fill_(~boundary, -math.inf)))
    level = best - max(1e-9 * best, 2.0 * _TIE_TOL)  # margin for rounding in the prefix sums
    hits = torch.cat([tau[U >= level] for tau, U in found])
    return int(hits[0].item()), int(hits[-1].item())


def _block_sums(v: torch.Tensor) -> torch.Tensor:
    """``(2, blocks)``: sums of ``v`` and of ``v^2`` over consecutive blocks of ``_BLOCK`` (the last may be short)."""
    n = v.numel() // _BLOCK * _BLOCK
    head = torch.stack([v[:n].view(-1, _BLOCK).sum(1), (v[:n] * v[:n]).view(-1, _BLOCK).sum(1)])
    if n == v.numel():
        return head
    tail = v[n:]
    return torch.cat([head, torch.stack([tail.sum(), (tail * tail).sum()])[:, None]], 1)


_INT_OF = {
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
    torch.float32: torch.int32,
    torch.float64: torch.int64,
}


def _sort_desc(x: torch.Tensor) -> torch.Tensor:
    """The values of ``x`` (all ``>= 0``) in descending order, as 1-D float64.

    The IEEE bit patterns of non-negative floats order like their values, and PyTorch sorts integers by radix,
    several times faster than floats: sort the negated bit patterns ascending.
    """
    key = (x.reshape(-1) + 0.0).view(_INT_OF[x.dtype]).neg_()  # a copy; + 0.0 turns -0.0 into +0.0
    return torch.sort(key).values.neg_().view(x.dtype).double()


def _metric_options(metric: str, smooth: float) -> tuple[str, float]:
    """The shared option checks, restricted to the metrics with an expected value here (Dice and IoU)."""
    opts = Options.create(metric=metric, smooth=smooth)
    if opts.metric == "acc":
        raise ValueError("The exact expected metric is defined for metric 'dice' or 'iou'; got 'acc'.")
    return opts.metric, opts.smooth


def exact_thresholds(x: torch.Tensor, metric: str, smooth: float, allow_empty: bool = True) -> torch.Tensor:
    """Thresholds ``(N,)`` float64 such that ``x[n] > t[n]`` is the top-``tau`` mask of row ``n`` with the largest
    exact expected Dice/IoU (module docstring), over ``tau`` that do not split a group of equal probabilities.

    ``x``: ``(N, d)`` probabilities in [0, 1] (already validated), any float dtype, device and layout. Among expected
    values within ``1e-13`` of the best, the smallest mask wins. ``allow_empty=False`` leaves the empty mask out
    (``ignore_empty=True``: a case whose truth is empty is not scored). Empty mask: ``t = max(x[n])``; full mask:
    ``t = min(x[n]) - 1``; otherwise ``t`` is the largest excluded value. Rows are solved one at a time: one sort,
    ``O(d)`` memory.
    """
    out = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    for n in range(x.shape[0]):
        p = _sort_desc(x[n])
        d = p.numel()
        if p[0].item() == 0.0:  # all zero: the empty mask scores 1, any other less (or all score 0)
            out[n] = 0.0
            continue
        lo, hi = _window(p, metric, smooth)
        tau, value = _window_values(p, metric, smooth, lo, hi, boundaries_only=True)
        if not allow_empty:
            tau, value = tau[1:], value[1:]
        best = int(tau[value >= value.max() - _TIE_TOL][0].item())  # tau ascending: the smallest near-best mask
        out[n] = p[0] if best == 0 else (p[-1] - 1.0 if best == d else p[best])
    return out


def expected_metric_curve(
    p: torch.Tensor, metric: str = "dice", smooth: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact expected Dice/IoU of every top-``tau`` mask of one probability vector.

    Returns ``(sorted_p, values)``: ``sorted_p`` is ``p`` flattened, float64, descending; ``values[tau]`` for
    ``tau = 0..d`` is ``E[metric(A_tau, Y)]`` with ``A_tau`` the ``tau`` largest entries (within a tie group any
    choice gives the same value). ``O(Q d)`` time: a measuring tool, not the solver.
    """
    metric, s = _metric_options(metric, smooth)
    probability_stats(p.reshape(1, 1, -1), multiclass=False)
    p = _sort_desc(p.detach().double())
    return p, _window_values(p, metric, s, 0, p.numel(), boundaries_only=False)[1]


def expected_metric(
    probs: torch.Tensor, masks: torch.Tensor, *, metric: str = "dice", smooth: float = 0.0
) -> torch.Tensor:
    """Exact expected Dice/IoU ``(B, C)`` (float64, CPU) of the given masks under labels ``Y ~ Bernoulli(probs)``.

    ``probs``: ``(B, C, *spatial)`` floats in [0, 1]; ``masks``: bool, same shape. ``E[Dice]`` and ``E[IoU]`` as in
    the module docstring, per image and class; ``Dice = (2|A∩Y| + s) / (|A| + |Y| + s)`` with ``0/0 := 1``.
    """
    metric, s = _metric_options(metric, smooth)
    probability_stats(probs, multiclass=False)
    probs = probs.detach().double()
    if not isinstance(masks, torch.Tensor) or masks.dtype != torch.bool:
        raise ValueError("masks must be a bool tensor (e.g. probs > threshold, or one_hot(labels).bool()).")
    if masks.shape != probs.shape:
        raise ValueError(f"masks shape {tuple(masks.shape)} must equal probs shape {tuple(probs.shape)}.")
    B, C = probs.shape[:2]
    out = torch.empty(B, C, dtype=torch.float64)
    for b in range(B):
        for c in range(C):
            out[b, c] = _mask_value(probs[b, c].reshape(-1), masks[b, c].reshape(-1).to(probs.device), metric, s)
    return out


def _mask_value(p: torch.Tensor, mask: torch.Tensor, metric: str, s: float) -> float:
    """Exact expected metric of one mask (module docstring formulas with ``A = mask``)."""
    nodes = _nodes(p.numel(), s, p.device)
    K = _order(p.numel())
    p_in = _sort_desc(p[mask])
    log_in, f_in = _run_sums(nodes, p_in, K)
    log_out, f_out = _run_sums(nodes, _sort_desc(p[~mask]), K)
    if p_in.numel() == 0:
        return _empty(nodes, log_in + log_out, f_in + f_out, s)
    tau = torch.tensor([float(p_in.numel())], dtype=torch.float64, device=p.device)
    if metric == "dice":
        return _dice(nodes, log_in + log_out, tau[:, None], f_in[None], s).item()
    return _iou(nodes, log_out[None], tau, p_in.sum()[None], s).item()


SMALL_P = 1e-3  # in candidate_and_empty, pixels at or below enter through their power sums
_ROW_CHUNK = 1 << 20  # pixels per float64 block of a pass over one row


class _Group(NamedTuple):
    """Pixels of one side of a mask: those above ``SMALL_P`` (descending, float64) and ``P[k] = sum p^k`` (k <= 3)
    of the rest."""

    big: torch.Tensor
    P: torch.Tensor


def _group_sums(nodes: _Nodes, group: _Group) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum log(1 - p x)`` and ``sum p / (1 - p x)`` over a group, at every node: the binned series for the big
    pixels, the first three terms of ``log(1 - y) = -(y + y^2/2 + y^3/3 + ...)`` and of ``p/(1 - p x)`` for the rest."""
    log_big, f_big = _run_sums(nodes, group.big, _order(group.big.numel()))
    _, P1, P2, P3 = group.P.tolist()  # P lives on the host
    x = nodes.x
    return log_big - x * (P1 + x * (P2 / 2.0 + x * P3 / 3.0)), f_big + P1 + x * (P2 + x * P3)


def candidate_and_empty(row: torch.Tensor, theta: torch.Tensor, metric: str, smooth: float) -> tuple[float, float]:
    """Exact expected metric of the mask ``row > theta`` and of the empty mask, for one (image, class) pair.

    This settles the presence decision where cheap bounds cannot (see :mod:`rankseg_plugins.presence`): typically a
    faint class with a few expected foreground pixels. Pixels above ``SMALL_P = 1e-3`` go through the binned series
    of this module (error below ``1e-15``); the others enter through ``P_k = sum p^k``, ``k <= 3``: the dropped terms
    of ``log(1 - p x)`` are at most ``(p x)^4 / (4 (1 - p x))``, so ``log G`` is off by at most
    ``SMALL_P^3 P_1 / (4 (1 - SMALL_P)) = 2.5e-10 P_1`` and ``H`` by at most ``1e-9 P_1`` (``H >= S``): both values
    are exact to a relative ``1e-9 (1 + mu)``. Cost: one pass over the row in float64 blocks, a sort of the pixels
    above ``SMALL_P``, and ``O(nodes x bins)``. The empty mask scores ``P(X = 0) = exp(sum log(1 - p))`` at ``s = 0``
    (summed in log space) and ``E[s / (s + X)]`` otherwise.
    """
    x = row.reshape(-1)
    big: dict[bool, list[torch.Tensor]] = {True: [], False: []}
    P = torch.zeros(2, 4, dtype=torch.float64, device=x.device)  # row 0: inside the mask, row 1: outside
    for chunk in x.split(_ROW_CHUNK):
        inside, values = chunk > theta, chunk.double()
        is_big = values > SMALL_P
        for side, sel in ((True, inside), (False, ~inside)):
            big[side].append(values[sel & is_big])
            v = torch.where(sel & ~is_big, values, 0.0)
            P[1 - side] += torch.stack([(sel & ~is_big).sum().double(), v.sum(), (v * v).sum(), (v * v * v).sum()])
    P = host.to_host(P)
    groups = {side: _Group(_sort_desc(torch.cat(big[side])), P[1 - side]) for side in (True, False)}
    nodes = _nodes(x.numel(), smooth, x.device)
    log_in, f_in = _group_sums(nodes, groups[True])
    log_out, f_out = _group_sums(nodes, groups[False])
    log_G = log_in + log_out
    if smooth == 0.0:
        log_p0 = sum(torch.log1p(-g.big).sum().item() - g.P[1].item() - g.P[2].item() / 2 - g.P[3].item() / 3
                     for g in groups.values())
        empty = math.exp(log_p0)
    else:
        empty = _empty(nodes, log_G, f_in + f_out, smooth)
    tau = float(groups[True].big.numel()) + groups[True].P[0].item()
    if tau == 0:
        return empty, empty
    tau_t = torch.tensor([tau], dtype=torch.float64, device=x.device)
    if metric == "dice":
        return _dice(nodes, log_G, tau_t[:, None], f_in[None], smooth).item(), empty
    S = groups[True].big.sum() + groups[True].P[1]
    return _iou(nodes, log_out[None], tau_t, S[None], smooth).item(), empty


def empty_upper_bound(mu: torch.Tensor, smooth: float, d: int) -> torch.Tensor:
    """Upper bound of the empty mask's ``E[s / (s + X)]`` given only ``mu = E[X]`` (elementwise, float64).

    ``1 - p <= e^-p`` gives ``G(t) <= exp(-mu (1 - t))``, the generating function of a Poisson(``mu``) count:
    ``P(X = 0) <= e^-mu`` at ``s = 0``, and ``s int e^(-s u) exp(-mu (1 - e^-u)) du`` (the same quadrature) for
    ``s > 0``.
    """
    if smooth == 0.0:
        return torch.exp(-mu)
    nodes = _nodes(d, smooth, mu.device)
    integrand = torch.exp(-smooth * nodes.u - mu[..., None] * nodes.x)
    return smooth * (integrand @ nodes.w)
