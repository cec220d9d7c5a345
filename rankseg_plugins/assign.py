"""Multiclass (non-overlapping) output from per-class masks (the multiclass rule of RankSEG-RMA, Wang & Dai 2025).

1. Class ``c`` claims the pixels of its mask ``{p_c > theta_c}``.
2. A pixel claimed by exactly one class keeps it. ``m_c`` and ``t_c`` are the probability sum and the count of the
   pixels class ``c`` keeps alone.
3. Every other pixel (claimed by several classes or by none) goes to the class with the largest increment score

       Dice:  D_c = t_c + mu_c + 1 + s,      score_c(p) = 2 [(m_c + p + s) / (D_c + 1) - (m_c + s) / D_c]
       IoU:   D_c = t_c + mu_c - m_c + s,    score_c(p) = (m_c + p + s) / (D_c - p + 1) - (m_c + s) / D_c

   or, with ``unassigned="void"``, a pixel claimed by none gets ``void_index``.
"""

from __future__ import annotations

import torch

from .chunks import chunk_views
from .options import Options

_DENSE_FRACTION = 8  # score whole chunks when at least 1/8 of their pixels need scores
UNCLAIMED, CONTESTED = -1, -2  # marks in the label map between the two passes


def _gather(p: torch.Tensor, idx: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:
    """Each class's probabilities at the flat pixel indices ``idx`` of a chunk ``p (C, *chunk)``."""
    return [row.reshape(-1)[idx].to(dtype) for row in p]


def _best_increment(P: list[torch.Tensor], mu: torch.Tensor, m: torch.Tensor, t: torch.Tensor, opts: Options) -> torch.Tensor:
    """Index of the class with the largest increment score for each pixel (first on ties); ``P[c]`` holds
    class ``c``'s probabilities. A running maximum, so no ``(C, n)`` score matrix; per-class constants in float64.
    """
    s, dice = opts.smooth, opts.metric == "dice"
    label_dtype = torch.int16 if len(P) < 2**15 else torch.int32
    labels = torch.zeros(P[0].shape, dtype=label_dtype, device=P[0].device)
    best = None
    for c, (m_c, t_c, mu_c) in enumerate(zip(m.tolist(), t.tolist(), mu.tolist())):
        if dice:  # affine in p: 2 p / (D + 1) + 2 (m + s) (1 / (D + 1) - 1 / D)
            D = t_c + mu_c + 1.0 + s
            score = P[c] * (2.0 / (D + 1.0)) + 2.0 * (m_c + s) * (1.0 / (D + 1.0) - 1.0 / D)
        else:
            D = t_c + mu_c - m_c + s
            score = (P[c] + m_c + s) / (D + 1.0 - P[c]) - ((m_c + s) / D if D > 0 else 0.0)
        if best is None:
            best = score
            continue
        better = (score > best).to(label_dtype)
        labels += better * (c - labels)  # labels = c where better (arithmetic beats masked_fill on CPU)
        torch.maximum(best, score, out=best)
    return labels.to(torch.int64)


def assign_image(
    probs: torch.Tensor,
    theta: torch.Tensor,
    tau: torch.Tensor,
    mu: torch.Tensor,
    opts: Options,
    out: torch.Tensor,
) -> None:
    """Write the label map of one image into ``out`` ``(*spatial)`` int64.

    ``probs`` is ``(C, *spatial)``; ``theta`` ``(C,)`` the mask thresholds in the compute dtype (``inf`` for
    pruned classes); ``tau`` ``(C,)`` the mask sizes and ``mu`` ``(C,)`` each class's total probability, on the
    CPU. Two passes over spatial chunks: the first writes the pixels one class claims alone, marks the rest
    (``UNCLAIMED``/``CONTESTED``) and sums ``m_c``, ``t_c`` over each class's own pixels; the second resolves
    the marked pixels by increment score.
    """
    C = probs.shape[0]
    active = torch.nonzero(tau > 0).flatten().tolist()
    m = torch.zeros(C, dtype=torch.float64)
    t = torch.zeros(C, dtype=torch.int64)
    parts = chunk_views(probs, dim=1)
    chunks = list(zip(parts, out.split([p.shape[1] for p in parts])))
    for p, lab in chunks:
        _claims(p, theta, active, out=lab)
        flat = lab.view(-1)
        alone = flat >= 0
        owner = flat[alone]
        values = p.reshape(C, -1).gather(0, flat.clamp(min=0)[None])[0][alone].to(theta.dtype)
        m += torch.bincount(owner, weights=values, minlength=C).double().cpu()
        t += torch.bincount(owner, minlength=C).cpu()
    for p, lab in chunks:
        flat = lab.view(-1)
        idx = torch.nonzero(flat < 0).flatten()
        if idx.numel() == 0:
            continue
        unclaimed = flat[idx] == UNCLAIMED
        if idx.numel() * _DENSE_FRACTION >= flat.numel():  # many: scoring every pixel beats gathering
            resolved = _best_increment([row.reshape(-1).to(theta.dtype) for row in p], mu, m, t, opts)[idx]
        else:
            resolved = _best_increment(_gather(p, idx, theta.dtype), mu, m, t, opts)
        if opts.unassigned == "void":
            resolved[unclaimed] = opts.void_index
        flat[idx] = resolved



def _claims(p: torch.Tensor, theta: torch.Tensor, active: list[int], out: torch.Tensor) -> None:
    """For a chunk ``p (C, *chunk)``, write the class claiming each pixel alone, else ``UNCLAIMED``/``CONTESTED``."""
    C = p.shape[0]
    shift = C.bit_length()  # each pixel accumulates count + (sum of the claiming classes) << shift
    top = (C * C) << shift
    dtype = torch.uint8 if top < 2**8 else torch.int16 if top < 2**15 else torch.int32 if top < 2**31 else torch.int64
    code = torch.zeros(p.shape[1:], dtype=dtype, device=p.device)
    for c in active:
        code.add_((p[c] > theta[c]).view(torch.uint8), alpha=1 + (c << shift))
    count = code & ((1 << shift) - 1)
    out.copy_(code >> shift)
    out.masked_fill_(count == 0, UNCLAIMED)
    out.masked_fill_(count > 1, CONTESTED)
