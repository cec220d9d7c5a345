"""nnU-Net prediction folders: their cases, ``dataset.json`` and ``plans.json``, all checked before any case is
decoded.

``nnUNetv2_predict ... --save_probabilities`` writes, per case, ``<case><file_ending>`` (nnU-Net's segmentation),
``<case>.npz`` (the key ``probabilities``: float32 ``(C, *spatial)`` on the image's own grid) and ``<case>.pkl`` (the
properties its writer needs), plus ``dataset.json`` and ``plans.json``. Several folders are an ensemble, read as
``nnUNetv2_ensemble`` reads them: every folder must hold every case, the probabilities are averaged, and the
properties, ``dataset.json`` and ``plans.json`` come from the first folder.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from nnunetv2.ensembling.ensemble import average_probabilities
from nnunetv2.imageio.base_reader_writer import BaseReaderWriter
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from .pickles import load_pickle

KEY = "probabilities"
SHOWN = 5  # missing files listed in an error


@dataclass(frozen=True)
class Dataset:
    """What ``dataset.json`` and ``plans.json`` say: labels or regions, the file ending and the reader/writer."""

    dataset_json_file: Path
    plans_file: Path
    dataset_json: dict[str, Any]
    plans: dict[str, Any]
    label_manager: LabelManager
    reader_writer: type[BaseReaderWriter]

    @property
    def file_ending(self) -> str:
        return self.dataset_json["file_ending"]

    @property
    def channels(self) -> int:
        """Channels of the ``.npz`` probabilities: one softmax channel per label, or one sigmoid channel per region."""
        return self.label_manager.num_segmentation_heads

    @property
    def channel_names(self) -> list[str]:
        """``dataset.json``'s name of each channel, in channel order."""
        labels = {k: v for k, v in self.dataset_json["labels"].items() if k != "ignore"}
        if self.label_manager.has_regions:
            return [k for k, v in labels.items() if set(np.atleast_1d(v).tolist()) != {0}]
        names = {int(np.atleast_1d(v)[0]): k for k, v in labels.items()}  # {"a": [1]} is a label, not a region
        return [names.get(int(label), str(label)) for label in self.label_manager.all_labels]

    def describe_channels(self) -> str:
        """``3 softmax channels, one per label (background, liver, tumor)`` or the regions' equivalent."""
        if self.label_manager.has_regions:
            regions = ", ".join(f"{n} {r}" for n, r in zip(self.channel_names, self.label_manager.foreground_regions))
            return f"{self.channels} sigmoid channels, one per region ({regions})"
        return f"{self.channels} softmax channels, one per label ({', '.join(self.channel_names)})"


def _json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"{what} {path} not found")
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {what} {path}: {err}") from err
    if not isinstance(content, dict):
        raise ValueError(f"{what} {path} is not a JSON object")
    return content


def read_dataset(dataset_json_file: Path, plans_file: Path) -> Dataset:
    """The :class:`Dataset` of these files, with nnU-Net's own ``PlansManager`` and label manager."""
    dataset_json = _json(dataset_json_file, "dataset.json")
    plans = _json(plans_file, "plans.json")
    missing = [k for k in ("labels", "file_ending") if k not in dataset_json]
    if missing or "image_reader_writer" not in plans:
        raise ValueError(f"{dataset_json_file if missing else plans_file} lacks "
                         f"{missing or ['image_reader_writer']}; is it nnU-Net v2's?")
    manager = PlansManager(plans)
    try:
        label_manager = manager.get_label_manager(dataset_json)
        reader_writer = manager.image_reader_writer_class
    except (AssertionError, RuntimeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"nnU-Net rejects {dataset_json_file} / {plans_file}: {err}") from err
    return Dataset(dataset_json_file, plans_file, dataset_json, plans, label_manager, reader_writer)


