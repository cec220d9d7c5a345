"""rankseg-eval --bundle runs each bundle config the project ships (configs/monai/*/inference.yaml), copied into a
bundle folder with random weights of its own network; kits23's sigmoid region network is compared with its own
baseline, nnU-Net's 0.5 thresholds painted outermost first."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("monai")
pytest.importorskip("ignite")
nib = pytest.importorskip("nibabel")
pytest.importorskip("yaml")

from eval_fixtures import write_layout, write_shipped_bundle
from monai.bundle import run

from rankseg_eval.cli import main
from rankseg_eval.layouts import LAYOUTS
from rankseg_eval.scoring import score

pytestmark = pytest.mark.filterwarnings(
    "ignore:parsing config_file:UserWarning",  # MONAI's notice that bundle configs run code: these are ours
    "ignore:.*Orientationd.__init__.labels:FutureWarning",
)

@pytest.mark.parametrize("name", ["kits19", "kits23", "lits"])
def test_shipped_bundle_configs_run(tmp_path, name):
    ids = write_layout(tmp_path / "data", name, n=2)
    bundle = write_shipped_bundle(tmp_path / "bundle", name)
    argv = ["--data", str(tmp_path / "data"), "--layout", name, "--bundle", str(bundle), "--device", "cpu"]
    assert main(argv + ["--out", str(tmp_path / "out"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["skipped"] == [] and [c["case_id"] for c in report["cases"]] == ids
    assert list(report["summary"]) == list(LAYOUTS[name].regions)
    sigmoid = name == "kits23"
    assert report["baseline"] == ("threshold" if sigmoid else "argmax")
    activation = "sigmoid" if sigmoid else "softmax"
    assert report["decoding"]["rankseg"].endswith(f"({activation} probabilities)")
    assert report["decoding"]["options"]["rankseg_dice"]["output_mode"] == ("multilabel" if sigmoid else "multiclass")


def test_kits23_threshold_baseline_is_the_bundles_own(tmp_path):
    """The bundle's own run writes its thresholded label maps: scored on the KiTS23 regions, they give the scores
    rankseg-eval reports for its threshold baseline."""
    data = tmp_path / "data"
    ids = write_layout(data, "kits23", n=2)
    bundle = write_shipped_bundle(tmp_path / "bundle", "kits23")
    shutil.copy(bundle / "models" / "model.pt", tmp_path / "model.pt")
    run(config_file=str(bundle / "configs" / "inference.yaml"), dataset_dir=str(data),
        output_dir=str(tmp_path / "own"), checkpoint=str(tmp_path / "model.pt"), device="$torch.device('cpu')")
    argv = ["--data", str(data), "--layout", "kits23", "--bundle", str(bundle), "--device", "cpu"]
    assert main(argv + ["--out", str(tmp_path / "out"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    for case, case_id in zip(report["cases"], ids):
        own = np.asarray(nib.load(tmp_path / "own" / case_id / "imaging_threshold.nii.gz").dataobj)
        truth = np.asarray(nib.load(data / case_id / "segmentation.nii.gz").dataobj)
        expected = score({"threshold": torch.from_numpy(own.astype(np.int64))},
                         torch.from_numpy(truth.astype(np.int64)), LAYOUTS["kits23"].regions, ignore_empty=False)
        for region, scores in expected["threshold"].items():
            assert case["scores"]["threshold"][region] == pytest.approx(scores, abs=1e-6)
