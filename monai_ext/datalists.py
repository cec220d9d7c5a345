"""
Data lists ``[{"image": ..., "label": ...}]`` for the dataset layouts the bundle configs in ``configs/monai`` read,
failing loudly (instead of an evaluator that silently runs zero iterations) when ``dataset_dir`` is wrong.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["kits_datalist", "lits_datalist"]


def kits_datalist(dataset_dir: str | Path) -> list[dict[str, str]]:
    """KiTS19 / KiTS23: ``<dataset_dir>/case_XXXXX/{imaging,segmentation}.nii.gz``, sorted by case."""
    cases = sorted(Path(dataset_dir).glob("case_*/imaging.nii.gz"))
    pairs = [(c, c.with_name("segmentation.nii.gz")) for c in cases]
    return _checked(pairs, dataset_dir, "case_XXXXX/imaging.nii.gz")


def lits_datalist(dataset_dir: str | Path) -> list[dict[str, str]]:
    """LiTS: ``volume-N.nii`` with ``segmentation-N.nii`` beside it, anywhere under ``<dataset_dir>``, sorted by N."""
    volumes = [v for v in Path(dataset_dir).rglob("volume-*.nii*") if re.fullmatch(r"volume-\d+\.nii(\.gz)?", v.name)]
    volumes.sort(key=lambda v: int(re.search(r"\d+", v.name).group()))  # type: ignore[union-attr]
    pairs = [(v, v.with_name("segmentation" + v.name[len("volume") :])) for v in volumes]
    return _checked(pairs, dataset_dir, "volume-N.nii")


def _checked(pairs: list[tuple[Path, Path]], dataset_dir: str | Path, pattern: str) -> list[dict[str, str]]:
    if not pairs:
        raise FileNotFoundError(f"no {pattern} found under dataset_dir={str(dataset_dir)!r}; pass --dataset_dir.")
    missing = [str(label) for _, label in pairs if not label.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} label file(s) missing, needed for scoring, e.g. {missing[0]}.")
    return [{"image": str(image), "label": str(label)} for image, label in pairs]
