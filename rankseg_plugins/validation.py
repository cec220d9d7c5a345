"""Input checks shared by every solver, fused with the one pass of statistics they all need.

:func:`probability_stats` rejects what is not a ``(B, C, *spatial)`` floating tensor of probabilities before any
work is spent, and returns each pair's total probability ``mu`` and largest probability ``pmax``.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from . import host, threads
from .blocks import image_blocks, spatial_dims
from .tiles import Tiles

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_SAMPLE_PIXELS = 4096


class Stats(NamedTuple):
    """Per (image, class): ``mu = sum_i p_i`` and ``pmax = max_i p_i``, both ``(B, C)`` float64 on the input's device,
    and the input's :class:`~rankseg_plugins.tiles.Tiles` with their maxima (``None`` if it has none)."""

    mu: torch.Tensor
    pmax: torch.Tensor
    tiles: Tiles | None


def check_tensor(probs: object) -> torch.Tensor:
    """Raise unless ``probs`` is a non-empty floating tensor of shape ``(B, C, *spatial)``; warn on one spatial dim."""
    if not isinstance(probs, torch.Tensor):
        raise TypeError(
            f"probs must be a torch.Tensor of shape (B, C, *spatial); got {type(probs).__name__}. "
            "Convert with torch.as_tensor(...)."
        )
    if probs.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"probs must be a floating tensor of probabilities (float16/bfloat16/float32/float64); got {probs.dtype}. "
            "Pass the softmax/sigmoid output of the model, not labels."
        )
    if probs.ndim < 3:
        raise ValueError(
            f"probs must have shape (B, C, *spatial) with at least one spatial dim; got shape {tuple(probs.shape)}. "
            "For a single image of shape (C, H, W) pass probs[None]."
        )
    if probs.numel() == 0:
        raise ValueError(f"probs is empty (shape {tuple(probs.shape)}): every dim must be at least 1.")
    if probs.ndim == 3 and probs.shape[1] > 1:
        warnings.warn(
            f"probs of shape {tuple(probs.shape)} is read as (B, C, L): {probs.shape[0]} image(s) of "
            f"{probs.shape[1]} classes with one spatial dim. If it is one image (C, H, W), pass probs[None].",
            UserWarning,
            stacklevel=4,
        )
    return probs


def probability_stats(probs: torch.Tensor, multiclass: bool) -> Stats:
    """Validate ``probs`` ``(B, C, *spatial)`` and return its :class:`Stats` (one pass, one host sync).

    Per block: a sum and a max per class (per tile when the input has tiles) and the block's minimum.

    Raises ``TypeError`` for non-tensors and non-floating dtypes, ``ValueError`` for a wrong rank, empty input,
    NaN/inf, or values outside [0, 1] (usually logits). In multiclass mode with ``C > 1`` it warns when the class
    probabilities of sampled pixels do not sum to 1 (sigmoid outputs passed to a softmax decoder).
    """
    check_tensor(probs)
    dtype = torch.float64 if probs.dtype == torch.float64 else torch.float32
    B, C = probs.shape[:2]
    tiles = Tiles.of(probs)
    mu = torch.zeros((B, C), dtype=torch.float64, device=probs.device)
    pmax = torch.full_like(mu, -torch.inf)
    pmin = torch.full((), torch.inf, dtype=torch.float64, device=probs.device)
    view = probs if tiles is None else tiles.view

    def block_stats(item: tuple[int, slice]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        b, rows = item
        block = view[b, :, rows]
        if tiles is not None:
            tiles.max[b, :, rows] = block.amax(-1)
        peak = None if tiles is not None else block.amax(spatial_dims(block))
        return block.sum(spatial_dims(block), dtype=dtype), peak, block.amin()

    with torch.no_grad():
        items = [(b, rows) for b in range(B) for rows, _ in image_blocks(view, b)]
        for (b, _), (total, peak, low) in zip(items, threads.map_parts(block_stats, items, probs.numel())):
            mu[b] += total
            if peak is not None:
                pmax[b] = torch.maximum(pmax[b], peak.double())
            pmin = torch.minimum(pmin, low.double())
        if tiles is not None:
            pmax = tiles.seal().double()
        summary = host.to_host(torch.stack([mu.sum(), pmin, pmax.max()]))
    total, lo, hi = summary.tolist()
    if not (math.isfinite(total) and math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("probs contains NaN or inf: check the model output (e.g. for a diverged network).")
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"probs must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]: this looks like logits. "
            "Apply softmax over the class dim (multiclass) or sigmoid (multilabel) first."
        )
    if multiclass and C > 1:
        _warn_if_not_normalised(probs)
    return Stats(mu, pmax, tiles)


def _warn_if_not_normalised(probs: torch.Tensor) -> None:
    """Warn when sampled pixels' class probabilities do not sum to 1 (checks a strided grid, not every pixel)."""
    sizes = probs.shape[2:]
    per_dim = math.ceil(_SAMPLE_PIXELS ** (1.0 / len(sizes)))
    index = (slice(None), slice(None)) + tuple(slice(None, None, max(1, n // per_dim)) for n in sizes)
    sample = probs[index].double().sum(dim=1)
    deviation = (sample - 1.0).abs().max().item()
    tolerance = 2e-2 if probs.dtype in (torch.float16, torch.bfloat16) else 1e-3
    if deviation > tolerance:
        batch_hint = " or, if this is one image (C, H, W) without its batch dim, pass probs[None]" if probs.ndim == 3 else ""
        warnings.warn(
            f"Class probabilities do not sum to 1 (max deviation {deviation:.3g} on sampled pixels). "
            "output_mode='multiclass' expects softmax over dim 1; for independent sigmoid outputs use "
            f"output_mode='multilabel'{batch_hint}.",
            UserWarning,
            stacklevel=4,
        )
