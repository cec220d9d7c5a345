"""Dataset layouts (one module for rankseg-eval and the bundle configs): discovery, order, regions, formats."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("nibabel")

from eval_fixtures import probabilities, volume, write_layout, write_probs

from rankseg_eval import layouts
from rankseg_eval.cases import probs_files, read_probs
from rankseg_eval.cli import main


@pytest.mark.parametrize("name", layouts.NAMES)
def test_discover_each_layout(tmp_path, name):
    ids = write_layout(tmp_path, name)
    files = layouts.discover(tmp_path, name)
    assert [f.case_id for f in files] == ids
    assert all(f.image.is_file() and f.label.is_file() for f in files)
    assert layouts.datalist(tmp_path, name) == [{"image": str(f.image), "label": str(f.label)} for f in files]


def test_lits_is_recursive_numeric_and_pairs_in_one_folder(tmp_path):
    write_layout(tmp_path, "lits", n=3)
    files = layouts.discover(tmp_path, "lits")
    assert [f.case_id for f in files] == ["volume-0", "volume-5", "volume-10"]
    assert files[1].label == files[1].image.with_name("segmentation-5.nii")


def test_case_numbers_sort_numerically():
    ids = ["case_00010", "liver_10", "liver_9", "case_00002", "volume-100", "volume-20"]
    assert sorted(ids, key=layouts.case_number) == [
        "case_00002", "case_00010", "liver_9", "liver_10", "volume-20", "volume-100"]


def test_missing_label_is_a_case_for_rankseg_eval_and_an_error_for_a_datalist(tmp_path):
    write_layout(tmp_path, "kits19")
    missing = tmp_path / "case_00001" / "segmentation.nii.gz"
    missing.unlink()
    files = layouts.discover(tmp_path, "kits19")
    assert [f.label.is_file() for f in files] == [True, False, True]
    with pytest.raises(FileNotFoundError, match=f"1 image or label file.*3 kits19 cases.*{missing}"):
        layouts.datalist(tmp_path, "kits19")


def test_discover_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        layouts.discover(tmp_path / "nope", "lits")
    with pytest.raises(FileNotFoundError, match="no kits23 cases"):
        layouts.discover(tmp_path, "kits23")
    with pytest.raises(ValueError, match="unknown layout"):
        layouts.discover(tmp_path, "brats")
    with pytest.raises(FileNotFoundError, match="dataset.json not found"):
        layouts.layout("msd", tmp_path)


def test_regions_and_names():
    assert layouts.layout("kits19").regions == {"kidney": (1, 2), "tumour": (2,)}
    assert layouts.layout("kits23").regions == {"kidney": (1, 2, 3), "masses": (2, 3), "tumour": (2,)}
    assert layouts.layout("lits").regions == {"liver": (1, 2), "tumour": (2,)}
    assert layouts.layout("kits23").labels == {1: "kidney", 2: "tumour", 3: "cyst"}
    assert all(layouts.LAYOUTS[name].nested for name in ("kits19", "kits23", "lits"))
    assert layouts.class_layout(3).regions == {"class_1": (1,), "class_2": (2,)}
    assert layouts.class_layout(1).regions == {"class_1": (1,)}


def test_msd_dataset_json_formats(tmp_path):
    write_layout(tmp_path, "msd")
    msd = layouts.layout("msd", tmp_path)
    assert (msd.regions, msd.labels, msd.nested) == ({"liver": (1,), "cancer": (2,)}, {1: "liver", 2: "cancer"}, False)
    nnunet = layouts.msd_layout({"background": 0, "kidney": [1, 2, 3], "masses": [2, 3], "tumor": 2})
    assert nnunet.regions == {"kidney": (1, 2, 3), "masses": (2, 3), "tumor": (2,)} and nnunet.nested
    with pytest.raises(ValueError, match="no foreground label"):
        layouts.msd_layout({"0": "background"})


@pytest.mark.parametrize("fmt", ["npy", "npz", "nii.gz"])
def test_probability_formats_load_channel_first(tmp_path, fmt):
    ids = write_layout(tmp_path / "data", "msd", n=1)
    write_probs(tmp_path / "probs", tmp_path / "data", "msd", ids, fmt)
    loaded = read_probs(probs_files(tmp_path / "probs")[ids[0]])
    _, label = volume(0)
    np.testing.assert_allclose(loaded.numpy(), probabilities(label, 3, 0), rtol=1e-6)


@pytest.mark.parametrize("name", layouts.NAMES)
def test_end_to_end_per_layout(tmp_path, name):
    ids = write_layout(tmp_path / "data", name)
    write_probs(tmp_path / "probs", tmp_path / "data", name, ids)
    argv = ["--data", str(tmp_path / "data"), "--layout", name, "--probs", str(tmp_path / "probs")]
    assert main(argv + ["--out", str(tmp_path / "out"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert list(report["summary"]) == list(layouts.layout(name, tmp_path / "data").regions)
    assert [c["case_id"] for c in report["cases"]] == ids
    assert report["skipped"] == []
    by = "by class" if name == "msd" else "by region: "
    assert report["decoding"]["rankseg"].startswith(f"RankSEG {by}")


def test_probs_with_labels_dir(tmp_path):
    ids = write_layout(tmp_path / "data", "msd")
    write_probs(tmp_path / "probs", tmp_path / "data", "msd", ids, "npz")
    argv = ["--probs", str(tmp_path / "probs"), "--labels", str(tmp_path / "data" / "labelsTr")]
    assert main(argv + ["--out", str(tmp_path / "out"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert list(report["summary"]) == ["class_1", "class_2"]
    assert report["regions"] == {"class_1": [1], "class_2": [2]}
    assert len(report["cases"]) == 3
