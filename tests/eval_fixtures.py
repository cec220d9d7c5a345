"""Tiny on-disk datasets (each layout), probability maps and a tiny network for the `rankseg-eval` tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

SHAPE = (16, 18, 20)
AFFINE = np.diag([1.5, 1.5, 2.0, 1.0])


def volume(seed: int, num_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``(image float32, label uint8)``: an ellipsoid organ (1) holding a lesion (2) and, for 4 classes, a cyst (3)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij"), -1).astype(np.float32)
    centre = np.array(SHAPE) / 2 + rng.uniform(-2, 2, 3)
    label = np.zeros(SHAPE, np.uint8)
    label[(((grid - centre) / np.array([6, 7, 7])) ** 2).sum(-1) < 1] = 1
    lesion = centre + rng.uniform(-2, 2, 3)
    label[(((grid - lesion) / (2 + seed % 2)) ** 2).sum(-1) < 1] = 2
    if num_classes > 3:
        label[(((grid - lesion - np.array([0, 3, 0])) / 1.5) ** 2).sum(-1) < 1] = 3
    image = (label * 80.0 + rng.normal(0, 20, SHAPE)).astype(np.float32)
    return image, label


def probabilities(label: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """Noisy softmax probabilities ``(C, *spatial)`` float32 that mostly agree with ``label``."""
    rng = np.random.default_rng(seed + 100)
    logits = 2.5 * np.eye(num_classes, dtype=np.float32)[label].transpose(3, 0, 1, 2)
    logits += rng.normal(0, 1.2, logits.shape).astype(np.float32)
    return torch.softmax(torch.from_numpy(logits), 0).numpy()


def region_probabilities(label: np.ndarray, regions: list[tuple[int, ...]], seed: int) -> np.ndarray:
    """Noisy sigmoid probabilities ``(R, *spatial)`` float32, one channel per region (a region-based network)."""
    rng = np.random.default_rng(seed + 200)
    logits = np.stack([np.where(np.isin(label, r), 2.5, -2.5) for r in regions]).astype(np.float32)
    logits += rng.normal(0, 1.2, logits.shape).astype(np.float32)
    return torch.sigmoid(torch.from_numpy(logits)).numpy()


def save_nii(path: Path, array: np.ndarray) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, AFFINE), str(path))


def write_layout(root: Path, layout: str, n: int = 3) -> list[str]:
    """Write ``n`` cases in ``layout`` under ``root``; return the case ids in discovery order."""
    num_classes = 4 if layout == "kits23" else 3
    ids = []
    for i in range(n):
        image, label = volume(i, num_classes)
        if layout in ("kits19", "kits23"):
            cid = f"case_{i:05d}"
            save_nii(root / cid / "imaging.nii.gz", image)
            save_nii(root / cid / "segmentation.nii.gz", label)
        elif layout == "lits":
            cid = f"volume-{i * 5}"  # numeric order differs from string order: volume-0, -5, -10
            batch = root / f"Training Batch {1 + i % 2}"
            save_nii(batch / f"{cid}.nii", image)
            save_nii(batch / f"segmentation-{i * 5}.nii", label)
        else:
            cid = f"liver_{i}"
            save_nii(root / "imagesTr" / f"{cid}.nii.gz", image)
            save_nii(root / "labelsTr" / f"{cid}.nii.gz", label)
            (root / "imagesTr" / f"._{cid}.nii.gz").write_bytes(b"macOS resource fork")
        ids.append(cid)
    if layout == "msd":
        (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "liver", "2": "cancer"}}))
    return ids


def write_probs(
    probs_dir: Path, data_dir: Path, layout: str, ids: list[str], fmt: str = "npy", sigmoid: bool = False
) -> None:
    """Probability maps for ``ids`` from their labels, in ``npy`` / ``npz`` / ``nii.gz`` (channel-last): softmax
    over the classes, or with ``sigmoid`` one channel per scored region of the layout."""
    from rankseg_eval.cases import read_label
    from rankseg_eval.layouts import LAYOUTS, discover

    probs_dir.mkdir(parents=True, exist_ok=True)
    files = {f.case_id: f for f in discover(data_dir, layout)}
    for k, cid in enumerate(ids):
        label, _ = read_label(files[cid].label)
        if sigmoid:
            probs = region_probabilities(label, list(LAYOUTS[layout].regions.values()), k)
        else:
            probs = probabilities(label, 4 if layout == "kits23" else 3, k)
        if fmt == "npy":
            np.save(probs_dir / f"{cid}.npy", probs)
        elif fmt == "npz":
            np.savez_compressed(probs_dir / f"{cid}.npz", probs=probs)
        else:
            save_nii(probs_dir / f"{cid}.nii.gz", np.moveaxis(probs, 0, -1))


def tree_digest(root: Path) -> dict[str, str]:
    """Path -> SHA-256 (and mtime) of every file under ``root``: proof that nothing was written there."""
    return {
        str(p.relative_to(root)): f"{hashlib.sha256(p.read_bytes()).hexdigest()}:{p.stat().st_mtime_ns}"
        for p in sorted(root.rglob("*")) if p.is_file()
    }


NETWORK_CONFIG = {
    "_target_": "monai.networks.nets.UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3,
    "channels": [4, 8], "strides": [2], "num_res_units": 0,
}


def write_network(root: Path) -> tuple[Path, Path]:
    """A random tiny UNet: ``(state dict file, network config JSON)``."""
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    cfg = {k: v for k, v in NETWORK_CONFIG.items() if k != "_target_"}
    net = UNet(**cfg)
    root.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), root / "net.pt")
    (root / "net.json").write_text(json.dumps(NETWORK_CONFIG))
    return root / "net.pt", root / "net.json"


def write_bundle(root: Path) -> Path:
    """A minimal MONAI bundle (network_def, preprocessing, inferer, models/model.pt) around the tiny UNet."""
    weights, _ = write_network(root / "models")
    weights.rename(root / "models" / "model.pt")
    config = {
        "network_def": NETWORK_CONFIG,
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS",
                 "labels": [["L", "R"], ["P", "A"], ["I", "S"]]},
                {"_target_": "Spacingd", "keys": "image", "pixdim": [2.0, 2.0, 2.0], "mode": "bilinear"},
                {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -50, "a_max": 250, "b_min": 0.0,
                 "b_max": 1.0, "clip": True},
            ],
        },
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [8, 8, 8], "sw_batch_size": 2, "overlap": 0.25,
                    "mode": "gaussian"},
    }
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "configs" / "inference.json").write_text(json.dumps(config, indent=1))
    return root


SHIPPED_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "monai"
#: Overrides that keep a shipped bundle config small: a 16^3 window and a 2-level UNet.
TINY_BUNDLE = {"roi_size": [16, 16, 16], "sw_batch_size": 2, "num_workers": 0}
TINY_NET = {"channels": [4, 8], "strides": [2], "num_res_units": 0}


def write_shipped_bundle(root: Path, name: str) -> Path:
    """A bundle folder around ``configs/monai/<name>/inference.yaml`` (made small): ``root/configs/inference.yaml``
    and random weights of its network in ``root/models/model.pt``."""
    import yaml
    from monai.bundle import ConfigParser

    config = yaml.safe_load((SHIPPED_CONFIGS / name / "inference.yaml").read_text())
    config.update(TINY_BUNDLE)
    config["network_def"].update(TINY_NET)
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "inference.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (root / "models").mkdir()
    torch.manual_seed(0)
    torch.save(ConfigParser(config).get_parsed_content("network_def").state_dict(), root / "models" / "model.pt")
    return root
