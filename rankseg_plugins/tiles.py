"""Tiles: runs of ``L`` consecutive pixels of each class map, with their maxima, to skip what cannot matter.

Every pass after the first asks, per (image, class) pair, about the pixels above a threshold (the solver's steps,
the final masks, the pixels a class can win). A tile whose maximum is at most the threshold holds none of them, and
on segmentation outputs a class rises above its threshold in a small part of the image: at 150 classes (ADE20K)
about 3% of the tiles, at 105 (TotalSegmentator) about 4%. So such passes gather just the tiles that can matter
into a compact ``(N, L)`` tensor and run on that instead of on the whole batch.

Tiles exist when the input is contiguous and ``L`` (32, 16 or 8) divides the pixels per image; otherwise (other
memory layouts, odd sizes) every pass walks the whole batch, with the same results. The maxima come from the
statistics pass (:func:`rankseg_plugins.validation.probability_stats`) at the cost of a max-reduction. Runs of ``G``
consecutive tiles of a class (up to 32) form groups with their own maxima, so a search for the tiles above a threshold
looks at the tiles of the groups above it only (on a CPU, a search is as slow per flag as a pass is per pixel).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import torch

from . import host, threads

TILE_LENGTHS = (32, 16, 8)
GROUP_LENGTHS = (32, 16, 8, 4, 2, 1)
COMPACT_FRACTION = 0.4  # gather tiles only when they hold at most this fraction of the input
SEARCH_COST = 8  # a flag searched (compared, then found by nonzero) costs about what 8 elements of a pass do


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
            torch.gt(self.max[s], limit.index_select(0, pair), out=out[s]).logical_and_(wanted.index_select(0, pair))

        n = self.max.numel()
        threads.map_parts(part, threads.pieces(n, n), n)
        return out

    def take(self, keep: torch.Tensor) -> TileSet:
        """The tiles where ``keep`` ``(N,)`` holds."""
        return self._rows(host.nonzero(keep))

    def narrow(self, keep: torch.Tensor, mask: torch.Tensor) -> tuple[TileSet, torch.Tensor]:
        """:meth:`take` of ``keep``, once the tiles kept are at most half (copying fewer saves little), with ``mask``
        ``(N,)`` bool over these tiles, kept alike."""
        if 2 * int(keep.sum()) > keep.numel():
            return self, mask
        idx = host.nonzero(keep)
        return self._rows(idx), mask.index_select(0, idx)

    def _rows(self, idx: torch.Tensor) -> TileSet:
        return TileSet(*(select_rows(t, idx) for t in self))

    def count(self, keep: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Number of tiles where ``keep`` ``(N,)`` holds, per pair (``shape``: the pairs' ``(B, C)``)."""
        n = torch.zeros(math.prod(shape), dtype=torch.int64, device=keep.device)
        return n.index_add_(0, self.pair, keep.long()).view(shape)


class Tiles:
    """``probs`` ``(B, C, *spatial)`` seen as ``(B, C, T, L)`` runs of ``L`` pixels, their maxima ``(B, C, T)`` (filled by
    the statistics pass, then :meth:`seal`), and the maxima of groups of ``G`` consecutive tiles ``(B * C, T / G)``."""

    def __init__(self, view: torch.Tensor) -> None:
        self.view = view
        self.max = torch.empty(view.shape[:3], dtype=torch.float64 if view.dtype == torch.float64 else torch.float32,
                               device=view.device)
        T = view.shape[2]
        self.group = next(G for G in GROUP_LENGTHS if T % G == 0)
        self.group_max: torch.Tensor | None = None  # set by seal()

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

    def seal(self) -> torch.Tensor:
        """Once :attr:`max` is filled: the groups' maxima, and each pair's maximum ``(B, C)``."""
        B, C, T = self.max.shape
        self.group_max = self.max.view(B * C, T // self.group, self.group).amax(-1)
        return self.group_max.amax(-1).view(B, C)

    def above(self, threshold: torch.Tensor, pairs: torch.Tensor, within: torch.Tensor | None = None) -> TileSet:
        """The tiles of the ``pairs`` ``(B, C)`` bool whose maximum exceeds ``threshold`` ``(B, C)`` (and, with
        ``within`` ``(B, T)`` bool, at the image's tiles where it holds), found in the groups above the threshold."""
        C = self.max.shape[1]
        G, per_pair = self.group, self.group_max.shape[1]
        shift = G.bit_length() - 1  # G is a power of two
        limit = threshold.flatten().to(self.max.dtype)
        groups = host.nonzero((self.group_max > limit[:, None]) & pairs.flatten()[:, None])
        rows = self.max.view(-1, G)

        def part(s: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """(flat tile, pair, maximum) of the tiles above in the groups numbered ``s``."""
            g = groups[s]
            pair = g // per_pair
            top = rows.index_select(0, g)
            keep = top > limit.index_select(0, pair)[:, None]
            if within is not None:
                keep &= within.view(-1, G).index_select(0, (pair // C) * per_pair + (g - pair * per_pair))
            found = host.nonzero(keep)
            row = found >> shift
            return ((g.index_select(0, row) << shift) | (found & (G - 1)), pair.index_select(0, row),
                    top.view(-1).index_select(0, found))

        work = SEARCH_COST * groups.numel() * G
        parts = threads.map_parts(part, threads.pieces(groups.numel(), work), work)
        return TileSet(*(parts[0][i] if len(parts) == 1 else torch.cat([p[i] for p in parts]) for i in range(3)))

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
