"""The figure's slice of a case: where the baseline and RankSEG disagree most, shown in radiological orientation.

With an affine (NIfTI files, the demo), the slice is axial (across the voxel axis closest to the patient's
inferior-superior axis) and is turned and flipped with nibabel's orientation helpers so that, as radiologists read
CT, the patient's right is on the image's left and anterior is up. A 2D case shows its own plane the same way
(coronal and sagittal planes: superior up; patient's right, respectively anterior, on the left). Without an affine
the slice is taken across the last axis and shown in voxel order (first in-plane axis down, second across).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .cases import CaseData

#: World axis (0 x: R, 1 y: A, 2 z: S) the slice is across -> world axes shown down the rows and across the columns.
#: Rows run towards P (axial) or I, columns towards L (axial, coronal) or P (sagittal): flip -1 in RAS.
VIEWS = {2: (1, 0), 1: (2, 0), 0: (2, 1)}


@dataclass
class Preview:
    """One 2D slice of a case for the figure: image (or ``None``), ground truth, baseline and RankSEG (Dice)."""

    index: int
    disagreement: int
    image: np.ndarray | None
    truth: np.ndarray
    baseline: np.ndarray
    rankseg: np.ndarray
    view: str


def _orientation(affine: np.ndarray | None, ndim: int) -> np.ndarray | None:
    """nibabel's ``io_orientation`` of a 3D grid's affine (``None`` when there is none, or it is degenerate)."""
    if affine is None or ndim != 3:
        return None
    from nibabel.orientations import io_orientation

    ornt = io_orientation(np.asarray(affine, dtype=np.float64))
    return None if np.isnan(ornt).any() else ornt


def slice_axis(affine: np.ndarray | None, shape: tuple[int, ...]) -> int:
    """The voxel axis to slice across: the axial one (world z) when the affine says which, else the last."""
    ornt = _orientation(affine, len(shape))
    if ornt is None:
        return len(shape) - 1
    return int(np.flatnonzero(ornt[:, 0] == 2)[0])


def orient(plane: np.ndarray, affine: np.ndarray | None, axis: int) -> np.ndarray:
    """``plane``, the 3D grid's slice across voxel ``axis``, turned and flipped into radiological orientation."""
    ornt = _orientation(affine, 3)
    if ornt is None:
        return plane
    from nibabel.orientations import apply_orientation, ornt_transform

    rows, cols = VIEWS[int(ornt[axis, 0])]
    start = np.array([[0 if ornt[a, 0] == rows else 1, ornt[a, 1]] for a in range(3) if a != axis])
    return np.ascontiguousarray(apply_orientation(plane, ornt_transform(start, np.array([[0, -1], [1, -1]]))))


def view_name(affine: np.ndarray | None, axis: int) -> str:
    """How :func:`orient` shows a slice across voxel ``axis``: ``"axial, radiological"``, ... or voxel order."""
    ornt = _orientation(affine, 3)
    if ornt is None:
        return "voxel order, no affine"
    return f"{('sagittal', 'coronal', 'axial')[int(ornt[axis, 0])]}, radiological"


def take_preview(data: CaseData, labels: dict[str, torch.Tensor], baseline: str) -> Preview:
    """The slice where ``labels[baseline]`` and ``labels["rankseg_dice"]`` differ most (most foreground on a tie)."""
    truth = torch.from_numpy(data.label)
    image = data.image
    if truth.ndim == 2:  # a single plane: a 3D grid one voxel deep, shown whole
        truth, labels = truth[..., None], {k: v[..., None] for k, v in labels.items()}
        image = None if image is None else np.asarray(image)[:, :, None]
        axis = 2
    else:
        axis = slice_axis(data.affine, tuple(truth.shape))
    other = tuple(d for d in range(truth.ndim) if d != axis)
    differ = (labels[baseline] != labels["rankseg_dice"]).sum(dim=other)
    foreground = (truth > 0).sum(dim=other)
    index = int(torch.argmax(differ * (foreground.max() + 1) + foreground))

    def take(volume: torch.Tensor) -> np.ndarray:
        return orient(volume.select(axis, index).numpy().astype(np.uint8), data.affine, axis)

    shown = None
    if image is not None and tuple(image.shape[: truth.ndim]) == tuple(truth.shape):
        where: list[int | slice] = [slice(None)] * truth.ndim + [0] * (len(image.shape) - truth.ndim)  # channel 0
        where[axis] = index
        shown = orient(np.asarray(image[tuple(where)], dtype=np.float32), data.affine, axis)  # reads one slice
    return Preview(index, int(differ[index]), shown, take(truth), take(labels[baseline]),
                   take(labels["rankseg_dice"]), view_name(data.affine, axis))
