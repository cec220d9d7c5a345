"""
Dictionary-based wrappers around the transforms of :py:mod:`monai_ext.array`, in the style of
:py:mod:`monai.transforms.post.dictionary`. Class names end with 'd'; ``D`` and ``Dict`` aliases as in MONAI.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config.type_definitions import DtypeLike, KeysCollection, NdarrayOrTensor
from monai.transforms.transform import MapTransform
from monai.utils import ensure_tuple_rep

from monai_ext.array import LabelToRegions, RankSEG, RankSEGNested, RegionsToLabel

__all__ = [
    "LabelToRegionsD",
    "LabelToRegionsDict",
    "LabelToRegionsd",
    "RankSEGD",
    "RankSEGDict",
    "RankSEGNestedD",
    "RankSEGNestedDict",
    "RankSEGNestedd",
    "RankSEGd",
    "RegionsToLabelD",
    "RegionsToLabelDict",
    "RegionsToLabeld",
]


class _ConvertKeys(MapTransform):
    """A dictionary transform that applies one array transform, ``self.converter``, to every key."""

    converter: Callable[[NdarrayOrTensor], NdarrayOrTensor]

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


class RankSEGd(MapTransform):
    """
    Dictionary-based wrapper of :py:class:`monai_ext.RankSEG`: use it where the pipeline had
    ``AsDiscreted(argmax=True)``. Every option but ``regions`` and ``dtype`` also accepts a sequence, one element
    per key in ``keys``; one converter is built per key, at construction.
    """

    backend = RankSEG.backend

    def __init__(
        self,
        keys: KeysCollection,
        to_onehot: Sequence[int | None] | int | None = None,
        dtype: DtypeLike | torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
        **options: Any,
    ) -> None:
        """
        Args:
            keys: keys of the probabilities to decode. See also: :py:class:`monai.transforms.compose.MapTransform`
            to_onehot, dtype, options: see :py:class:`monai_ext.RankSEG`.
            allow_missing_keys: don't raise exception if key is missing.
        """
        super().__init__(keys, allow_missing_keys)
        n = len(self.keys)
        per_key = {name: value if name == "regions" else ensure_tuple_rep(value, n) for name, value in options.items()}
        self.converters = [
            RankSEG(
                to_onehot=onehot,
                dtype=dtype,
                **{name: value if name == "regions" else value[i] for name, value in per_key.items()},
            )
            for i, onehot in enumerate(ensure_tuple_rep(to_onehot, n))
        ]

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key, converter in self.key_iterator(d, self.converters):
            d[key] = converter(d[key])
        return d


class RankSEGNestedd(_ConvertKeys):
    """
    Dictionary-based wrapper of :py:class:`monai_ext.RankSEGNested`.
    """

    backend = RankSEGNested.backend

    def __init__(
        self,
        keys: KeysCollection,
        regions: Sequence[Sequence[int]],
        dtype: DtypeLike | torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
        **options: Any,
    ) -> None:
        """
        Args:
            keys: keys of the region probabilities. See also: :py:class:`monai.transforms.compose.MapTransform`
            regions, dtype, options: see :py:class:`monai_ext.RankSEGNested`.
            allow_missing_keys: don't raise exception if key is missing.
        """
        super().__init__(keys, allow_missing_keys)
        self.converter = RankSEGNested(regions, dtype, **options)


class RegionsToLabeld(_ConvertKeys):
    """
    Dictionary-based wrapper of :py:class:`monai_ext.RegionsToLabel`.
    """

    backend = RegionsToLabel.backend

    def __init__(
        self,
        keys: KeysCollection,
        regions: Sequence[Sequence[int]],
        dtype: DtypeLike | torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        """
        Args:
            keys: keys of the binary region masks. See also: :py:class:`monai.transforms.compose.MapTransform`
            regions, dtype: see :py:class:`monai_ext.RegionsToLabel`.
            allow_missing_keys: don't raise exception if key is missing.
        """
        super().__init__(keys, allow_missing_keys)
        self.converter = RegionsToLabel(regions, dtype)


class LabelToRegionsd(_ConvertKeys):
    """
    Dictionary-based wrapper of :py:class:`monai_ext.LabelToRegions`.
    """

    backend = LabelToRegions.backend

    def __init__(
        self,
        keys: KeysCollection,
        regions: Sequence[Sequence[int]],
        dtype: DtypeLike | torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        """
        Args:
            keys: keys of the label maps. See also: :py:class:`monai.transforms.compose.MapTransform`
            regions, dtype: see :py:class:`monai_ext.LabelToRegions`.
            allow_missing_keys: don't raise exception if key is missing.
        """
        super().__init__(keys, allow_missing_keys)
        self.converter = LabelToRegions(regions, dtype)


RankSEGD = RankSEGDict = RankSEGd
RankSEGNestedD = RankSEGNestedDict = RankSEGNestedd
RegionsToLabelD = RegionsToLabelDict = RegionsToLabeld
LabelToRegionsD = LabelToRegionsDict = LabelToRegionsd
