"""The embedded demo: real LiTS CT (case 117) with a tiny MONAI 3D UNet shipped in the repo.

Data: ``liver-ct-segmentation-package==1.6.0`` ships LiTS case 117 cropped to 128^3 around the liver
(``img_117.mrc``, ``lab_117.mrc``; labels 0 background, 1 liver, 2 tumour). Axis 0 is axial.

Split (axis 0, the axial axis): the 128 slices form 8 periods of 16. In each period, slices 8-15 are a held-out
slab, slices 1-6 are training slices, and slices 0 and 7 are guards next to the held-out slab whose labels are
never used either. Training (``scripts/train_demo_model.py``) sees the whole image but takes its loss only on
the training slices, so no held-out label is ever seen (interleaving keeps the same anatomy on both sides of the
split; a split into upper and lower halves leaves the network guessing on organs it never saw). Sliding-window
inference runs over the whole volume, as for a new scan; the 8 held-out slabs are the 8 "cases": RankSEG decodes
each slab and Dice/IoU are computed on it, so the paired statistics have 8 pairs.

Orientation: the ``.mrc`` files carry none. Read from the anatomy (liver on the side of increasing axis 2, the
kidney behind it, the liver dome at low axis 0), the voxel axes run towards inferior, posterior and the patient's
right; :data:`AFFINE` says so, which lets the figure show axial slices in radiological orientation.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .cases import Case, CaseData
from .layouts import LAYOUTS

CHECKPOINT = Path(__file__).with_name("demo_model.pt")
LAYOUT = LAYOUTS["lits"]
REGIONS = LAYOUT.regions  # liver {1,2}, tumour {2}: what the demo scores (benchmarks/rma_gap.py uses it)
#: Voxel (axis 0 inferior, axis 1 posterior, axis 2 the patient's right) -> RAS world, 1 mm voxels (the crop's
#: spacing is not shipped; it does not matter for the scores or the figure).
AFFINE = np.array([[0.0, 0, 1, 0], [0, -1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 1]])
SOURCE = (
    "embedded demo: LiTS case 117 (128^3 crop, liver-ct-segmentation-package 1.6.0); tiny MONAI UNet "
    "(rankseg_eval/demo_model.pt) trained on other axial slices of the same scan; sliding-window inference; "
    "cases = 8 held-out axial slabs of 8 slices"
)
PERIOD = 16
SLAB = 8
HELD_OUT_STARTS = tuple(range(SLAB, 128, PERIOD))
TRAIN_SLICES = tuple(z for z in range(128) if 1 <= z % PERIOD <= PERIOD - SLAB - 2)  # guards: 0 and 7
HU_WINDOW = (-200.0, 250.0)
ROI_SIZE = (32, 96, 96)
NUM_CLASSES = 3
DATA_PACKAGE = "liver_ct_segmentation_package"
INSTALL_HINT = (
    "the demo needs the LiTS case shipped by liver-ct-segmentation-package: "
    "pip install mrcfile && pip install --no-deps liver-ct-segmentation-package==1.6.0"
)


def data_files() -> tuple[Path, Path]:
    """Paths of ``img_117.mrc`` and ``lab_117.mrc``; ``RuntimeError`` saying what to install when missing."""
    missing = [name for name in ("mrcfile", DATA_PACKAGE) if importlib.util.find_spec(name) is None]
    if missing:
        raise RuntimeError(f"{INSTALL_HINT} (missing: {', '.join(missing)})")
    data = resources.files(DATA_PACKAGE) / "data"
    files = (Path(str(data / "img_117.mrc")), Path(str(data / "lab_117.mrc")))
    if not all(f.is_file() for f in files):
        raise RuntimeError(f"{INSTALL_HINT} (not found: {files[0].parent})")
    return files


def load_volume() -> tuple[np.ndarray, np.ndarray]:
    """Return LiTS case 117 as ``(image in HU float32, label uint8)``, both ``(128, 128, 128)``."""
    import mrcfile

    img, lab = data_files()
    return np.asarray(mrcfile.read(img), dtype=np.float32), np.asarray(mrcfile.read(lab), dtype=np.uint8)


def normalise(image: np.ndarray) -> np.ndarray:
    """Clip to the liver window ``HU_WINDOW`` and scale to [0, 1]."""
    lo, hi = HU_WINDOW
    return ((np.clip(image, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def build_network() -> torch.nn.Module:
    """The demo network: MONAI UNet, 1 -> 3 channels, features 8-16-32-64, no residual units, batch norm.

    Batch norm rather than MONAI's default instance norm: instance norm rescales every crop on its own and so
    discards the absolute CT intensity that tells liver from bowel and kidney.
    """
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=3, in_channels=1, out_channels=NUM_CLASSES, channels=(8, 16, 32, 64), strides=(2, 2, 2),
        num_res_units=0, norm="batch",
    )


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the weights' bytes in key order (``torch.save`` files differ byte-wise between runs)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def volume_probabilities(sw_batch_size: int = 4) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Sliding-window softmax over the whole volume: ``(image HU, label, probs (3, 128, 128, 128))``."""
    from monai.inferers import SlidingWindowInferer

    image, label = load_volume()
    network = build_network()
    network.load_state_dict(torch.load(CHECKPOINT, map_location="cpu", weights_only=True))
    network.eval()
    inferer = SlidingWindowInferer(roi_size=ROI_SIZE, sw_batch_size=sw_batch_size, overlap=0.25, mode="gaussian")
    with torch.inference_mode():
        probs = torch.softmax(inferer(torch.from_numpy(normalise(image))[None, None], network), dim=1)[0]
    return image, label, probs


def demo_cases() -> list[Case]:
    """The held-out slabs as cases; inference runs once, when the first case is loaded."""
    data_files()
    volume: Callable[[], tuple[np.ndarray, np.ndarray, torch.Tensor]] = lru_cache(maxsize=1)(volume_probabilities)

    def slab(start: int) -> Callable[[], CaseData]:
        def load() -> CaseData:
            image, label, probs = volume()
            sl = slice(start, start + SLAB)
            return CaseData(probs[:, sl].contiguous(), label[sl].astype(np.int64), image[sl], AFFINE)

        return load

    return [Case(f"lits117_z{s:03d}-{s + SLAB - 1:03d}", slab(s)) for s in HELD_OUT_STARTS]
