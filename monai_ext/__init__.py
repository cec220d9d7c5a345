"""MONAI post-transforms that swap argmax/thresholding for Dice/IoU-optimal RankSEG decoding.

Replace ``AsDiscreted(keys="pred", argmax=True)`` with ``RankSEGd(keys="pred")``
(in a bundle config: ``_target_: monai_ext.RankSEGd``).
"""

from __future__ import annotations

try:
    import monai  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without MONAI
    raise ImportError("monai_ext needs MONAI: pip install 'rankseg-plugins[monai]'.") from err

from monai_ext.array import LabelToRegions, RankSEG, RankSEGNested, RegionsToLabel
from monai_ext.dictionary import (
    LabelToRegionsD,
    LabelToRegionsd,
    LabelToRegionsDict,
    RankSEGD,
    RankSEGd,
    RankSEGDict,
    RankSEGNestedD,
    RankSEGNestedd,
    RankSEGNestedDict,
    RegionsToLabelD,
    RegionsToLabeld,
    RegionsToLabelDict,
)

__all__ = [
    "LabelToRegions",
    "LabelToRegionsD",
    "LabelToRegionsDict",
    "LabelToRegionsd",
    "RankSEG",
    "RankSEGD",
    "RankSEGDict",
    "RankSEGNested",
    "RankSEGNestedD",
    "RankSEGNestedDict",
    "RankSEGNestedd",
    "RankSEGd",
    "RegionsToLabel",
    "RegionsToLabelD",
    "RegionsToLabelDict",
    "RegionsToLabeld",
]
