"""rankseg-plugins: Dice/IoU-optimal segmentation (RankSEG) as a drop-in replacement for argmax."""

from .core import RankSEG
from .exact import expected_metric, expected_metric_curve
from .functional import rankseg
from .plan import Decision, Plan

__all__ = ["Decision", "Plan", "RankSEG", "expected_metric", "expected_metric_curve", "rankseg"]
__version__ = "0.1.0"