def probabilities_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of ``path``'s ``probabilities`` array, read from its header (nothing is decompressed beyond
    it); ``ValueError`` when the file is not an ``.npz`` holding that array."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n.removesuffix(".npy") for n in archive.namelist()]
            if KEY not in names:
                raise ValueError(f"{path} holds no '{KEY}' array (it holds {names}); nnUNetv2_predict writes it with "
                                 "--save_probabilities")
            with archive.open(KEY + ".npy") as f:
                version = np.lib.format.read_magic(f)
                read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
                if version not in read:
                    raise ValueError(f"{path}: unsupported .npy format version {version}")
                shape, _, dtype = read[version](f)
    except (OSError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read {path}: {err}") from err
    return shape, dtype


@dataclass(frozen=True)
class Predictions:
    """Checked prediction folders (one, or several to ensemble), their cases and their dataset."""

    folders: tuple[Path, ...]
    cases: tuple[str, ...]
    dataset: Dataset

    def load(self, case: str) -> tuple[np.ndarray, dict[str, Any]]:
        """The case's probabilities ``(C, *spatial)`` float32, averaged over the folders exactly as
        ``nnUNetv2_ensemble`` does (nnU-Net's ``average_probabilities``), and the first folder's properties."""
        properties = load_pickle(self.folders[0] / f"{case}.pkl")
        if not isinstance(properties, dict):
            raise ValueError(f"{self.folders[0] / case}.pkl holds a {type(properties).__name__}, not nnU-Net's "
                             "properties dict")
        probs = average_probabilities([str(folder / f"{case}.npz") for folder in self.folders])
        shape = properties.get("shape_before_cropping")  # in the transposed (preprocessing) axis order
        backward = self.dataset.plans.get("transpose_backward")
        if shape is not None and backward is not None and len(shape) == len(backward) == probs.ndim - 1:
            expected = tuple(int(shape[i]) for i in backward)
            if expected != probs.shape[1:]:
                raise ValueError(f"{case}.npz is {probs.shape[1:]} but {case}.pkl describes an image of {expected}: "
                                 "the two files are not from the same prediction")
        return probs, properties


def _case_files(folder: Path, suffix: str) -> set[str]:
    return {p.name[: -len(suffix)] for p in folder.glob("*" + suffix) if not p.name.startswith("._")}


def _check_probabilities(folders: list[Path], cases: list[str], dataset: Dataset) -> None:
    for case in cases:
        shapes = {}
        for folder in folders:
            path = folder / f"{case}.npz"
            shape, dtype = probabilities_header(path)
            if dtype.kind != "f" or len(shape) < 2:
                raise ValueError(f"{path}: '{KEY}' is {dtype} {shape}; nnU-Net writes float (C, *spatial)")
            if shape[0] != dataset.channels:
                raise ValueError(
                    f"{path} has {shape[0]} channels, but {dataset.dataset_json_file} means "
                    f"{dataset.describe_channels()}: are the predictions from this dataset's model?"
                )
            shapes[path] = shape
        if len(set(shapes.values())) > 1:
            raise ValueError(f"case {case} has different shapes in the folders to ensemble: "
                             + ", ".join(f"{p} {s}" for p, s in shapes.items()))


def find_predictions(folders: list[Path], dataset_json: Path | None = None, plans: Path | None = None) -> Predictions:
    """Check ``folders`` and find their cases; ``ValueError`` saying what is missing or inconsistent.

    Every folder must hold ``<case>.npz`` (with a ``probabilities`` array of the channel count ``dataset.json``
    implies) and ``<case>.pkl`` for every case any folder has. ``dataset.json`` and ``plans.json`` come from the
    first folder unless given; the other folders' ``dataset.json`` (where present) must name the same labels.
    """
    for folder in folders:
        if not folder.is_dir():
            raise ValueError(f"input {folder} is not a folder")
    first = folders[0]
    if plans is None and not (first / "plans.json").is_file():
        raise ValueError(f"{first} holds no plans.json (nnUNetv2_ensemble writes none): pass --plans with the "
                         "plans.json of one of the models")
    dataset = read_dataset(dataset_json or first / "dataset.json", plans or first / "plans.json")
    for folder in folders[1:]:
        other = folder / "dataset.json"
        if other.is_file():
            theirs = _json(other, "dataset.json")
            for key in ("labels", "regions_class_order"):
                if theirs.get(key) != dataset.dataset_json.get(key):
                    raise ValueError(f"{other} and {dataset.dataset_json_file} differ in '{key}': the folders to "
                                     "ensemble must come from models of the same dataset")
    cases = sorted(set().union(*(_case_files(f, ".npz") for f in folders)))
    if not cases:
        raise ValueError(f"no .npz files in {', '.join(map(str, folders))}: run nnUNetv2_predict with "
                         "--save_probabilities")
    missing = [folder / f"{case}{suffix}" for folder in folders for suffix in (".npz", ".pkl")
               for case in sorted(set(cases) - _case_files(folder, suffix))]
    if missing:
        shown = ", ".join(map(str, missing[:SHOWN]))
        shown += f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
        raise ValueError(f"{len(missing)} file(s) missing, so nothing was decoded: {shown} (every folder needs each "
                         "case's .npz and .pkl, as nnUNetv2_predict --save_probabilities writes them)")
    _check_probabilities(folders, cases, dataset)
    return Predictions(tuple(folders), tuple(cases), dataset)
