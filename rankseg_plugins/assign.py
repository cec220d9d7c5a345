"""Multiclass (non-overlapping) output from per-class masks (MATH.md section 2, "Multiclass").

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

from .options import Options


def _increment_scores(P: torch.Tensor, mu: torch.Tensor, m: torch.Tensor, t: torch.Tensor, opts: Options) -> torch.Tensor:
    """Scores ``(C, n)`` of giving each of ``n`` pixels with class probabilities ``P (C, n)`` to each class."""
    s = opts.smooth
    P = P.double()
    m, t, mu = (v.to(P.device, torch.float64)[:, None] for v in (m, t, mu))
    if opts.metric == "dice":
        D = t + mu + 1.0 + s
        return 2.0 * ((m + P + s) / (D + 1.0) - (m + s) / D)
    D = t + mu - m + s
    current = torch.where(D > 0, (m + s) / D.clamp_min(1e-300), torch.zeros_like(D))
    return (m + P + s) / (D - P + 1.0) - current


def assign_image(
    probs: torch.Tensor,
    theta: torch.Tensor,
    S: torch.Tensor,
    tau: torch.Tensor,
    mu: torch.Tensor,
    opts: Options,
) -> torch.Tensor:
    """Label map ``(*spatial)`` int64 for one image.

    ``probs`` is ``(C, *spatial)``; ``theta`` ``(C,)`` the mask thresholds in ``probs``' compute dtype (``inf``
    for pruned classes); ``S``, ``tau``, ``mu`` ``(C,)`` float64 / int64 on the CPU: each mask's probability sum
    and size, and each class's total probability.
    """
    C = probs.shape[0]
    base = C + 1  # a pixel accumulates count + base * (sum of the claiming classes)
    code_dtype = torch.int32 if base * C * C < 2**31 else torch.int64
    code = torch.zeros(probs.shape[1:], dtype=code_dtype, device=probs.device)
    for c in torch.nonzero(tau > 0).flatten().tolist():
        code.add_(probs[c] > theta[c], alpha=1 + base * c)
    count = code % base
    labels = torch.div(code, base, rounding_mode="floor").to(torch.int64).view(-1)
    idx = torch.nonzero(count.view(-1) != 1).flatten()
    if idx.numel() == 0:
        return labels.view(probs.shape[1:])

    P = probs.reshape(C, -1).index_select(1, idx)
    contested = count.view(-1)[idx] > 1
    claims = (P > theta[:, None]) & contested
    m = S - (P * claims).sum(1, dtype=torch.float64).cpu()
    t = tau - claims.sum(1).cpu()
    resolved = _increment_scores(P, mu, m, t, opts).argmax(0)
    if opts.unassigned == "void":
        resolved = torch.where(contested, resolved, torch.full_like(resolved, opts.void_index))
    labels[idx] = resolved
    return labels.view(probs.shape[1:])
