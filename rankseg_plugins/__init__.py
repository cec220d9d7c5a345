"""rankseg-plugins: Dice/IoU-optimal segmentation (RankSEG) as a drop-in replacement for argmax."""

from .core import RankSEG
from .functional import rankseg

__all__ = ["RankSEG", "rankseg"]
__version__ = "0.1.0"
