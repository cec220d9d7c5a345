"""Cases to evaluate: a case id and a loader of its probabilities, label map and (for the figure) image and affine.

Any front end feeds :func:`rankseg_eval.evaluate` with :class:`Case` objects; this module also builds them from
files. Precomputed probabilities (``--probs DIR``): one file per case named ``<case id>.npy``, ``.npz`` (first
array), ``.nii.gz`` or ``.nii``. NumPy arrays are channel-first ``(C, *spatial)``; NIfTI maps are channel-last
``(*spatial, C)`` (as MONAI's ``SaveImage`` writes them). Spatial axes follow the label file's voxel order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .layouts import CaseFiles, case_number

PROBS_SUFFIXES = (".npy", ".npz", ".nii.gz", ".nii")


class CaseError(ValueError):
    """A problem with one case's inputs; the case is skipped and reported with this message."""


@dataclass(frozen=True)
class CaseData:
    """One loaded case.

    ``probs`` ``(C, *spatial)`` in [0, 1]: softmax over classes (background first), or one sigmoid channel per
    scored region. ``label``: integer label map ``(*spatial)``. ``image`` (figure only): an array or a nibabel array
    proxy of shape ``label.shape``, or with a trailing channel axis; only one slice of it is read. ``affine``:
    ``4 x 4`` voxel-to-world (RAS) matrix of the label grid; it orients the figure's slice (``None``: voxel order).
    """

    probs: torch.Tensor
    label: np.ndarray
    image: Any = None
    affine: np.ndarray | None = None


@dataclass(frozen=True)
class Case:
    """A case id and a loader that raises :class:`CaseError` (or any exception) when the case cannot be used."""

    case_id: str
    load: Callable[[], CaseData]


def error_message(err: BaseException, typed: bool | None = None, limit: int = 300) -> str:
    """``err`` in one line and, when it was raised from another error, the innermost one: its root cause.

    ``typed``: start with the exception's type name (default: unless it is a :class:`CaseError`)."""
    chain = [err]
    while True:
        last = chain[-1]
        cause = last.__cause__ if last.__cause__ is not None or last.__suppress_context__ else last.__context__
        if cause is None or cause in chain:
            break
        chain.append(cause)
    text = _first_line(err, limit)
    if typed if typed is not None else not isinstance(err, CaseError):
        text = f"{type(err).__name__}: {text}"
    root = _first_line(chain[-1], limit)
    if len(chain) > 1 and root not in text:
        text += f" (cause: {type(chain[-1]).__name__}: {root})"
    return text


def _first_line(err: BaseException, limit: int) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = re.sub(r"<([\w.]+) object at 0x[0-9a-fA-F]+>", r"\1", lines[0] if lines else "")  # MONAI's wrapper
    return text if len(text) <= limit else text[: limit - 3] + "..."


def probs_files(folder: Path) -> dict[str, Path]:
    """Case id -> file for every supported file in ``folder`` (not recursive)."""
    found: dict[str, Path] = {}
    for path in sorted(Path(folder).iterdir()):
        suffix = next((s for s in PROBS_SUFFIXES if path.name.endswith(s)), None)
        if suffix and path.is_file() and not path.name.startswith("._"):
            found.setdefault(path.name[: -len(suffix)], path)
    return found


def _nifti(path: Path) -> Any:
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as err:  # nibabel raises several types for corrupt files
        raise CaseError(f"cannot read {path}: {err}") from err


def _numpy(path: Path) -> np.ndarray:
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


def read_label(path: Path | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Integer label map and its affine (``None`` for NumPy files); ``CaseError`` when missing or unreadable."""
    if path is None or not path.is_file():
        raise CaseError(f"no label file {path}")
    if path.suffix in (".npy", ".npz"):
        array, affine = _numpy(path), None
    else:
        nifti = _nifti(path)
        try:
            array, affine = np.asanyarray(nifti.dataobj), np.asarray(nifti.affine, dtype=np.float64)
        except Exception as err:
            raise CaseError(f"cannot read {path}: {err}") from err
    if array.dtype.kind == "f" and (not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array))):
        raise CaseError(f"label {path} has non-integer values")
    if array.size and array.min() < 0:
        raise CaseError(f"label {path} has negative values")
    return array.astype(np.int64), affine


def read_probs(path: Path) -> torch.Tensor:
    """Channel-first float32 probabilities from ``.npy``/``.npz`` (channel-first) or NIfTI (channel-last)."""
    if path.name.endswith((".nii", ".nii.gz")):
        array = np.asanyarray(_nifti(path).dataobj)
        if array.ndim == 5 and array.shape[3] == 1:  # (x, y, z, t=1, C): NIfTI's 5th dim holds vectors
            array = array[:, :, :, 0]
        array = np.moveaxis(array, -1, 0)
    else:
        array = _numpy(path)
    if array.dtype.kind not in "fiub":
        raise CaseError(f"{path} has dtype {array.dtype}; expected floating probabilities")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def image_proxy(path: Path | None) -> Any:
    """The image's lazy nibabel array proxy (nothing is read until it is sliced); ``CaseError`` when missing."""
    if path is None or not path.is_file():
        raise CaseError(f"image {path} not found")
    return _nifti(path).dataobj


def probs_cases(files: list[CaseFiles] | None, probs_dir: Path, labels_dir: Path | None) -> list[Case]:
    """Cases from precomputed probabilities, with labels (and images) from a layout's ``files`` or ``labels_dir``."""
    probs = probs_files(probs_dir)
    if files is None:
        if labels_dir is None:
            raise ValueError("--probs needs its labels: --data DIR --layout NAME, or --labels DIR")
        labels = probs_files(labels_dir)
        ids = sorted(set(probs) | set(labels), key=case_number)
        files = [CaseFiles(case_id, None, labels.get(case_id)) for case_id in ids]

    def loader(entry: CaseFiles) -> Callable[[], CaseData]:
        def load() -> CaseData:
            if entry.case_id not in probs:
                raise CaseError(f"no probability map {probs_dir}/{entry.case_id}.{{npy,npz,nii.gz,nii}}")
            if entry.label is None:
                raise CaseError(f"no label file {labels_dir}/{entry.case_id}.{{nii.gz,nii,npy,npz}}")
            label, affine = read_label(entry.label)
            image = None if entry.image is None else image_proxy(entry.image)
            return CaseData(read_probs(probs[entry.case_id]), label, image, affine)

        return load

    return [Case(entry.case_id, loader(entry)) for entry in files]
