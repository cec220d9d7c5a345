"""`rankseg-eval` dataset layouts: discovery, regions, probability formats, end to end per layout."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("nibabel")

from eval_fixtures import probabilities, volume, write_layout, write_probs

from rankseg_plugins.eval import datasets
from rankseg_plugins.eval.cli import main


@pytest.mark.parametrize("layout", datasets.LAYOUTS)
def test_discover_each_layout(tmp_path, layout):
    ids = write_layout(tmp_path, layout)
    files = datasets.discover(tmp_path, layout)
    assert [f.case_id for f in files] == ids
    assert all(f.image.is_file() and f.label is not None and f.label.is_file() for f in files)


def test_lits_is_recursive_and_numeric(tmp_path):
    write_layout(tmp_path, "lits", n=3)
    files = datasets.discover(tmp_path, "lits")
    assert [f.case_id for f in files] == ["volume-0", "volume-5", "volume-10"]
    assert files[1].label.name == "segmentation-5.nii"


def test_missing_label_is_kept_as_a_case(tmp_path):
    write_layout(tmp_path, "kits19")
    (tmp_path / "case_00001" / "segmentation.nii.gz").unlink()
    files = datasets.discover(tmp_path, "kits19")
    assert [f.label is None for f in files] == [False, True, False]


def test_discover_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        datasets.discover(tmp_path / "nope", "lits")
    with pytest.raises(FileNotFoundError, match="no kits23 cases"):
        datasets.discover(tmp_path, "kits23")
    with pytest.raises(ValueError, match="unknown layout"):
        datasets.discover(tmp_path, "brats")


def test_regions(tmp_path):
    assert datasets.layout_regions("kits23", None) == {"kidney": (1, 2, 3), "masses": (2, 3), "tumour": (2,)}
    assert datasets.layout_regions("lits", None) == {"liver": (1, 2), "tumour": (2,)}
    write_layout(tmp_path, "msd")
    assert datasets.layout_regions("msd", tmp_path) == {"liver": (1,), "cancer": (2,)}
    assert datasets.layout_regions("msd", tmp_path / "imagesTr") is None
    assert datasets.class_regions(3) == {"class_1": (1,), "class_2": (2,)}
    assert datasets.class_regions(1) == {"class_1": (1,)}


@pytest.mark.parametrize("fmt", ["npy", "npz", "nii.gz"])
def test_probability_formats_load_channel_first(tmp_path, fmt):
    ids = write_layout(tmp_path / "data", "msd", n=1)
    write_probs(tmp_path / "probs", tmp_path / "data", "msd", ids, fmt)
    loaded = datasets.load_probs(datasets.probs_files(tmp_path / "probs")[ids[0]])
    _, label = volume(0)
    np.testing.assert_allclose(loaded.numpy(), probabilities(label, 3, 0), rtol=1e-6)


@pytest.mark.parametrize("layout", datasets.LAYOUTS)
def test_end_to_end_per_layout(tmp_path, layout):
    ids = write_layout(tmp_path / "data", layout)
    write_probs(tmp_path / "probs", tmp_path / "data", layout, ids)
    argv = ["--data", str(tmp_path / "data"), "--layout", layout, "--probs", str(tmp_path / "probs")]
    assert main(argv + ["--out", str(tmp_path / "out"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    expected = {
        "kits19": ["kidney", "tumour"], "kits23": ["kidney", "masses", "tumour"],
        "lits": ["liver", "tumour"], "msd": ["liver", "cancer"],
    }[layout]
    assert list(report["summary"]) == expected
    assert [c["case_id"] for c in report["cases"]] == ids
    assert report["skipped"] == []


def test_probs_with_labels_dir(tmp_path):
    ids = write_layout(tmp_path / "data", "msd")
    write_probs(tmp_path / "probs", tmp_path / "data", "msd", ids, "npz")
    argv = ["--probs", str(tmp_path / "probs"), "--labels", str(tmp_path / "data" / "labelsTr")]
    assert main(argv + ["--out", str(tmp_path / "out"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert list(report["summary"]) == ["class_1", "class_2"]
    assert report["regions"] == {"class_1": [1], "class_2": [2]}
    assert len(report["cases"]) == 3
