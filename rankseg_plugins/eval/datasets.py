"""Cases to evaluate: dataset layout discovery, file loading, scored regions.

Layouts (``DIR`` is what ``--data`` points at; files are found recursively for LiTS):

- ``kits19`` / ``kits23``: ``DIR/case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz``; case id ``case_XXXXX``.
- ``lits``: ``volume-N.nii[.gz]`` + ``segmentation-N.nii[.gz]`` anywhere under ``DIR``; case id ``volume-N``.
- ``msd``: ``DIR/imagesTr/NAME.nii.gz`` + ``DIR/labelsTr/NAME.nii.gz`` (macOS ``._*`` files ignored); case id
  ``NAME``; region names from ``DIR/dataset.json`` when present.

Precomputed probabilities (``--probs DIR``): one file per case named ``<case id>.npy``, ``.npz`` (first array),
``.nii.gz`` or ``.nii``. NumPy arrays are channel-first ``(C, *spatial)``; NIfTI maps are channel-last
``(*spatial, C)`` (as MONAI's ``SaveImage`` writes them). Spatial axes follow the label file's voxel order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

LAYOUTS = ("kits19", "kits23", "lits", "msd")
PROBS_SUFFIXES = (".npy", ".npz", ".nii.gz", ".nii")
Regions = dict[str, tuple[int, ...]]

LAYOUT_REGIONS: dict[str, Regions] = {
    "kits19": {"kidney": (1, 2), "tumour": (2,)},
    "kits23": {"kidney": (1, 2, 3), "masses": (2, 3), "tumour": (2,)},
    "lits": {"liver": (1, 2), "tumour": (2,)},
}


class CaseError(ValueError):
    """A problem with one case's inputs; the case is skipped and reported with this message."""


@dataclass(frozen=True)
class CaseData:
    """One loaded case: ``probs`` ``(C, *spatial)`` in [0, 1], integer ``label`` and optional ``image``.

    ``image`` (for the figure only) is an array or a nibabel array proxy, of shape ``label.shape`` or with a
    trailing channel axis; only one slice of it is ever read.
    """

    probs: torch.Tensor
    label: np.ndarray
    image: Any


@dataclass(frozen=True)
class Case:
    """A case id and a loader that raises ``CaseError`` (or any exception) when the case cannot be used."""

    case_id: str
    load: Callable[[], CaseData]


@dataclass(frozen=True)
class CaseFiles:
    """Paths found for one case; ``label`` is ``None`` when it is missing, ``image`` when there is none."""

    case_id: str
    image: Path | None
    label: Path | None


def _strip_nii(name: str) -> str:
    return re.sub(r"\.nii(\.gz)?$", "", name)


def _is_nii(path: Path) -> bool:
    return path.is_file() and not path.name.startswith("._") and re.search(r"\.nii(\.gz)?$", path.name) is not None


