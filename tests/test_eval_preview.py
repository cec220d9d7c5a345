"""The figure's slice: axial, in radiological orientation (patient's right on the image's left, anterior up)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("nibabel")

from rankseg_eval.cases import CaseData
from rankseg_eval.preview import orient, slice_axis, take_preview, view_name

RAS = np.eye(4)
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
KITS = np.array([[0.0, 0, -0.9, 40], [0, -0.9, 0, 10], [-2.5, 0, 0, 30], [0, 0, 0, 1]])  # slices along axis 0


def marked(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """Labels 1 at the right-anterior corner and 2 at the right-posterior corner of every axial slice."""
    world = np.einsum("ij,...j->...i", affine[:3, :3], np.stack(np.indices(shape), -1).astype(float))
    axis = slice_axis(affine, shape)
    in_plane = tuple(a for a in range(3) if a != axis)
    volume = np.zeros(shape, np.uint8)
    for value, score in ((1, world[..., 0] + world[..., 1]), (2, world[..., 0] - world[..., 1])):
        volume[score == score.max(axis=in_plane, keepdims=True)] = value
    return volume


@pytest.mark.parametrize("affine", [RAS, LPS, KITS], ids=["RAS", "LPS", "KiTS"])
def test_axial_slice_has_patient_right_on_the_left_and_anterior_up(affine):
    shape = (6, 7, 5)
    volume = marked(shape, affine)
    axis = slice_axis(affine, shape)
    assert np.flatnonzero(np.abs(affine[2, :3]) > 0)[0] == axis  # the voxel axis along world z
    shown = orient(volume.take(2, axis=axis), affine, axis)
    assert (shown[0, 0], shown[-1, 0], np.count_nonzero(shown)) == (1, 2, 2)
    assert view_name(affine, axis) == "axial, radiological"


def test_without_affine_the_last_axis_in_voxel_order():
    volume = np.arange(24).reshape(2, 3, 4)
    assert slice_axis(None, volume.shape) == 2
    assert np.array_equal(orient(volume[:, :, 1], None, 2), volume[:, :, 1])
    assert view_name(None, 2) == "voxel order, no affine"


def test_preview_is_the_slice_of_largest_disagreement():
    label = np.zeros((4, 4, 3), np.int64)
    label[1:3, 1:3] = 1
    baseline = torch.from_numpy(label)
    rankseg = baseline.clone()
    rankseg[0, :, 2] = 1  # differs on slice 2 (axis 2, the axial one for RAS)
    data = CaseData(torch.zeros(2, 4, 4, 3), label, np.ones((4, 4, 3)), RAS)
    preview = take_preview(data, {"argmax": baseline, "rankseg_dice": rankseg}, "argmax")
    assert (preview.index, preview.disagreement, preview.view) == (2, 4, "axial, radiological")
    assert preview.image.shape == preview.truth.shape == (4, 4)
    # RAS voxel x grows to the patient's right: in the radiological view, x = 0 is the rightmost column
    assert np.array_equal(preview.rankseg[:, -1], [1, 1, 1, 1]) and preview.baseline[:, -1].sum() == 0


def test_demo_liver_is_on_the_image_left():
    pytest.importorskip("mrcfile")
    pytest.importorskip("liver_ct_segmentation_package")
    from rankseg_eval import demo

    _, label = demo.load_volume()
    axis = slice_axis(demo.AFFINE, label.shape)
    assert axis == 0  # the demo's axial axis
    liver = orient(label.take(64, axis=axis), demo.AFFINE, axis) > 0
    assert np.nonzero(liver)[1].mean() < liver.shape[1] / 2  # the liver is in the patient's right
