"""Multiclass (non-overlapping) labels from per-class masks (the multiclass rule of RankSEG-RMA, Wang & Dai 2025).

A class is *eligible* in an image when its decision there is a non-empty mask ``{p_c > theta_c}`` (``theta_c = inf``
marks an empty decision: presence rule, pruning, or an empty optimum).

1. Each eligible class claims the pixels of its mask.
2. A pixel claimed by exactly one class keeps it. ``m_c`` and ``t_c`` are the probability sum and the count of the
   pixels class ``c`` keeps alone.
3. Every other pixel (claimed by several classes or by none) goes to the eligible class with the largest increment

       Dice:  D_c = t_c + mu_c + 1 + s,      score_c(p) = 2 [(m_c + p + s) / (D_c + 1) - (m_c + s) / D_c]
       IoU:   D_c = t_c + mu_c - m_c + s,    score_c(p) = (m_c + p + s) / (D_c - p + 1) - (m_c + s) / D_c

   (the first such class on ties), or, with ``unassigned="void"``, a pixel claimed by none gets ``void_index``. A
   class whose decision is empty never wins a pixel. In an image where no class is eligible, pixels go to their
   argmax class (``void_index`` with ``unassigned="void"``).

Claims are counted in one sum over classes: with ``w_c = [p_c > theta_c]`` and ``K = C + 1``,
``code = sum_c w_c (1 + c K)`` holds the number of claims (``code mod K``) and a single claim's class
(``code div K``). Both scores grow with ``p`` and are positive exactly above ``r_c = (m_c + s) / (D_c + m_c + s)``
(IoU) or ``(m_c + s) / D_c`` (Dice): a pixel where some class has ``p_c > r_c`` goes to the best of those classes,
found from the few (class, pixel) entries of the tiles whose maximum exceeds ``r_c``; only the pixels where every
score is at most 0 need every class's probability. Without tiles (:mod:`rankseg_plugins.tiles`) claims and scores
walk the whole batch.
"""

from __future__ import annotations

import math

import torch

from . import blocks, host, threads
from .blocks import Scratch, image_blocks
from .options import Options
from .tiles import Tiles, TileSet
from .validation import Stats

UNCLAIMED, CONTESTED = -1, -2  # marks in the label map between the steps


