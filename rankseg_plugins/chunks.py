"""Chunked views, so passes over whole 3D volumes need only a chunk of scratch memory."""

from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 20


def chunk_views(t: torch.Tensor, dim: int = 0) -> list[torch.Tensor]:
    """Views of ``t`` split along ``dim``, each holding about ``CHUNK_ELEMENTS`` elements (at least one slice)."""
    if t.numel() <= CHUNK_ELEMENTS or t.ndim == 0:
        return [t]
    per_slice = t.numel() // t.shape[dim]
    return list(t.split(max(1, CHUNK_ELEMENTS // per_slice), dim=dim))
