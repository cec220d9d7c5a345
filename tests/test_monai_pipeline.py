"""The whole MONAI chain: load -> preprocess -> sliding window -> decollate -> invert -> RankSEGd -> save."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("monai")
nib = pytest.importorskip("nibabel")

import numpy as np
import torch
from monai.data import decollate_batch, list_data_collate
from monai.inferers import SlidingWindowInferer
from monai.networks.nets import UNet
from monai.transforms import (
    Activationsd,
    Compose,
    CopyItemsd,
    EnsureChannelFirstd,
    Invertd,
    LoadImaged,
    Orientationd,
    SaveImaged,
    ScaleIntensityRanged,
    Spacingd,
)

from monai_ext import RankSEGd
from rankseg_plugins import RankSEG as CoreRankSEG

pytestmark = pytest.mark.filterwarnings("ignore:.*Orientationd.__init__.labels:FutureWarning")

SHAPE = (21, 17, 9)
AFFINE = np.array([[0.0, 0, -0.8, 40], [0, -0.8, 0, 10], [-2.5, 0, 0, 30], [0, 0, 0, 1]])  # KiTS-like axis order


def test_sliding_window_invert_rankseg_save(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "case_00000" / "imaging.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(rng.normal(0, 200, SHAPE).astype(np.int16), AFFINE), path)

    preprocessing = Compose(
        [
            LoadImaged(keys="image"),
            EnsureChannelFirstd(keys="image"),
            Orientationd(keys="image", axcodes="RAS"),
            Spacingd(keys="image", pixdim=(1.5, 1.5, 1.5), mode="bilinear"),
            ScaleIntensityRanged(keys="image", a_min=-79, a_max=304, b_min=0.0, b_max=1.0, clip=True),
        ]
    )
    batch = list_data_collate([preprocessing({"image": str(path)})])
    torch.manual_seed(0)
    network = UNet(3, 1, 3, channels=(4, 8), strides=(2,), num_res_units=0).eval()
    inferer = SlidingWindowInferer(roi_size=(16, 16, 16), sw_batch_size=2, overlap=0.5, mode="gaussian", device="cpu")
    with torch.no_grad():
        batch["pred"] = 4 * inferer(batch["image"], network)  # sharper than a random net's near-uniform output

    postprocessing = Compose(
        [
            Activationsd(keys="pred", softmax=True),
            Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True),
            CopyItemsd(keys="pred", names="probs"),
            RankSEGd(keys="pred"),
            SaveImaged(
                keys="pred",
                output_dir=tmp_path / "eval",
                output_postfix="rankseg",
                output_dtype=np.uint8,
                data_root_dir=str(tmp_path),
                separate_folder=False,
                print_log=False,
            ),
        ]
    )
    (item,) = [postprocessing(sample) for sample in decollate_batch(batch)]

    probs = item["probs"]
    assert probs.shape == (3, *SHAPE)  # Invertd went back to the input grid
    torch.testing.assert_close(item["pred"][0].long(), CoreRankSEG()(probs.as_tensor()[None])[0])
    written = nib.load(tmp_path / "eval" / "case_00000" / "imaging_rankseg.nii.gz")
    assert written.shape == SHAPE
    np.testing.assert_allclose(written.affine, AFFINE, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(written.dataobj), item["pred"][0].numpy())
