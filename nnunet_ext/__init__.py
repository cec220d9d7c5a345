"""nnU-Net v2 adapter: ``rankseg-nnunet`` decodes nnU-Net's saved probabilities with RankSEG instead of argmax.

Reads the folders ``nnUNetv2_predict --save_probabilities`` writes (one, or several to ensemble), decodes every
case with RankSEG (label-based datasets by class, region-based ones by region in ``regions_class_order``) or with
nnU-Net's own decoding, and writes the segmentations with nnU-Net's own writer, so ``nnUNetv2_apply_postprocessing``
and ``nnUNetv2_evaluate_folder`` work on the result unchanged. See ``docs/nnunet.md``.

Nothing else in this project imports nnunetv2; only this package needs the ``[nnunet]`` extra.
"""

try:
    import nnunetv2  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without nnU-Net
    raise ImportError("nnunet_ext needs nnU-Net v2: pip install 'rankseg-plugins[nnunet]'.") from err

from .decode import Decoder  # noqa: E402
from .folders import Dataset, Predictions, find_predictions, read_dataset  # noqa: E402
from .pickles import UnsafePickleError, load_pickle, load_postprocessing  # noqa: E402

__all__ = [
    "Dataset",
    "Decoder",
    "Predictions",
    "UnsafePickleError",
    "find_predictions",
    "load_pickle",
    "load_postprocessing",
    "read_dataset",
]
