"""Each bundle config in configs/monai runs end to end on tiny NIfTI volumes in its dataset's own layout."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("monai")
pytest.importorskip("ignite")
nib = pytest.importorskip("nibabel")

import numpy as np
import torch
from monai.bundle import run
from monai.networks.nets import UNet

pytestmark = pytest.mark.filterwarnings(
    "ignore:parsing config_file:UserWarning",  # MONAI's notice that bundle configs run code: these are ours
    "ignore:.*Orientationd.__init__.labels:FutureWarning",
)

REPO = Path(__file__).resolve().parents[1]
SHAPE = (20, 18, 10)
# KiTS stores slices along the first array axis; LiTS is LPS-like with thick slices: both need Invertd to get back
KITS_AFFINE = np.array([[0.0, 0, -0.9, 40], [0, -0.9, 0, 10], [-2.5, 0, 0, 30], [0, 0, 0, 1]])
LITS_AFFINE = np.array([[-0.9, 0, 0, 30], [0, -0.9, 0, -20], [0, 0, 2.5, -100], [0, 0, 0, 1]])
TINY_NET = {"network_def#channels": [4, 8], "network_def#strides": [2], "network_def#num_res_units": 0}


def phantom(labels: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like volume of nested spheres (outer organ, inner lesions) and its label map."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij"))
    radius = np.linalg.norm(grid - rng.uniform(-0.1, 0.1, (3, 1, 1, 1)), axis=0)
    label = np.zeros(SHAPE, np.uint8)
    for value, r in zip(labels, (0.8, 0.45, 0.25)):
        label[radius < r] = value
    image = np.select([label == 0, label == 1], [-300, 150], 60) + rng.normal(0, 20, SHAPE)
    return image.astype(np.int16), label


def write_kits(root: Path, labels: tuple[int, ...]) -> None:
    for case in range(2):
        image, label = phantom(labels, case)
        folder = root / f"case_{case:05d}"
        folder.mkdir(parents=True)
        nib.save(nib.Nifti1Image(image, KITS_AFFINE), folder / "imaging.nii.gz")
        nib.save(nib.Nifti1Image(label, KITS_AFFINE), folder / "segmentation.nii.gz")


def write_lits(root: Path) -> None:
    for case in range(2):
        image, label = phantom((1, 2), case)
        folder = root / f"Training Batch {case + 1}"
        folder.mkdir(parents=True)
        nib.save(nib.Nifti1Image(image, LITS_AFFINE), folder / f"volume-{case}.nii")
        nib.save(nib.Nifti1Image(label, LITS_AFFINE), folder / f"segmentation-{case}.nii")


def checkpoint(path: Path, out_channels: int) -> Path:
    torch.manual_seed(0)
    network = UNet(3, 1, out_channels, channels=(4, 8), strides=(2,), num_res_units=0, norm="batch")
    torch.save(network.state_dict(), path)
    return path


# config: (dataset writer, name of the baseline decoding, labels the outputs may hold)
CASES = {
    "kits19": (lambda root: write_kits(root, (1, 2)), "argmax", {0, 1, 2}),
    "kits23": (lambda root: write_kits(root, (1, 3, 2)), "threshold", {0, 1, 2, 3}),
    "lits": (write_lits, "argmax", {0, 1, 2}),
}


def inputs_and_outputs(name: str, dataset: Path, output: Path, baseline: str) -> list[tuple[Path, list[Path]]]:
    pairs = []
    for case in range(2):
        if name == "lits":
            image = dataset / f"Training Batch {case + 1}" / f"volume-{case}.nii"
            stem = output / f"Training Batch {case + 1}" / f"volume-{case}"
        else:
            image = dataset / f"case_{case:05d}" / "imaging.nii.gz"
            stem = output / f"case_{case:05d}" / "imaging"
        pairs.append((image, [Path(f"{stem}_{decoder}.nii.gz") for decoder in ("rankseg", baseline)]))
    return pairs


def check_outputs(name: str, dataset: Path, output: Path) -> None:
    _, baseline, allowed = CASES[name]
    for image, saved in inputs_and_outputs(name, dataset, output, baseline):
        reference = nib.load(image)
        for path in saved:
            written = nib.load(path)
            assert written.shape == reference.shape == SHAPE
            np.testing.assert_allclose(written.affine, reference.affine, atol=1e-5)
            assert set(np.unique(np.asarray(written.dataobj)).tolist()) <= allowed
    with open(output / "metrics.csv") as f:
        reported = dict(csv.reader(f))
    assert set(reported) == {f"dice_{baseline}", "dice_rankseg"}
    for metric in reported:
        with open(output / f"{metric}_raw.csv") as f:
            assert len(list(csv.reader(f))) == 1 + 2  # header + one row per case


@pytest.mark.parametrize("name", CASES)
def test_bundle_config_runs_on_dataset_layout(name: str, tmp_path: Path) -> None:
    write_dataset = CASES[name][0]
    dataset, output = tmp_path / "data", tmp_path / "eval"
    write_dataset(dataset)
    run(
        config_file=str(REPO / "configs" / "monai" / name / "inference.yaml"),
        dataset_dir=str(dataset),
        output_dir=str(output),
        checkpoint=str(checkpoint(tmp_path / "model.pt", 3)),
        device="$torch.device('cpu')",
        num_workers=0,
        roi_size=[16, 16, 16],
        sw_batch_size=2,
        **TINY_NET,
    )
    check_outputs(name, dataset, output)


def test_bundle_cli(tmp_path: Path) -> None:
    dataset, output = tmp_path / "data", tmp_path / "eval"
    write_lits(dataset)
    overrides = {"roi_size": "[16,16,16]", "num_workers": "0", **{k: str(v) for k, v in TINY_NET.items()}}
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/monai/lits/inference.yaml"]
    command += ["--dataset_dir", str(dataset), "--output_dir", str(output)]
    command += ["--checkpoint", str(checkpoint(tmp_path / "model.pt", 3))]
    command += [arg for key, value in overrides.items() for arg in (f"--{key}", value)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dice_argmax" in result.stderr + result.stdout and "dice_rankseg" in result.stderr + result.stdout
    check_outputs("lits", dataset, output)