def discover(data_dir: Path, layout: str) -> list[CaseFiles]:
    """List the cases of ``data_dir`` in ``layout``, sorted by case id (numerically for LiTS)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"--data {data_dir} is not a directory")
    if layout in ("kits19", "kits23"):
        cases = []
        for folder in sorted(p for p in data_dir.iterdir() if p.is_dir() and re.fullmatch(r"case_\d+", p.name)):
            image = folder / "imaging.nii.gz"
            label = folder / "segmentation.nii.gz"
            cases.append(CaseFiles(folder.name, image, label if label.exists() else None))
    elif layout == "lits":
        volumes = [p for p in data_dir.rglob("volume-*.nii*") if _is_nii(p)]
        segs = {_strip_nii(p.name).split("-", 1)[1]: p for p in data_dir.rglob("segmentation-*.nii*") if _is_nii(p)}
        volumes.sort(key=lambda p: int(re.sub(r"\D", "", _strip_nii(p.name)) or -1))
        cases = [CaseFiles(_strip_nii(p.name), p, segs.get(_strip_nii(p.name).split("-", 1)[1])) for p in volumes]
    elif layout == "msd":
        images, labels = data_dir / "imagesTr", data_dir / "labelsTr"
        if not images.is_dir():
            raise FileNotFoundError(f"msd layout: {images} not found")
        cases = []
        for image in sorted(p for p in images.iterdir() if _is_nii(p)):
            label = labels / image.name
            cases.append(CaseFiles(_strip_nii(image.name), image, label if label.exists() else None))
    else:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if not cases:
        raise FileNotFoundError(f"no {layout} cases found under {data_dir} (see `rankseg-eval --help` for layouts)")
    return cases


def layout_regions(layout: str | None, data_dir: Path | None) -> Regions | None:
    """The regions scored for ``layout``; ``None`` means one region per foreground class of the probabilities."""
    if layout in LAYOUT_REGIONS:
        return LAYOUT_REGIONS[layout]
    if layout == "msd" and data_dir is not None and (data_dir / "dataset.json").is_file():
        names = json.loads((data_dir / "dataset.json").read_text()).get("labels", {})
        regions = {str(name): (int(value),) for value, name in names.items() if int(value) > 0}
        return dict(sorted(regions.items(), key=lambda kv: kv[1])) or None
    return None


def class_regions(num_classes: int) -> Regions:
    """One region per foreground class: ``class_1 .. class_{C-1}`` (``class_1`` for a binary map)."""
    return {f"class_{c}": (c,) for c in range(1, max(num_classes, 2))}


def probs_files(probs_dir: Path) -> dict[str, Path]:
    """Map case id -> probability file for every supported file in ``probs_dir`` (not recursive)."""
    found: dict[str, Path] = {}
    for path in sorted(Path(probs_dir).iterdir()):
        for suffix in PROBS_SUFFIXES:
            if path.is_file() and path.name.endswith(suffix) and not path.name.startswith("._"):
                found.setdefault(path.name[: -len(suffix)], path)
                break
    return found


def _read_nii(path: Path) -> np.ndarray:
    import nibabel as nib

    try:
        return np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as err:  # nibabel raises several types for corrupt files
        raise CaseError(f"cannot read {path}: {err}") from err


def load_label(path: Path | None, expected: str = "") -> np.ndarray:
    """Integer label map from a NIfTI or NumPy file; ``CaseError`` when missing or unreadable."""
    if path is None:
        raise CaseError(f"no label file{' (expected ' + expected + ')' if expected else ''}")
    array = _read_array(path) if path.suffix in (".npy", ".npz") else _read_nii(path)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise CaseError(f"label {path} has non-integer values")
    if array.min() < 0:
        raise CaseError(f"label {path} has negative values")
    return array.astype(np.int64)


def _read_array(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npz":
            with np.load(path) as archive:
                if not archive.files:
                    raise CaseError(f"{path} holds no array")
                return archive[archive.files[0]]
        return np.load(path)
    except CaseError:
        raise
    except Exception as err:
        raise CaseError(f"cannot read {path}: {err}") from err


def load_probs(path: Path) -> torch.Tensor:
    """Channel-first float32 probabilities from ``.npy``/``.npz`` (channel-first) or NIfTI (channel-last)."""
    if path.name.endswith((".nii", ".nii.gz")):
        array = _read_nii(path)
        if array.ndim == 5 and array.shape[3] == 1:  # (x, y, z, t=1, C): NIfTI's 5th dim holds vectors
            array = array[:, :, :, 0]
        array = np.moveaxis(array, -1, 0)
    else:
        array = _read_array(path)
    if array.dtype.kind not in "fiub":
        raise CaseError(f"{path} has dtype {array.dtype}; expected floating probabilities")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def load_image(path: Path) -> Any:
    """The image's lazy nibabel array proxy (for the figure; nothing is read until it is sliced)."""
    import nibabel as nib

    try:
        return nib.load(str(path)).dataobj
    except Exception as err:  # nibabel raises several types for corrupt files
        raise CaseError(f"cannot read {path}: {err}") from err


def probs_cases(files: list[CaseFiles] | None, probs_dir: Path, labels_dir: Path | None) -> list[Case]:
    """Cases from precomputed probabilities, with labels from a layout's ``files`` or from ``labels_dir``."""
    probs = probs_files(probs_dir)
    if files is None:
        if labels_dir is None:
            raise ValueError("--probs needs its labels: --data DIR --layout NAME, or --labels DIR")
        labels = probs_files(labels_dir)
        files = [CaseFiles(cid, None, labels.get(cid)) for cid in sorted(set(probs) | set(labels))]
        where = f"{labels_dir}/<case id>.{{nii.gz,nii,npy,npz}}"
    else:
        where = "the dataset layout"

    def loader(entry: CaseFiles) -> Callable[[], CaseData]:
        def load() -> CaseData:
            if entry.case_id not in probs:
                raise CaseError(f"no probability map {probs_dir}/{entry.case_id}.{{npy,npz,nii.gz,nii}}")
            label = load_label(entry.label, where)
            image = None if entry.image is None else load_image(entry.image)
            return CaseData(load_probs(probs[entry.case_id]), label, image)

        return load

    return [Case(entry.case_id, loader(entry)) for entry in files]
