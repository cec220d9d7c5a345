"""
Dictionary-based wrappers around the transforms of :py:mod:`monai_ext.array`, in the style of
:py:mod:`monai.transforms.post.dictionary`. Class names end with 'd'; ``D`` and ``Dict`` aliases as in MONAI.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence

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
    ``AsDiscreted(argmax=True)``. Every option also accepts a sequence, one element per key in ``keys``.
    """

    backend = RankSEG.backend

    def __init__(
        self,
        keys: KeysCollection,
        metric: Sequence[str] | str = "dice",
        output_mode: Sequence[str] | str = "multiclass",
        solver: Sequence[str] | str = "rma",
        smooth: Sequence[float] | float = 0.0,
        pruning_prob: Sequence[float] | float = 0.5,
        unassigned: Sequence[str] | str = "max_score",
        void_index: Sequence[int] | int = 255,
        to_onehot: Sequence[int | None] | int | None = None,
        dtype: DtypeLike | torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        """
        Args:
            keys: keys of the probabilities to decode. See also: :py:class:`monai.transforms.compose.MapTransform`
            metric, output_mode, solver, smooth, pruning_prob, unassigned, void_index, to_onehot, dtype:
                see :py:class:`monai_ext.RankSEG`.
            allow_missing_keys: don't raise exception if key is missing.
        """
        super().__init__(keys, allow_missing_keys)
        options = (metric, output_mode, solver, smooth, pruning_prob, unassigned, void_index)
        names = ("metric", "output_mode", "solver", "smooth", "pruning_prob", "unassigned", "void_index")
        per_key_values = zip(*(ensure_tuple_rep(option, len(self.keys)) for option in options))
        self.options = [dict(zip(names, values)) for values in per_key_values]
        self.to_onehot = ensure_tuple_rep(to_onehot, len(self.keys))
        for per_key, onehot in zip(self.options, self.to_onehot):  # fail now (bundle parsing), not after inference
            RankSEG(**per_key, to_onehot=onehot)
        self.converter = RankSEG(dtype=dtype)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key, options, to_onehot in self.key_iterator(d, self.options, self.to_onehot):
            d[key] = self.converter(d[key], **options, to_onehot=to_onehot)
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
        metric: str = "dice",
        solver: str = "rma",
        smooth: float = 0.0,
        dtype: DtypeLike | torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        """
        Args:
            keys: keys of the region probabilities. See also: :py:class:`monai.transforms.compose.MapTransform`
            regions, metric, solver, smooth, dtype: see :py:class:`monai_ext.RankSEGNested`.
            allow_missing_keys: don't raise exception if key is missing.
        """
        super().__init__(keys, allow_missing_keys)
        self.converter = RankSEGNested(regions, metric, solver, smooth, dtype)


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
