"""Sliding-window inference with a MONAI network: probabilities on the label's voxel grid.

Two ways to give the network:

- a MONAI bundle directory (:class:`Bundle`): ``configs/inference.{json,yaml,yml}`` provides ``network_def``,
  ``preprocessing`` and ``inferer``; weights are ``models/model.pt`` (state dict) or ``models/model.ts``
  (TorchScript). The preprocessing gets the case's ``image`` and ``label`` paths, as a bundle's evaluation
  dataloader would; its ``Activations(d)`` post-transform says softmax or sigmoid, and a ``regions`` entry says which
  region each sigmoid channel is (checked against the layout's);
- a checkpoint: TorchScript, or a state dict (optionally under ``state_dict``/``model``/``network``) plus a network
  config (JSON/YAML ``{"_target_": "monai.networks.nets.UNet", ...}``, or a file with a ``network_def`` entry),
  with preprocessing built from the command-line options.

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

from .cases import Case, CaseData, CaseError, image_proxy, read_label
from .layouts import CaseFiles


class Predictor:
    """Image (and label) file -> ``(C, *spatial)`` float32 probabilities on CPU, on the image's original grid.

    ``activation``: ``"softmax"`` over the channels, or ``"sigmoid"`` per channel (always for a single channel).
    """

    def __init__(
        self, network: torch.nn.Module, preprocessing: Any, inferer: Any, device: str = "cpu",
        activation: str = "softmax",
    ) -> None:
        from monai.transforms import Invertd

        self.network = network.to(device).eval()
        self.preprocessing = preprocessing
        self.inferer = inferer
        self.device = device
        self.activation = activation
        self.invert = Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=False)

    def __call__(self, image: Path, label: Path | None = None) -> torch.Tensor:
        item = {"image": str(image)} if label is None else {"image": str(image), "label": str(label)}
        try:
            data = self.preprocessing(item)
        except Exception as err:  # MONAI wraps the reader's error: error_message() shows the root cause
            raise CaseError(f"cannot read or preprocess {image}") from err
        with torch.no_grad():
            logits = self.inferer(data["image"][None].to(self.device), self.network)[0].float()
            sigmoid = self.activation == "sigmoid" or logits.shape[0] == 1
            probs = torch.sigmoid(logits) if sigmoid else torch.softmax(logits, dim=0)
        if data["image"].applied_operations:  # back to the original grid (resampled, reoriented, cropped...)
            data["pred"] = probs.cpu()
            probs = self.invert(data)["pred"]
        # Interpolation can step a rounding error outside [0, 1]; the values are probabilities by construction.
        return torch.as_tensor(probs).as_subclass(torch.Tensor).float().clamp_(0.0, 1.0).contiguous()


def _parser(config: Path | dict) -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config) if isinstance(config, Path) else config)
    return parser


def _load_weights(network: torch.nn.Module, path: Path) -> torch.nn.Module:
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "network"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    network.load_state_dict(state)
    return network


def _load_torchscript(path: Path) -> torch.nn.Module:
    with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; bundles still ship model.ts
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu")


class Bundle:
    """A MONAI bundle directory, read before any inference (so its settings can be checked first)."""

    def __init__(self, root: Path, device: str = "cpu") -> None:
        configs = [root / "configs" / f"inference.{ext}" for ext in ("json", "yaml", "yml")]
        config = next((c for c in configs if c.is_file()), None)
        if config is None:
            raise FileNotFoundError(f"bundle {root}: no configs/inference.json or .yaml")
        self.root = root
        self.parser = _parser(config)
        self.parser["bundle_root"] = str(root)
        if "device" in self.parser:  # the configs' inferers run on @device: make it the one asked for
            self.parser["device"] = f"$torch.device({device!r})"
        self.device = device

    @property
    def activation(self) -> str | None:
        """``"sigmoid"`` or ``"softmax"`` as the bundle's ``Activations(d)`` post-transform says, else ``None``."""
        post = self.parser.get("postprocessing", {})
        transforms = post.get("transforms", []) if isinstance(post, dict) else []
        for t in transforms if isinstance(transforms, list) else []:
            if isinstance(t, dict) and str(t.get("_target_", "")).split(".")[-1] in ("Activationsd", "Activations"):
                for name in ("sigmoid", "softmax"):
                    if t.get(name) is True:
                        return name
        return None

    @property
    def regions(self) -> list[list[int]] | None:
        """The bundle's ``regions`` entry (its network's channels, outermost first) when it is a literal list."""
        regions = self.parser.get("regions")
        return regions if isinstance(regions, list) else None

    def predictor(self, activation: str = "softmax") -> Predictor:
        """Load the weights and build the predictor."""
        weights, script = self.root / "models" / "model.pt", self.root / "models" / "model.ts"
        if weights.is_file():
            network = _load_weights(self.parser.get_parsed_content("network_def"), weights)
        elif script.is_file():
            network = _load_torchscript(script)
        else:
            raise FileNotFoundError(f"bundle {self.root}: no models/model.pt or models/model.ts")
        return Predictor(
            network, self.parser.get_parsed_content("preprocessing"), self.parser.get_parsed_content("inferer"),
            self.device, activation,
        )


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except zipfile.BadZipFile:
        return False


def load_network(checkpoint: Path, network_config: Path | None) -> torch.nn.Module:
    """TorchScript module, or a state dict loaded into the network that ``network_config`` defines."""
    if not checkpoint.is_file():
        raise FileNotFoundError(f"--checkpoint {checkpoint} not found")
    if _is_torchscript(checkpoint):
        return _load_torchscript(checkpoint)
    if network_config is None:
        raise ValueError(f"{checkpoint} is a state dict: give --network-config (JSON/YAML with a _target_)")
    from monai.bundle import ConfigParser

    config = ConfigParser.load_config_file(str(network_config))
    network = _parser(config if "network_def" in config else {"network_def": config}).get_parsed_content("network_def")
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
    """Cases whose probabilities come from ``predictor`` run on each image (label and image checked first)."""

    def loader(entry: CaseFiles) -> Callable[[], CaseData]:
        def load() -> CaseData:
            label, affine = read_label(entry.label)
            image = image_proxy(entry.image)
            return CaseData(predictor(entry.image, entry.label), label, image, affine)

        return load

    return [Case(entry.case_id, loader(entry)) for entry in files]
