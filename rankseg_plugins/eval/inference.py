"""Sliding-window inference with a MONAI network: softmax probabilities on the label's voxel grid.

Two ways to give the network:

- a MONAI bundle directory: ``configs/inference.{json,yaml}`` provides ``network_def``, ``preprocessing`` (keyed
  ``image``) and ``inferer``; weights are ``models/model.pt`` (state dict) or ``models/model.ts`` (TorchScript);
- a checkpoint: TorchScript, or a state dict (optionally under ``state_dict``/``model``) plus a network config
  (JSON/YAML ``{"_target_": "monai.networks.nets.UNet", ...}``, or a file with a ``network_def`` entry), with
  preprocessing built from the command-line options.

Probabilities are mapped back to the original image grid with ``Invertd(nearest_interp=False)``, so they line up
with the label file voxel for voxel.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .datasets import Case, CaseData, CaseError, CaseFiles, load_image, load_label


class Predictor:
    """Image file -> ``(C, *spatial)`` float32 probabilities (softmax; sigmoid for one channel) on CPU."""

    def __init__(self, network: torch.nn.Module, preprocessing: Any, inferer: Any, device: str = "cpu") -> None:
        from monai.transforms import Invertd

        self.network = network.to(device).eval()
        self.preprocessing = preprocessing
        self.inferer = inferer
        self.device = device
        self.invert = Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=False)

    def __call__(self, image_path: Path) -> torch.Tensor:
        try:
            data = self.preprocessing({"image": str(image_path)})
        except Exception as err:  # MONAI wraps reader errors in RuntimeError; keep the message short
            raise CaseError(f"cannot read or preprocess {image_path}: {str(err).splitlines()[0]}") from err
        with torch.no_grad():
            logits = self.inferer(data["image"][None].to(self.device), self.network)[0].float()
            probs = torch.sigmoid(logits) if logits.shape[0] == 1 else torch.softmax(logits, dim=0)
        if data["image"].applied_operations:  # back to the original grid (resampled, reoriented, cropped...)
            data["pred"] = probs.cpu()
            probs = self.invert(data)["pred"]
        # Interpolation can step a rounding error outside [0, 1]; the values are probabilities by construction.
        return torch.as_tensor(probs).as_subclass(torch.Tensor).float().clamp_(0.0, 1.0).contiguous()


def _parse(config: Path | dict, bundle_root: Path | None = None) -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config) if isinstance(config, Path) else config)
    if bundle_root is not None:
        parser["bundle_root"] = str(bundle_root)
    return parser


def _load_weights(network: torch.nn.Module, path: Path) -> torch.nn.Module:
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "network"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    network.load_state_dict(state)
    return network


def from_bundle(bundle_dir: Path, device: str = "cpu") -> Predictor:
    """A predictor from a MONAI bundle directory."""
    configs = [bundle_dir / "configs" / f"inference.{ext}" for ext in ("json", "yaml", "yml")]
    config = next((c for c in configs if c.is_file()), None)
    if config is None:
        raise FileNotFoundError(f"bundle {bundle_dir}: no configs/inference.json or .yaml")
    parser = _parse(config, bundle_dir)
    weights, script = bundle_dir / "models" / "model.pt", bundle_dir / "models" / "model.ts"
    if weights.is_file():
        network = _load_weights(parser.get_parsed_content("network_def"), weights)
    elif script.is_file():
        network = _load_torchscript(script)
    else:
        raise FileNotFoundError(f"bundle {bundle_dir}: no models/model.pt or models/model.ts")
    return Predictor(network, parser.get_parsed_content("preprocessing"), parser.get_parsed_content("inferer"), device)


def _load_torchscript(path: Path) -> torch.nn.Module:
    with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; bundles still ship model.ts
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu")


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def load_network(checkpoint: Path, network_config: Path | None) -> torch.nn.Module:
    """TorchScript module, or a state dict loaded into the network that ``network_config`` defines."""
    if _is_torchscript(checkpoint):
        return _load_torchscript(checkpoint)
    if network_config is None:
        raise ValueError(f"{checkpoint} is a state dict: give --network-config (JSON/YAML with a _target_)")
    from monai.bundle import ConfigParser

    config = ConfigParser.load_config_file(str(network_config))
    network = _parse(config if "network_def" in config else {"network_def": config}).get_parsed_content("network_def")
    return _load_weights(network, checkpoint)


def preprocessing(
    intensity_range: Sequence[float] | None = None,
    spacing: Sequence[float] | None = None,
    orientation: str | None = None,
) -> Any:
    """Load (nibabel), channel first, optional orientation / resampling / intensity window scaled to [0, 1]."""
    from monai.transforms import (
        Compose,
        EnsureChannelFirstd,
        LoadImaged,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
    )

    steps: list[Callable] = [LoadImaged("image", reader="NibabelReader"), EnsureChannelFirstd("image")]
    if orientation:
        steps.append(Orientationd("image", axcodes=orientation, labels=(("L", "R"), ("P", "A"), ("I", "S"))))
    if spacing:
        steps.append(Spacingd("image", pixdim=tuple(spacing), mode="bilinear"))
    if intensity_range:
        lo, hi = intensity_range
        steps.append(ScaleIntensityRanged("image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True))
    return Compose(steps)


def sliding_window(roi_size: Sequence[int], sw_batch_size: int = 4, overlap: float = 0.25) -> Any:
    """MONAI's ``SlidingWindowInferer`` with gaussian blending, stitching on CPU."""
    from monai.inferers import SlidingWindowInferer

    return SlidingWindowInferer(
        roi_size=tuple(roi_size), sw_batch_size=sw_batch_size, overlap=overlap, mode="gaussian", device="cpu"
    )


def network_cases(files: list[CaseFiles], predictor: Predictor) -> list[Case]:
    """Cases whose probabilities come from ``predictor`` run on each image (label checked first)."""

    def loader(entry: CaseFiles) -> Callable[[], CaseData]:
        def load() -> CaseData:
            label = load_label(entry.label, f"a segmentation file next to {entry.image.name}")
            if entry.image is None or not entry.image.is_file():
                raise CaseError(f"image {entry.image} not found")
            return CaseData(predictor(entry.image), label, load_image(entry.image))

        return load

    return [Case(entry.case_id, loader(entry)) for entry in files]
