"""Tiles: runs of ``L`` consecutive pixels of each class map, with their maxima, to skip what cannot matter.

Every pass after the first asks, per (image, class) pair, about the pixels above a threshold (the solver's steps,
the final masks, the pixels a class can win). A tile whose maximum is at most the threshold holds none of them, and
on segmentation outputs a class rises above its threshold in a small part of the image: at 150 classes (ADE20K)
about 3% of the tiles, at 105 (TotalSegmentator) about 4%. So such passes gather just the tiles that can matter
into a compact ``(N, L)`` tensor and run on that instead of on the whole batch.

Tiles exist when the input is contiguous and ``L`` (32, 16 or 8) divides the pixels per image; otherwise (other
memory layouts, odd sizes) every pass walks the whole batch, with the same results. The maxima come from the
statistics pass (:func:`rankseg_plugins.validation.probability_stats`) at the cost of a max-reduction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch

from . import host, threads

TILE_LENGTHS = (32, 16, 8)
COMPACT_FRACTION = 0.4  # gather tiles only when they hold at most this fraction of the input


class Rows(NamedTuple):
    """Gathered tiles: ``values`` ``(N, L)``, and the flat pair ``b * C + c`` and flat tile ``b * T + t`` of each row."""

    values: torch.Tensor
    pair: torch.Tensor
    tile: torch.Tensor


class TileSet(NamedTuple):
    """Some tiles, by flat index into ``(B, C, T)``, with their flat pair and maximum; gathered on demand."""

    index: torch.Tensor
    pair: torch.Tensor
    max: torch.Tensor

    def part(self, rows: slice) -> TileSet:
        """The tiles numbered ``rows`` in this set."""
        return TileSet(*(field[rows] for field in self))

    def above(self, threshold: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """``(N,)`` bool: the tiles of the ``pairs`` (``(B, C)`` bool) whose maximum exceeds ``threshold`` ``(B, C)``."""
        limit, wanted = threshold.flatten().to(self.max.dtype), pairs.flatten()
        out = torch.empty(self.max.shape, dtype=torch.bool, device=self.max.device)

        def part(s: slice) -> None:
            pair = self.pair[s]
            torch.gt(self.max[s], limit[pair], out=out[s]).logical_and_(wanted[pair])

        n = self.max.numel()
        threads.map_parts(part, threads.pieces(n, n), n)
        return out

    def take(self, keep: torch.Tensor) -> TileSet:
        """The tiles where ``keep`` ``(N,)`` holds."""
        idx = host.nonzero(keep)
        return TileSet(*(select_rows(t, idx) for t in self))

    def narrow(self, keep: torch.Tensor) -> TileSet:
        """:meth:`take`, once the tiles kept are at most half (copying fewer saves little)."""
        return self if 2 * int(keep.sum()) > keep.numel() else self.take(keep)

    def count(self, threshold: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` number of tiles of each pair above ``threshold``."""
        n = torch.zeros(threshold.numel(), dtype=torch.int64, device=threshold.device)
        return n.index_add_(0, self.pair, self.above(threshold, pairs).long()).view(threshold.shape)


class Tiles:
    """``probs`` ``(B, C, *spatial)`` seen as ``(B, C, T, L)`` runs of ``L`` pixels, and their maxima ``(B, C, T)``."""

    def __init__(self, view: torch.Tensor) -> None:
        self.view = view
        self.max = torch.empty(view.shape[:3], dtype=torch.float64 if view.dtype == torch.float64 else torch.float32,
                               device=view.device)

    @classmethod
    def of(cls, probs: torch.Tensor) -> Tiles | None:
        """Tiles of ``probs``, or ``None`` when its layout or size has none."""
        d = math.prod(probs.shape[2:])
        if not probs.is_contiguous():
            return None
        for L in TILE_LENGTHS:
            if d % L == 0 and d >= 4 * L:
                return cls(probs.view(*probs.shape[:2], d // L, L))
        return None

    def where(self, wanted: torch.Tensor) -> TileSet:
        """The tiles where ``wanted`` ``(B, C, T)`` holds."""
        return self._tiles(lambda s: wanted.view(-1, wanted.shape[2])[s])

    def above(self, threshold: torch.Tensor, pairs: torch.Tensor) -> TileSet:
        """The tiles of the ``pairs`` ``(B, C)`` bool whose maximum exceeds ``threshold`` ``(B, C)``."""
        limit, wanted = threshold.flatten().to(self.max.dtype), pairs.flatten()
        rows = self.max.view(-1, self.max.shape[2])
        return self._tiles(lambda s: (rows[s] > limit[s, None]) & wanted[s, None])

    def _tiles(self, wanted: Callable[[slice], torch.Tensor]) -> TileSet:
        """The tiles where ``wanted(pairs)`` ``(pairs, T)`` bool holds, its pairs' parts shared out."""
        T = self.max.shape[2]

        def index(s: slice) -> torch.Tensor:
            return host.nonzero(wanted(s)) + s.start * T

        pairs = self.max.shape[0] * self.max.shape[1]
        parts = threads.map_parts(index, threads.pieces(pairs, self.max.numel()), self.max.numel())
        index = parts[0] if len(parts) == 1 else torch.cat(parts)
        return TileSet(index, index // T, select_rows(self.max.view(-1), index))

    def fits(self, n: int) -> bool:
        """Whether ``n`` tiles hold at most ``COMPACT_FRACTION`` of the input (else a pass over everything is as
        cheap as gathering them)."""
        return n * self.view.shape[3] <= COMPACT_FRACTION * self.view.numel()

    def gather_parts(self, tiles: TileSet, elements: int) -> Iterator[Rows]:
        """:meth:`gather` of ``tiles`` at most ``elements`` values at a time (so they never all take memory)."""
        step = max(1, elements // self.view.shape[3])
        for i in range(0, tiles.index.numel(), step):
            yield self.gather(tiles.part(slice(i, i + step)))

    def gather(self, tiles: TileSet) -> Rows:
        """The values of ``tiles`` (callers check :meth:`fits` for the whole set first)."""
        B, C, T, L = self.view.shape
        tile = (tiles.pair // C) * T + tiles.index % T
        return Rows(select_rows(self.view.view(-1, L), tiles.index), tiles.pair, tile)


def select_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x.index_select(0, index)``, its parts shared out (:func:`threads.map_parts`) when it is large."""
    out = x.new_empty((index.numel(), *x.shape[1:]))
    n = out.numel()
    threads.map_parts(lambda s: torch.index_select(x, 0, index[s], out=out[s]), threads.pieces(index.numel(), n), n)
    return out
