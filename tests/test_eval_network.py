"""rankseg-eval with a MONAI network: state dict + config, TorchScript, bundle; the embedded demo's pieces."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("monai")
pytest.importorskip("nibabel")

from eval_fixtures import SHAPE, tree_digest, write_bundle, write_layout, write_network

from rankseg_eval import demo, inference
from rankseg_eval.cases import CaseError, error_message
from rankseg_eval.cli import main


def run(tmp_path, *argv: str) -> dict:
    assert main([*argv, "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    return json.loads((tmp_path / "out" / "report.json").read_text())


def test_state_dict_with_network_config(tmp_path):
    ids = write_layout(tmp_path / "data", "lits", n=2)
    weights, config = write_network(tmp_path / "net")
    before = tree_digest(tmp_path / "data")
    report = run(
        tmp_path, "--data", str(tmp_path / "data"), "--layout", "lits", "--checkpoint", str(weights),
        "--network-config", str(config), "--roi-size", "8", "8", "8", "--intensity-range", "-50", "250",
        "--spacing", "2", "2", "2", "--orientation", "RAS",
    )
    assert [c["case_id"] for c in report["cases"]] == ids and report["skipped"] == []
    assert report["config"]["arguments"]["roi_size"] == [8, 8, 8]
    assert tree_digest(tmp_path / "data") == before


def test_predictor_returns_probabilities_on_the_label_grid(tmp_path):
    write_layout(tmp_path / "data", "msd", n=1)
    weights, config = write_network(tmp_path / "net")
    predictor = inference.Predictor(
        inference.load_network(weights, config),
        inference.preprocessing((-50, 250), (2.0, 2.0, 3.0), "LPS"),
        inference.sliding_window((8, 8, 8)),
    )
    probs = predictor(tmp_path / "data" / "imagesTr" / "liver_0.nii.gz")
    assert probs.shape == (3, *SHAPE) and probs.dtype == torch.float32
    assert float(probs.min()) >= 0.0 and float(probs.max()) <= 1.0
    torch.testing.assert_close(probs.sum(0), torch.ones(SHAPE), atol=1e-4, rtol=0)
    with pytest.raises(CaseError, match="cannot read or preprocess") as caught:
        predictor(tmp_path / "data" / "imagesTr" / "._liver_0.nii.gz")
    assert "(cause: " in error_message(caught.value)


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_checkpoint(tmp_path):
    write_layout(tmp_path / "data", "kits19", n=1)
    weights, config = write_network(tmp_path / "net")
    scripted = torch.jit.script(inference.load_network(weights, config))
    scripted.save(str(tmp_path / "net.ts"))
    report = run(tmp_path, "--data", str(tmp_path / "data"), "--layout", "kits19", "--checkpoint",
                 str(tmp_path / "net.ts"), "--roi-size", "8", "8", "8")
    assert len(report["cases"]) == 1


def test_state_dict_without_config_is_a_usage_error(tmp_path, capsys):
    write_layout(tmp_path / "data", "kits19", n=1)
    weights, _ = write_network(tmp_path / "net")
    argv = ["--data", str(tmp_path / "data"), "--layout", "kits19", "--checkpoint", str(weights)]
    assert main(argv + ["--roi-size", "8", "8", "8", "--out", str(tmp_path / "out")]) == 2
    assert "give --network-config" in capsys.readouterr().err


def test_bundle_missing_and_corrupt_images_are_case_errors_with_their_cause(tmp_path):
    ids = write_layout(tmp_path / "data", "kits19", n=3)
    (tmp_path / "data" / ids[1] / "imaging.nii.gz").unlink()
    (tmp_path / "data" / ids[2] / "imaging.nii.gz").write_bytes(b"corrupt")
    bundle = write_bundle(tmp_path / "bundle")
    report = run(tmp_path, "--data", str(tmp_path / "data"), "--layout", "kits19", "--bundle", str(bundle))
    assert [c["case_id"] for c in report["cases"]] == ids[:1]
    reasons = [s["reason"] for s in report["skipped"]]
    assert reasons[0] == f"image {tmp_path / 'data' / ids[1]}/imaging.nii.gz not found"
    assert reasons[1].startswith(f"cannot read {tmp_path / 'data' / ids[2]}/imaging.nii.gz")
    assert "not a gzip file" in reasons[1]


def test_demo_checkpoint_is_small_and_loads():
    size = demo.CHECKPOINT.stat().st_size
    assert size < 1_000_000
    network = demo.build_network()
    network.load_state_dict(torch.load(demo.CHECKPOINT, map_location="cpu", weights_only=True))
    assert sum(p.numel() for p in network.parameters()) == 122_913


def test_demo_split_never_trains_on_held_out_slabs():
    held_out = {z for s in demo.HELD_OUT_STARTS for z in range(s, s + demo.SLAB)}
    guards = {z - 1 for z in demo.HELD_OUT_STARTS} | {z + demo.SLAB for z in demo.HELD_OUT_STARTS}
    assert len(held_out) == 64 and not (held_out | guards) & set(demo.TRAIN_SLICES)


def test_demo_without_its_data_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "DATA_PACKAGE", "no_such_data_package")
    assert main(["--out", str(tmp_path / "out")]) == 2
    assert "pip install --no-deps liver-ct-segmentation-package==1.6.0" in capsys.readouterr().err


def test_demo_end_to_end(tmp_path):
    pytest.importorskip("mrcfile")
    pytest.importorskip("liver_ct_segmentation_package")
    report = run(tmp_path)
    assert len(report["cases"]) == 8 and report["skipped"] == []
    assert list(report["summary"]) == ["liver", "tumour"]
    assert report["decoding"]["rankseg"].startswith("RankSEG by region: liver {1,2} ⊃ tumour {2}")
    assert report["summary"]["liver"]["dice"]["mean"]["argmax"] > 0.8
    assert (tmp_path / "out" / "figure.png").stat().st_size > 10_000
    assert np.isfinite(report["summary"]["tumour"]["iou"]["delta_pp"])
