"""Walk a ``(B, C, *spatial)`` tensor in blocks, so passes over whole batches or volumes need little scratch memory.

A block is ``x[b, :, r0:r1]``: every class of one image, a run of slices along the first spatial dim, at most
:data:`BLOCK_ELEMENTS` elements (at least one slice). A pass over the blocks is a handful of large kernels per
block, so the number of parallel regions stays small (what keeps the decoder steady on a shared CPU), while the
scratch buffers of a block stay far below the input's size.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator

import torch

BLOCK_ELEMENTS = 1 << 22  # 16 MiB of float32: a few blocks per image, each far above a kernel's fixed cost


def block_rows(x: torch.Tensor, elements: int | None = None) -> int:
    """Slices along the first spatial dim per block of at most ``elements`` (default :data:`BLOCK_ELEMENTS`) of
    ``x`` ``(B, C, *spatial)``."""
    per_row = x.shape[1] * math.prod(x.shape[3:])
    return max(1, (elements or BLOCK_ELEMENTS) // max(per_row, 1))


def image_blocks(x: torch.Tensor, image: int, elements: int | None = None) -> Iterator[tuple[slice, torch.Tensor]]:
    """``(rows, x[image, :, rows])`` for every block of one image (at most ``elements`` each, at least one slice)."""
    rows, n = block_rows(x, elements), x.shape[2]
    for r0 in range(0, n, rows):
        sl = slice(r0, min(r0 + rows, n))
        yield sl, x[image, :, sl]


def spatial_dims(x: torch.Tensor) -> tuple[int, ...]:
    """The dims after the first one of a block ``(C, *spatial)``."""
    return tuple(range(1, x.ndim))


class Scratch:
    """Reusable flat buffers for block-shaped temporaries (one per ``slot`` and calling thread), grown on demand."""

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self.dtype, self.device = dtype, device
        self.buffers: dict[tuple[int, int], torch.Tensor] = {}

    def take(self, shape: torch.Size | tuple[int, ...], slot: int = 0, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A contiguous tensor of ``shape`` (uninitialised) backed by buffer ``slot``."""
        dtype = dtype or self.dtype
        n = math.prod(shape)
        key = (threading.get_ident(), slot)
        buf = self.buffers.get(key)
        if buf is None or buf.dtype != dtype or buf.numel() < n:
            buf = self.buffers[key] = torch.empty(max(n, 1), dtype=dtype, device=self.device)
        return buf[:n].view(shape)
