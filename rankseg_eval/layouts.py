"""Dataset layouts, declared once: where a case's files are, its id, its label names and its scored regions.

Used by ``rankseg-eval --data DIR --layout NAME`` and by the bundle configs in ``configs/monai`` (``$from
rankseg_eval.layouts import datalist``), so both find the same cases in the same order. Imports only the standard
library, so a bundle config can import it cheaply.

- ``kits19`` / ``kits23``: ``DIR/case_XXXXX/imaging.nii.gz`` + ``segmentation.nii.gz``; case id ``case_XXXXX``.
- ``lits``: ``volume-N.nii[.gz]`` with ``segmentation-N.nii[.gz]`` in the same folder, anywhere under ``DIR`` (the
  release's "Training Batch 1/2" folders work as they are); case id ``volume-N``.
- ``msd``: ``DIR/imagesTr/NAME.nii.gz`` + ``DIR/labelsTr/NAME.nii.gz`` (macOS ``._*`` files ignored); case id
  ``NAME``; label names (and so regions) from ``DIR/dataset.json``.

Cases are sorted by their case number (``volume-5`` before ``volume-10``). A case whose image or label file is
missing is still listed: ``rankseg-eval`` reports it as a skipped case, :func:`datalist` raises.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

#: Scored regions: name -> the labels it is made of, outermost first.
ScoredRegions = dict[str, tuple[int, ...]]

NAMES = ("kits19", "kits23", "lits", "msd")


@dataclass(frozen=True)
class Layout:
    """A dataset's label names (label value -> name) and the regions it is scored on (name -> labels)."""

    name: str
    labels: dict[int, str]
    regions: ScoredRegions

    @property
    def region_list(self) -> list[list[int]]:
        """The scored regions as ``RankSEG(regions=...)`` takes them, outermost first."""
        return [list(labels) for labels in self.regions.values()]

    @property
    def nested(self) -> bool:
        """Whether some region holds another (KiTS, LiTS): such datasets are decoded by region by default."""
        sets = [set(r) for r in self.regions.values()]
        return any(a < b for a in sets for b in sets)


LAYOUTS: dict[str, Layout] = {
    "kits19": Layout("kits19", {1: "kidney", 2: "tumour"}, {"kidney": (1, 2), "tumour": (2,)}),
    "kits23": Layout(
        "kits23", {1: "kidney", 2: "tumour", 3: "cyst"}, {"kidney": (1, 2, 3), "masses": (2, 3), "tumour": (2,)}
    ),
    "lits": Layout("lits", {1: "liver", 2: "tumour"}, {"liver": (1, 2), "tumour": (2,)}),
}


@dataclass(frozen=True)
class CaseFiles:
    """The paths of one case's files, which may be missing (``None``: there is no file to expect)."""

    case_id: str
    image: Path | None
    label: Path | None


def layout(name: str, data_dir: Path | None = None) -> Layout:
    """The layout ``name``; ``msd`` reads its labels from ``data_dir/dataset.json``."""
    if name in LAYOUTS:
        return LAYOUTS[name]
    if name != "msd":
        raise ValueError(f"unknown layout {name!r}; choose one of {', '.join(NAMES)}")
    path = Path(data_dir or ".") / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"msd layout: {path} not found (it names the labels, and so the scored regions)")
    return msd_layout(json.loads(path.read_text()).get("labels", {}))


def msd_layout(labels: dict[str, object]) -> Layout:
    """One region per foreground label of a ``dataset.json`` ``labels`` entry: MSD's ``{"1": "liver"}`` or nnU-Net
    v2's ``{"liver": 1}``; an nnU-Net region (``{"kidney": [1, 2, 3]}``) is scored as listed."""
    names: dict[int, str] = {}
    regions: ScoredRegions = {}
    for key, value in labels.items():
        name, values = (str(value), [key]) if str(key).isdigit() else (str(key), value)
        values = [int(v) for v in (values if isinstance(values, list) else [values])]
        if values != [0]:
            regions[name] = tuple(values)
            if len(values) == 1:
                names[values[0]] = name
    if not regions:
        raise ValueError(f"dataset.json names no foreground label: {labels!r}")
    return Layout("msd", dict(sorted(names.items())), regions)


