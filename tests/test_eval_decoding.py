"""rankseg-eval's decoders: by region (the default for nested layouts), by class, and sigmoid region networks."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("nibabel")

from eval_fixtures import write_layout, write_probs

from rankseg_plugins import RankSEG
from rankseg_eval import Decoders
from rankseg_eval.cli import main
from rankseg_eval.layouts import LAYOUTS


def run(tmp_path, *argv: str) -> dict:
    assert main([*argv, "--out", str(tmp_path / "out"), "--no-progress", "--overwrite"]) == 0
    return json.loads((tmp_path / "out" / "report.json").read_text())


def test_nested_layouts_decode_by_region_unless_asked_by_class(tmp_path):
    data, probs = tmp_path / "data", tmp_path / "probs"
    write_probs(probs, data, "kits23", write_layout(data, "kits23", n=2))
    argv = ["--data", str(data), "--layout", "kits23", "--probs", str(probs)]
    by_region = run(tmp_path, *argv)
    assert by_region["decoding"]["rankseg"] == (
        "RankSEG by region: kidney {1,2,3} ⊃ masses {2,3} ⊃ tumour {2} (softmax probabilities)")
    assert by_region["decoding"]["options"]["rankseg_iou"]["regions"] == [[1, 2, 3], [2, 3], [2]]
    by_class = run(tmp_path, *argv, "--decode", "classes", "--solver", "exact")
    assert by_class["decoding"]["rankseg"] == "RankSEG by class (softmax probabilities)"
    assert by_class["decoding"]["options"]["rankseg_dice"]["regions"] is None
    assert by_class["decoding"]["options"]["rankseg_dice"]["solver"] == "exact"
    assert list(by_class["summary"]) == list(by_region["summary"]) == ["kidney", "masses", "tumour"]


def test_region_decoding_is_rankseg_with_the_layouts_regions():
    rng = np.random.default_rng(0)
    probs = torch.softmax(torch.from_numpy(rng.normal(0, 2, (4, 6, 7, 5))).float(), 0)
    decoders = Decoders(dict(LAYOUTS["kits23"].regions), pruning_prob=0.2)
    labels, seconds = decoders(probs)
    expected = RankSEG(metric="iou", regions=[[1, 2, 3], [2, 3], [2]], pruning_prob=0.2)(probs[None])[0]
    assert torch.equal(labels["rankseg_iou"], expected) and torch.equal(labels["argmax"], probs.argmax(0))
    assert list(labels) == list(seconds) == ["argmax", "rankseg_dice", "rankseg_iou"]


def test_threshold_baseline_paints_like_nnunet():
    rng = np.random.default_rng(1)
    probs = torch.from_numpy(rng.uniform(0, 1, (3, 9, 8))).float()
    decoders = Decoders(dict(LAYOUTS["kits23"].regions), activation="sigmoid")
    labels, _ = decoders(probs)
    expected = torch.zeros(9, 8, dtype=torch.int64)
    for channel, label in enumerate((1, 3, 2)):  # nnU-Net's regions_class_order for KiTS23
        expected[probs[channel] > 0.5] = label
    assert decoders.methods == ("threshold", "rankseg_dice", "rankseg_iou")
    assert torch.equal(labels["threshold"], expected)
    rankseg = RankSEG(regions=[[1, 2, 3], [2, 3], [2]], output_mode="multilabel")(probs[None])[0]
    assert torch.equal(labels["rankseg_dice"], rankseg)


def test_sigmoid_region_probabilities(tmp_path):
    data, probs = tmp_path / "data", tmp_path / "probs"
    ids = write_layout(data, "kits23", n=2)
    write_probs(probs, data, "kits23", ids, sigmoid=True)
    report = run(tmp_path, "--data", str(data), "--layout", "kits23", "--probs", str(probs), "--activation", "sigmoid")
    assert report["skipped"] == [] and report["baseline"] == "threshold"
    assert report["methods"] == ["threshold", "rankseg_dice", "rankseg_iou"]
    assert report["summary"]["kidney"]["dice"]["mean"]["threshold"] > 0.8
    assert "nnU-Net" in report["decoding"]["baseline"]
    assert report["decoding"]["options"]["rankseg_dice"]["output_mode"] == "multilabel"
    md = (tmp_path / "out" / "report.md").read_text()
    assert md.startswith("# rankseg-eval: threshold vs RankSEG") and "| Dice threshold |" in md

    as_softmax = ["--data", str(data), "--layout", "kits23", "--probs", str(probs), "--out", str(tmp_path / "o2")]
    assert main(as_softmax) == 1  # 3 sigmoid channels read as softmax over 4 classes: no case fits
    reason = json.loads((tmp_path / "o2" / "report.json").read_text())["skipped"][0]["reason"]
    assert reason == "label value 3 but the probabilities have only 3 channels"


def test_wrong_channel_count_for_sigmoid_regions_is_a_case_error(tmp_path):
    data, probs = tmp_path / "data", tmp_path / "probs"
    ids = write_layout(data, "kits23", n=1)
    write_probs(probs, data, "kits23", ids)  # 4 softmax channels
    argv = ["--data", str(data), "--layout", "kits23", "--probs", str(probs), "--activation", "sigmoid"]
    assert main(argv + ["--out", str(tmp_path / "out")]) == 1
    reason = json.loads((tmp_path / "out" / "report.json").read_text())["skipped"][0]["reason"]
    assert reason.startswith("4 sigmoid channels but 3 regions (kidney {1,2,3} ⊃ masses {2,3} ⊃ tumour {2})")


def test_deprecated_module_alias_still_runs(tmp_path):
    done = subprocess.run([sys.executable, "-m", "rankseg_plugins.eval", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "rankseg-eval" in done.stdout
    assert "DeprecationWarning: python -m rankseg_plugins.eval is deprecated" in done.stderr
