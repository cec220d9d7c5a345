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
(``code div K``), exact in float32 while ``code < 2^24`` (else float64). With tiles (:mod:`rankseg_plugins.tiles`)
only the tiles where a class can claim are visited. Both scores grow with ``p`` and are at least
``LB = max_c score_c(0)`` at every pixel, so a class can win a pixel of a tile only if its score at the tile's
maximum reaches ``LB``, and at a pixel only if its score there does: step 3 scores just those few (class, pixel)
entries and keeps each pixel's best.
Without tiles (or when those pairs are many), each eligible class's probabilities at the marked pixels are
gathered and scored in turn.
"""

from __future__ import annotations

import torch

from . import blocks, host
from .blocks import Scratch, image_blocks
from .options import Options
from .tiles import Rows, Tiles
from .validation import Stats

UNCLAIMED, CONTESTED = -1, -2  # marks in the label map between the steps


def assign(probs: torch.Tensor, theta: torch.Tensor, stats: Stats, opts: Options) -> torch.Tensor:
    """Labels ``(B, *spatial)`` int64 from ``probs`` ``(B, C, *spatial)`` and per-class thresholds ``theta`` ``(B, C)``
    (compute dtype, ``inf`` for empty decisions)."""
    B, C = theta.shape
    eligible = torch.isfinite(theta)
    code_dtype = torch.float32 if C + (C + 1) * C * (C - 1) // 2 < 2**24 else torch.float64
    scratch = Scratch(code_dtype, probs.device)
    tiles = stats.tiles
    rows = None if tiles is None else tiles.gather(tiles.above(theta, eligible))
    code, m, t = _claims(probs, theta, rows, scratch)
    K = C + 1
    count = code % K
    out = torch.where(count == 1, code // K, torch.where(count == 0, UNCLAIMED, CONTESTED))
    out = out.view(B, *probs.shape[2:])
    scores = _Scores(opts, theta, stats.mu, m, t, theta.dtype)
    marked = out.view(B, -1) < 0
    unclaimed = out.view(B, -1) == UNCLAIMED
    resolved = None
    if tiles is not None:
        resolved = _resolve_tiles(tiles, scores, marked)
    if resolved is None:
        resolved = _resolve_gathered(probs, scores, marked)
    flat = out.view(B, -1)
    torch.where(marked, resolved, flat, out=flat)
    if opts.unassigned == "void":
        flat.masked_fill_(unclaimed, opts.void_index)
    none = ~host.to_host(eligible.any(1))
    for b in none.nonzero().flatten().tolist():  # no class competes: argmax (or void) everywhere
        out[b] = opts.void_index if opts.unassigned == "void" else probs[b].argmax(0)
    return out


def _claims(
    probs: torch.Tensor, theta: torch.Tensor, rows: Rows | None, scratch: Scratch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``code`` ``(B, d)`` int64 (``sum_c [p_c > theta_c] (1 + c K)`` at every pixel, module docstring) and ``(m, t)``
    ``(B, C)`` float64: the probability sum and count of the pixels each class holds alone."""
    B, C = theta.shape
    K = C + 1
    weights = 1.0 + K * torch.arange(C, dtype=scratch.dtype, device=theta.device)
    code = torch.zeros((B, probs[0, 0].numel()), dtype=scratch.dtype, device=probs.device)
    m = torch.zeros(B * C, dtype=torch.float64, device=probs.device)
    t = torch.zeros_like(m)
    if rows is not None:  # only the tiles where some class can claim: sum the codes, then count the sole claims
        L = rows.values.shape[1]
        step = max(1, blocks.BLOCK_ELEMENTS // L)
        parts = [slice(i, i + step) for i in range(0, rows.values.shape[0], step)]
        flat_theta, tiles_view = theta.flatten(), code.view(-1, L)
        for part in parts:
            values, pair, tile = rows.values[part], rows.pair[part], rows.tile[part]
            w = scratch.take(values.shape)
            torch.gt(values, flat_theta[pair][:, None], out=w)
            tiles_view.index_add_(0, tile, w.mul_(weights[pair % C][:, None]))
        code = code.long()
        alone = (code.view(-1, L) % K == 1).to(scratch.dtype)
        for part in parts:
            values, pair, tile = rows.values[part], rows.pair[part], rows.tile[part]
            w = scratch.take(values.shape)
            torch.gt(values, flat_theta[pair][:, None], out=w)
            w.mul_(alone.index_select(0, tile))
            t.index_add_(0, pair, w.sum(1).double())
            m.index_add_(0, pair, w.mul_(values).sum(1).double())
        return code, m.view(B, C), t.view(B, C)
    lift = (1,) * (probs.ndim - 2)
    for b in range(B):
        start = 0
        for _, block in image_blocks(probs, b):
            w = scratch.take(block.shape)
            torch.gt(block, theta[b].view(C, *lift), out=w)
            block_code = torch.tensordot(weights, w, dims=1)
            n = block_code.numel()
            code[b, start : start + n] = block_code.reshape(-1)
            start += n
            w.mul_((block_code.long() % K == 1).to(w.dtype))  # the sole claims
            dims = tuple(range(1, w.ndim))
            t[b * C : (b + 1) * C] += w.sum(dims).double()
            m[b * C : (b + 1) * C] += w.mul_(block).sum(dims).double()
    return code.long(), m.view(B, C), t.view(B, C)


class _Scores:
    """Increment scores from ``(B, C)`` constants (module docstring), computed in ``dtype`` (the compute dtype);
    ineligible classes score ``-inf``."""

    def __init__(
        self, opts: Options, theta: torch.Tensor, mu: torch.Tensor, m: torch.Tensor, t: torch.Tensor, dtype: torch.dtype
    ) -> None:
        s = opts.smooth
        self.dtype = dtype
        self.dice = opts.metric == "dice"
        self.theta, self.eligible = theta, torch.isfinite(theta)
        eligible = self.eligible
        if self.dice:  # affine in p: 2 p / (D + 1) + 2 (m + s) (1 / (D + 1) - 1 / D)
            D = t + mu + 1.0 + s
            c0, c1 = 2.0 / (D + 1.0), 2.0 * (m + s) * (1.0 / (D + 1.0) - 1.0 / D)
        else:
            D = t + mu - m + s
            c0, c1 = m + s, D
        self.c0, self.c1 = c0.to(dtype), c1.to(dtype)
        self.lower = self(torch.zeros_like(mu), self.c0, self.c1).masked_fill(~eligible, -torch.inf).amax(1)

    def __call__(self, p: torch.Tensor, c0: torch.Tensor, c1: torch.Tensor) -> torch.Tensor:
        """``score(p)`` with constants broadcast against ``p``."""
        p = p.to(self.dtype)
        if self.dice:
            return p * c0 + c1
        return (p + c0) / (c1 + 1.0 - p) - torch.where(c1 > 0, c0 / c1.clamp_min(1e-300), 0.0)


def _resolve_tiles(tiles: Tiles, scores: _Scores, marked: torch.Tensor) -> torch.Tensor | None:
    """Best eligible class at every marked pixel ``(B, d)`` (first class on ties; other pixels get junk).

    Only the (class, tile) pairs whose score at the tile maximum reaches ``LB`` are gathered, and of them only the
    (class, marked pixel) entries scoring at least ``LB``: a few per pixel. ``None`` if those pairs are too many
    to gather.
    """
    B, C, T, L = tiles.view.shape
    reach = scores(tiles.max, scores.c0[..., None], scores.c1[..., None]) >= scores.lower[:, None, None]
    rows = tiles.gather(tiles.where(reach & scores.eligible[..., None] & marked.view(B, 1, T, L).any(-1)))
    if rows is None or rows.values.numel() == 0:
        return rows and torch.zeros(marked.shape, dtype=torch.int64, device=marked.device)
    marked_rows = marked.view(B * T, L)
    c0, c1 = scores.c0.flatten(), scores.c1.flatten()
    step = max(1, blocks.BLOCK_ELEMENTS // L)
    position, label, score = [], [], []
    for i in range(0, rows.values.shape[0], step):
        values, pair, tile = rows.values[i : i + step], rows.pair[i : i + step], rows.tile[i : i + step]
        s = scores(values, c0[pair][:, None], c1[pair][:, None])
        keep = host.nonzero((s >= scores.lower[pair // C][:, None]) & marked_rows.index_select(0, tile))
        row, col = keep // L, keep % L
        position.append(tile[row] * L + col)
        label.append(pair[row] % C)
        score.append(s.view(-1)[keep])
    position, label, score = torch.cat(position), torch.cat(label), torch.cat(score)
    best = torch.full((B * T * L,), -torch.inf, dtype=scores.dtype, device=marked.device)
    best.scatter_reduce_(0, position, score, "amax")
    winner = torch.where(score == best[position], label, C)
    out = torch.full((B * T * L,), C, dtype=torch.int64, device=marked.device)
    return out.scatter_reduce_(0, position, winner, "amin").view(B, T * L)


def _resolve_gathered(probs: torch.Tensor, scores: _Scores, marked: torch.Tensor) -> torch.Tensor:
    """Best eligible class at every marked pixel: each class's probabilities at the marked pixels are gathered and
    scored in turn, keeping a running best (first class on ties; no ``(C, pixels)`` score matrix, and no argmax over
    a short class dim, which torch runs slowly)."""
    B, C = scores.c0.shape
    label = torch.zeros(marked.shape, dtype=torch.int64, device=marked.device)
    eligible = host.to_host(scores.eligible)
    step = blocks.BLOCK_ELEMENTS
    for b in range(B):
        pixels = probs[b].reshape(C, -1)  # a view for contiguous and channels-last input
        idx = host.nonzero(marked[b])
        classes = eligible[b].nonzero().flatten().tolist()
        for i in range(0, idx.numel(), step):
            chunk = idx[i : i + step]
            best = torch.full(chunk.shape, -torch.inf, dtype=scores.dtype, device=chunk.device)
            winner = torch.zeros_like(chunk)
            for c in classes:
                score = scores(pixels[c].take(chunk), scores.c0[b, c], scores.c1[b, c])
                better = score > best
                winner.masked_fill_(better, c)
                torch.maximum(best, score, out=best)
            label[b, chunk] = winner
    return label