def class_layout(num_classes: int) -> Layout:
    """No layout: one region per foreground class, ``class_1 .. class_{C-1}`` (``class_1`` for one channel)."""
    labels = {c: f"class_{c}" for c in range(1, max(num_classes, 2))}
    return Layout("classes", labels, {name: (c,) for c, name in labels.items()})


def case_number(case_id: str) -> tuple[str | int, ...]:
    """Sort key that orders the numbers in a case id numerically (``volume-5`` < ``volume-10``)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", case_id))


def is_nifti(path: Path) -> bool:
    """A NIfTI file (``.nii``/``.nii.gz``), not a macOS ``._`` resource fork."""
    return path.is_file() and not path.name.startswith("._") and re.search(r"\.nii(\.gz)?$", path.name) is not None


def strip_nifti(name: str) -> str:
    """``name`` without ``.nii`` / ``.nii.gz``."""
    return re.sub(r"\.nii(\.gz)?$", "", name)


def _kits(data_dir: Path) -> list[CaseFiles]:
    folders = [p for p in data_dir.iterdir() if p.is_dir() and re.fullmatch(r"case_\d+", p.name)]
    return [CaseFiles(f.name, f / "imaging.nii.gz", f / "segmentation.nii.gz") for f in folders]


def _lits(data_dir: Path) -> list[CaseFiles]:
    cases: dict[str, CaseFiles] = {}
    for volume in data_dir.rglob("volume-*.nii*"):
        match = re.fullmatch(r"volume-(\d+)\.nii(\.gz)?", volume.name)
        if not match or not is_nifti(volume):
            continue
        case_id = strip_nifti(volume.name)
        if case_id in cases:
            raise ValueError(f"lits layout: {case_id} is both {cases[case_id].image} and {volume}; keep one")
        labels = [volume.with_name(f"segmentation-{match[1]}{ext}") for ext in (".nii", ".nii.gz")]
        cases[case_id] = CaseFiles(case_id, volume, next((p for p in labels if p.is_file()), labels[0]))
    return list(cases.values())


def _msd(data_dir: Path) -> list[CaseFiles]:
    images, labels = data_dir / "imagesTr", data_dir / "labelsTr"
    if not images.is_dir():
        raise FileNotFoundError(f"msd layout: {images} not found")
    return [CaseFiles(strip_nifti(p.name), p, labels / p.name) for p in images.iterdir() if is_nifti(p)]


def discover(data_dir: Path | str, name: str) -> list[CaseFiles]:
    """The cases of ``data_dir`` in layout ``name``, sorted by case number; raise when there are none."""
    data_dir = Path(data_dir)
    finders = {"kits19": _kits, "kits23": _kits, "lits": _lits, "msd": _msd}
    if name not in finders:
        raise ValueError(f"unknown layout {name!r}; choose one of {', '.join(NAMES)}")
    if not data_dir.is_dir():
        raise FileNotFoundError(f"--data {data_dir} is not a directory")
    cases = sorted(finders[name](data_dir), key=lambda c: case_number(c.case_id))
    if not cases:
        raise FileNotFoundError(f"no {name} cases found under {data_dir} (see `rankseg-eval --help` for layouts)")
    return cases


def datalist(dataset_dir: Path | str, name: str) -> list[dict[str, str]]:
    """``[{"image": ..., "label": ...}]`` for a bundle config that scores every case; ``FileNotFoundError`` naming
    the missing files when a case lacks its image or label (rather than an evaluator that silently runs less)."""
    cases = discover(dataset_dir, name)
    missing = [str(path) for c in cases for path in (c.image, c.label) if path is None or not path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image or label file(s) of the {len(cases)} {name} cases under "
            f"dataset_dir={str(dataset_dir)!r} are missing, and every case is scored: e.g. {missing[0]}"
        )
    return [{"image": str(c.image), "label": str(c.label)} for c in cases]