def assign(
    probs: torch.Tensor, theta: torch.Tensor, stats: Stats, opts: Options, argmax: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Labels ``(B, *spatial)`` int64 (in ``labels``, a contiguous tensor of that shape, when given) from ``probs``
    ``(B, C, *spatial)`` and per-class thresholds ``theta`` ``(B, C)`` (compute dtype, ``inf`` for empty decisions).
    Classes flagged in ``argmax`` ``(C,)`` (a plan's decision) claim the pixels where they are the argmax class
    instead."""
    B, C = theta.shape
    K = C + 1
    eligible = torch.isfinite(theta)
    d = probs[0, 0].numel()
    out = torch.zeros((B, d), dtype=torch.int64, device=probs.device) if labels is None else labels.view(B, d).zero_()
    by_argmax = argmax is not None and bool(argmax.any())
    if by_argmax:
        eligible = eligible | _argmax_claims(probs, argmax, out)
    tiles = stats.tiles
    claiming = None if tiles is None else tiles.above(theta, torch.isfinite(theta))
    if claiming is None or not tiles.fits(claiming.index.numel()):
        code = out
        m, t = _claims_blocks(probs, theta, out)
    else:
        code, m, t = _claims_tiles(tiles, claiming, theta, out)
    del claiming  # its index may be large: one entry per tile
    if by_argmax:
        _argmax_alone(probs, argmax, code, m, t)
    _code_to_labels(code, K, out)
    del code
    marked = out < 0
    unclaimed = out == UNCLAIMED if opts.unassigned == "void" else None
    scores = _Scores(opts, eligible, stats.mu, m, t, theta.dtype)
    rest = marked if tiles is None else _resolve_positive(tiles, scores, marked, out)
    _resolve_gathered(probs, scores, rest, out)
    if unclaimed is not None:
        out.masked_fill_(unclaimed, opts.void_index)
    out = out.view(B, *probs.shape[2:])
    for b in host.nonzero(~eligible.any(1)).tolist():  # no class competes: argmax (or void) everywhere
        out[b] = opts.void_index if opts.unassigned == "void" else probs[b].argmax(0)
    return out


def _argmax_claims(probs: torch.Tensor, argmax: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Claims of the classes decoded by argmax (``code = 1 + c K`` where such a class ``c`` is the argmax); return
    ``(B, C)``: which of them claim pixels (their mask is not empty)."""
    B, C = probs.shape[:2]
    present = torch.zeros((B, C), dtype=torch.bool, device=probs.device)
    for b in range(B):
        owner = probs[b].max(0).indices.reshape(-1)  # the first maximum, as argmax
        mine = argmax[owner]
        code[b] = torch.where(mine, 1 + (C + 1) * owner, 0)
        present[b] = torch.bincount(owner[mine], minlength=C) > 0
    return present


def _argmax_alone(probs: torch.Tensor, argmax: torch.Tensor, code: torch.Tensor, m: torch.Tensor, t: torch.Tensor) -> None:
    """Add to ``(m, t)`` the pixels that the classes decoded by argmax hold alone."""
    C = probs.shape[1]
    for b in range(probs.shape[0]):
        best, owner = probs[b].max(0)
        owner, best = owner.reshape(-1), best.reshape(-1).double()
        alone = argmax[owner] & (code[b] == 1 + (C + 1) * owner)
        t[b] += torch.bincount(owner[alone], minlength=C).double()
        m[b] += torch.bincount(owner[alone], weights=best[alone], minlength=C)


def _code_to_labels(code: torch.Tensor, K: int, out: torch.Tensor) -> None:
    """``out`` (int64, shaped like ``code``, which may be ``out`` itself): a single claim's class, ``UNCLAIMED`` or
    ``CONTESTED``, from the claims' ``code`` (exact integers, float or int64), in parts of an eighth of a block."""
    flat_code, flat_out = code.view(-1), out.view(-1)

    def convert(s: slice) -> None:
        part = flat_code[s]
        count = torch.fmod(part, K)  # exact for floats too
        label = (part - count).div_(K) if part.is_floating_point() else part.div(K, rounding_mode="floor")
        flat_out[s].copy_(label.masked_fill_(count == 0, UNCLAIMED).masked_fill_(count > 1, CONTESTED))

    n = code.numel()
    threads.map_parts(convert, threads.pieces(n, n, most=threads.share(blocks.BLOCK_ELEMENTS // 8)), n)


def _claims_blocks(probs: torch.Tensor, theta: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 1-2 over every block (a quarter of the usual size: the label map is held too) of the batch: the claims'
    code added into ``out`` ``(B, d)``, and ``(m, t)`` ``(B, C)`` of the pixels the classes with a threshold hold
    alone."""
    B, C = theta.shape
    K = C + 1
    dtype = torch.float32 if C + K * C * (C - 1) // 2 < 2**24 else torch.float64  # exact integer sums
    scratch = Scratch(dtype, probs.device)
    weights = 1.0 + K * torch.arange(C, dtype=dtype, device=probs.device)
    lift = (1,) * (probs.ndim - 2)
    per_row = math.prod(probs.shape[3:])

    def claims(item: tuple[int, slice, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        b, rows, block = item
        w = scratch.take(block.shape)
        torch.gt(block, theta[b].view(C, *lift), out=w)
        code = out[b, rows.start * per_row : rows.stop * per_row]
        code.add_(torch.tensordot(weights, w, dims=1).reshape(-1).long())
        w.mul_((code % K == 1).view(w.shape[1:]).to(dtype))  # the sole claims
        dims = tuple(range(1, w.ndim))
        return w.sum(dims).double(), w.mul_(block).sum(dims).double()

    items = [(b, rows, block) for b in range(B) for rows, block in image_blocks(probs, b, blocks.BLOCK_ELEMENTS // 4)]
    m = torch.zeros((B, C), dtype=torch.float64, device=probs.device)
    t = torch.zeros_like(m)
    for (b, _, _), (alone, mass) in zip(items, threads.map_parts(claims, items, probs.numel())):
        t[b] += alone
        m[b] += mass
    return m, t


def _claims_tiles(
    tiles: Tiles, claiming: TileSet, theta: torch.Tensor, out: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_claims_blocks` from the tiles where some class claims pixels (every claim lies in them), gathered a
    quarter block at a time, twice (so they never take more memory than that); the code (float, exact integers) is
    returned, ``out`` is left as it was."""
    B, C = theta.shape
    K = C + 1
    L = tiles.view.shape[3]
    dtype = torch.float32 if C + K * C * (C - 1) // 2 < 2**24 else torch.float64  # exact integer sums
    code = out.to(dtype).view(-1, L)
    weights = 1.0 + K * torch.arange(C, dtype=dtype, device=out.device)
    flat = theta.flatten()
    scratch = Scratch(dtype, out.device)
    quarter = threads.share(blocks.BLOCK_ELEMENTS // 4)  # a quarter block of scratch: the label map is held too
    for values, pair, tile in tiles.gather_parts(claiming, quarter):
        w = scratch.take(values.shape)
        torch.gt(values, flat.index_select(0, pair)[:, None], out=w)
        code.index_add_(0, tile, w.mul_(weights.index_select(0, pair % C)[:, None]))
    alone = (torch.fmod(code, K) == 1).to(dtype)
    m = torch.zeros(B * C, dtype=torch.float64, device=out.device)
    t = torch.zeros_like(m)
    for values, pair, tile in tiles.gather_parts(claiming, quarter):
        w = scratch.take(values.shape)
        torch.gt(values, flat.index_select(0, pair)[:, None], out=w)
        w.mul_(alone.index_select(0, tile))
        t.index_add_(0, pair, w.sum(1).double())
        m.index_add_(0, pair, w.mul_(values).sum(1).double())
    return code.view(out.shape), m.view(B, C), t.view(B, C)


class _Scores:
    """Increment scores from ``(B, C)`` constants (module docstring), computed in ``dtype`` (the compute dtype)."""

    def __init__(
        self, opts: Options, eligible: torch.Tensor, mu: torch.Tensor, m: torch.Tensor, t: torch.Tensor,
        dtype: torch.dtype,
    ) -> None:
        s = opts.smooth
        self.dtype = dtype
        self.dice = opts.metric == "dice"
        self.eligible = eligible
        if self.dice:  # affine in p: 2 p / (D + 1) + 2 (m + s) (1 / (D + 1) - 1 / D)
            D = t + mu + 1.0 + s
            c0, c1, zero = 2.0 / (D + 1.0), 2.0 * (m + s) * (1.0 / (D + 1.0) - 1.0 / D), (m + s) / D
        else:
            D = t + mu - m + s
            c0, c1, zero = m + s, D, (m + s) / (D + m + s)
        self.c0, self.c1 = c0.to(dtype), c1.to(dtype)
        self.zero = zero.masked_fill(~self.eligible, torch.inf).to(dtype)  # scores are positive above this

    def __call__(self, p: torch.Tensor, c0: torch.Tensor, c1: torch.Tensor) -> torch.Tensor:
        """``score(p)`` with constants broadcast against ``p``."""
        p = p.to(self.dtype)
        if self.dice:
            return p * c0 + c1
        return (p + c0) / (c1 + 1.0 - p) - torch.where(c1 > 0, c0 / c1.clamp_min(1e-300), 0.0)


def _resolve_positive(tiles: Tiles, scores: _Scores, marked: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Give every marked pixel where some eligible class scores above 0 its best such class (first on ties), in
    ``out`` ``(B, d)``; return the marked pixels left, where no class does."""
    B, C, T, L = tiles.view.shape
    found = tiles.above(scores.zero, scores.eligible, within=marked.view(B, T, L).any(-1))
    if not tiles.fits(found.index.numel()):
        return marked
    shift = L.bit_length() - 1  # L is a power of two
    marked_rows = marked.view(B * T, L)
    c0, c1, zero = scores.c0.flatten(), scores.c1.flatten(), scores.zero.flatten()

    def entries(part: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(flat pixel, class, score) of the positive scores in the tiles of ``part``, gathered here
        (``index_select`` throughout: several times faster than indexing with ``[]`` on the CPU)."""
        values, pair, tile = tiles.gather(found.part(part))
        keep = host.nonzero((values > zero.index_select(0, pair)[:, None]) & marked_rows.index_select(0, tile))
        row = keep >> shift
        label = (pair % C).int().index_select(0, row)
        pair = pair.index_select(0, row)
        position = (tile.index_select(0, row) << shift) | (keep & (L - 1))
        return position, label, scores(values.view(-1).index_select(0, keep), c0.index_select(0, pair),
                                       c1.index_select(0, pair))

    n = found.index.numel()
    cut = threads.pieces(n, n * L, most=max(1, threads.share(blocks.BLOCK_ELEMENTS // (8 * L))))
    parts = threads.map_parts(entries, cut, n * L)
    best = torch.full((marked.numel(),), -torch.inf, dtype=scores.dtype, device=out.device)
    for position, _, score in parts:
        best.scatter_reduce_(0, position, score, "amax")
    winner = torch.full((marked.numel(),), C, dtype=torch.int32, device=out.device)
    while parts:  # part by part, each freed once used (the entries are the decode's largest temporary)
        position, label, score = parts.pop()
        winner.scatter_reduce_(0, position, torch.where(score == best.index_select(0, position), label, C), "amin")
    del best
    resolved = (winner < C).view(out.shape)
    torch.where(resolved, winner.view(out.shape), out, out=out)
    return marked & ~resolved


def _resolve_gathered(probs: torch.Tensor, scores: _Scores, marked: torch.Tensor, out: torch.Tensor) -> None:
    """Give every ``marked`` pixel its best eligible class in ``out`` ``(B, d)``: image by image, in spans of an
    eighth of a block (so the marked pixels' positions take little memory), the eligible classes' probabilities at
    a chunk of marked pixels are gathered into an ``(E, n)`` matrix (at most a quarter block), scored, and the first
    maximum over the classes wins."""
    B, C = scores.c0.shape
    eligible = host.to_host(scores.eligible)
    n = threads.share(blocks.BLOCK_ELEMENTS // (4 * C))
    span = max(n, threads.share(blocks.BLOCK_ELEMENTS // 8))
    for b in range(B):
        pixels = probs[b].reshape(C, -1)  # a view for contiguous and channels-last input
        classes = eligible[b].nonzero().flatten().to(probs.device)
        if classes.numel() == 0:
            continue
        c0, c1 = scores.c0[b, classes][:, None], scores.c1[b, classes][:, None]

        def best_class(chunk: torch.Tensor) -> torch.Tensor:
            p = pixels.index_select(1, chunk)  # all classes at once: faster than picking (class, pixel) pairs
            if classes.numel() < C:
                p = p.index_select(0, classes)
            return classes.index_select(0, scores(p, c0, c1).max(0).indices)

        for start in range(0, pixels.shape[1], span):
            idx = host.nonzero(marked[b, start : start + span]) + start
            if idx.numel() == 0:
                continue
            chunks = idx.split(n)
            for chunk, winner in zip(chunks, threads.map_parts(best_class, chunks, idx.numel() * classes.numel())):
                out[b, chunk] = winner
