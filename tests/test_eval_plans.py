"""Plans fitted by ``rankseg-eval --fit-plan``: the choice per class, cross-validation, calibration, the plan file
through every adapter, ``--plan``, and clear errors for plans that do not fit."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("scipy")

from eval_fixtures import write_layout, write_probs

from rankseg_plugins import Plan, RankSEG
from rankseg_eval import Case, CaseData, Decoders, calibration
from rankseg_eval.cli import main
from rankseg_eval.layouts import LAYOUTS
from rankseg_eval.plans import GRID, fit_plan

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("plan_demo", ROOT / "benchmarks" / "plan_demo.py")
plan_demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plan_demo)


@pytest.fixture(scope="module")
def blobs() -> dict:
    """The done-when experiment: a plan fitted on 40 synthetic cases, scored on 20 held-out ones."""
    return plan_demo.run("blobs", fit=40, test=20)


def test_fitted_plan_is_as_good_as_the_better_decoder_per_class(blobs):
    """organ gains from RankSEG, lesion (false blobs where it is absent) loses to it: per class, on the held-out
    cases, the plan scores at least as well as the better of argmax and the default, within 0.5 pp."""
    dice = blobs["dice"]
    assert dice["RankSEG()"]["organ"] > dice["argmax"]["organ"] + 0.05
    assert dice["RankSEG()"]["lesion"] < dice["argmax"]["lesion"] - 0.2
    for c in ("organ", "lesion"):
        assert dice["plan"][c] >= max(dice["argmax"][c], dice["RankSEG()"][c]) - 0.005, c
    assert blobs["decisions"]["organ"].startswith("rankseg")
    assert blobs["decisions"]["lesion"] != "rankseg"  # switched away from the default
    assert blobs["decisions"]["background"] == "rankseg"  # a class left argmax: the background follows the default


def test_calibrated_maps_keep_rankseg():
    row = plan_demo.run("calibrated", fit=40, test=20)
    assert row["decisions"]["organ"] == "rankseg"
    assert row["dice"]["plan"]["organ"] >= row["dice"]["RankSEG()"]["organ"] - 0.005


def synthetic(seeds: range, scenario: str = "blobs") -> list[Case]:
    return plan_demo.cases(seeds, scenario)


def test_evidence_and_determinism():
    cases = synthetic(range(12))
    first = fit_plan(cases, Decoders(), plan_demo.LAYOUT, folds=3)
    again = fit_plan(cases, Decoders(), plan_demo.LAYOUT, folds=3)
    assert first.plan == again.plan
    evidence = first.plan.evidence
    assert (evidence["cases"], evidence["folds"], evidence["interval"]["level"]) == (12, 3, 0.95)
    assert sorted(sum(evidence["fold_cases"], [])) == sorted(c.case_id for c in cases)
    lesion = evidence["targets"]["lesion"]
    assert set(lesion["candidates"]) == {"argmax", "rankseg", "rankseg_pruning_0.3", "rankseg_pruning_0.5",
                                         "rankseg_calibrated"}  # a fixed threshold only for the pooled metric
    for name, c in lesion["candidates"].items():
        if name != "argmax":
            lo, hi = c["interval_pp"]
            assert lo <= c["gain_pp"] <= hi
    assert len(lesion["candidates"]["rankseg_calibrated"]["folds"]) == 3
    adopted = lesion["choice"] != "argmax"
    assert adopted == (lesion["candidates"].get(lesion["choice"], {}).get("interval_pp", [0])[0] > 0)
    assert first.plan.targets == ("background", "organ", "lesion") and first.plan.channels == 3


def test_held_out_gains_are_recomputed_from_the_decodes():
    """The argmax row is argmax's mean Dice; the default's gain is the mean per-case difference, with the other
    class at argmax and the background at the default (the context every candidate is decoded in)."""
    cases = synthetic(range(10))
    fit = fit_plan(cases, Decoders(), plan_demo.LAYOUT, folds=2)
    loaded = [c.load() for c in cases]
    for value, name in plan_demo.LAYOUT.labels.items():
        decisions = [{"decoder": "rankseg"}] + [{"decoder": "rankseg" if c == value else "argmax"} for c in (1, 2)]
        alone = RankSEG.from_plan({"format": "rankseg-plan", "version": 1, "options": {}, "channels": 3,
                                   "decisions": decisions})
        argmax, ours = [], []
        for d in loaded:
            truth = torch.from_numpy(d.label) == value
            argmax.append(plan_demo.dice(d.probs.argmax(0) == value, truth))
            ours.append(plan_demo.dice(alone(d.probs[None])[0] == value, truth))
        entry = fit.report["targets"][name]["candidates"]
        assert entry["argmax"]["mean"] == pytest.approx(np.mean(argmax))
        assert entry["rankseg"]["gain_pp"] == pytest.approx(100 * (np.mean(ours) - np.mean(argmax)))


def test_ignore_empty_scores_only_present_cases_and_never_prunes():
    fit = fit_plan(synthetic(range(10)), Decoders(ignore_empty=True), plan_demo.LAYOUT, folds=2)
    lesion = fit.report["targets"]["lesion"]
    assert lesion["n"] == 5  # the lesion is present in every other case
    assert not any("pruning" in name for name in lesion["candidates"])
    assert fit.plan.options.ignore_empty


def test_dataset_aggregate_fits_a_threshold_on_the_pooled_metric():
    fit = fit_plan(synthetic(range(12)), Decoders(), plan_demo.LAYOUT, folds=3, aggregate="dataset", metric="iou")
    organ = fit.report["targets"]["organ"]["candidates"]
    assert organ["threshold"]["decision"]["threshold"] in GRID
    assert len(organ["threshold"]["folds"]) == 3
    assert fit.plan.aggregate == "dataset" and fit.plan.options.metric == "iou"
    assert "pooled" in fit.plan.evidence["convention"]


def test_temperature_and_bias_are_recovered_from_histograms():
    g = torch.Generator().manual_seed(0)
    z = 4 * torch.randn(400_000, generator=g, dtype=torch.float64)
    truth = torch.rand(z.shape, generator=g, dtype=torch.float64) < torch.sigmoid(z / 2.0 - 0.5)
    hist = calibration.logit_histogram(torch.sigmoid(z).float(), truth)
    T, b = calibration.fit_temperature(hist)
    assert T == pytest.approx(2.0, rel=0.03) and b == pytest.approx(-0.5, abs=0.03)
    assert calibration.nll(hist, 1 / T, b) < calibration.nll(hist, 1.0, 0.0)
    before, after = calibration.reliability([(hist, 1.0, 0.0)]), calibration.reliability([(hist, T, b)])
    assert after["ece"] < before["ece"] / 3
    assert calibration.fit_temperature(calibration.logit_histogram(torch.rand(100), torch.zeros(100, dtype=bool))) \
        is None  # one truth value: nothing to fit


def write_cases(root: Path, seeds: range, scenario: str = "blobs") -> tuple[Path, Path]:
    """Synthetic cases as ``.npy`` probability and label files."""
    probs, labels = root / "probs", root / "labels"
    probs.mkdir(parents=True)
    labels.mkdir(parents=True)
    for item in synthetic(seeds, scenario):
        data = item.load()
        np.save(probs / f"{item.case_id}.npy", data.probs.numpy())
        np.save(labels / f"{item.case_id}.npy", data.label)
    return probs, labels


def run_cli(*argv: str | Path) -> int:
    return main([str(a) for a in argv] + ["--no-progress"])


def test_fit_plan_then_plan_through_the_cli(tmp_path, capsys):
    probs, labels = write_cases(tmp_path / "val", range(16))
    plan_file = tmp_path / "plan.json"
    assert run_cli("--probs", probs, "--labels", labels, "--fit-plan", plan_file, "--folds", "4",
                   "--out", tmp_path / "fit") == 0
    printed = capsys.readouterr().out
    assert "gain pp" in printed and f"wrote the plan to {plan_file}" in printed
    fit_report = json.loads((tmp_path / "fit" / "report.json").read_text())
    assert fit_report["plan_fit"]["folds"] == 4 and fit_report["plan_fit"]["plan_file"] == str(plan_file)
    assert (tmp_path / "fit" / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Plan fit" in (tmp_path / "fit" / "report.md").read_text()
    plan = Plan.load(plan_file)
    assert plan.targets == ("background", "class_1", "class_2")

    test_probs, test_labels = write_cases(tmp_path / "test", range(16, 22))
    assert run_cli("--probs", test_probs, "--labels", test_labels, "--plan", plan_file, "--out", tmp_path / "test"
                   / "report") == 0
    report = json.loads((tmp_path / "test" / "report" / "report.json").read_text())
    assert report["methods"] == ["argmax", "plan"] and report["compared"] == "plan"
    assert report["decoding"]["plan"]["decisions"] == [d.as_dict() for d in plan.decisions]
    assert "plan by class" in report["decoding"]["rankseg"]
    assert "# rankseg-eval: argmax vs plan" in (tmp_path / "test" / "report" / "report.md").read_text()
    # the report scored what the plan decodes through the core
    decoder = RankSEG.from_plan(plan_file)
    first = report["cases"][0]
    data = np.load(test_probs / f"{first['case_id']}.npy")
    label = np.load(test_labels / f"{first['case_id']}.npy")
    labels_plan = decoder(torch.from_numpy(data)[None])[0].numpy()
    assert first["scores"]["plan"]["class_2"]["dice"] == pytest.approx(
        plan_demo.dice(torch.from_numpy(labels_plan == 2), torch.from_numpy(label == 2)))


@pytest.mark.parametrize("sigmoid", [False, True], ids=["softmax-regions", "sigmoid-regions"])
def test_region_plans_round_trip_through_the_cli(tmp_path, sigmoid):
    pytest.importorskip("nibabel")
    data, probs = tmp_path / "data", tmp_path / "probs"
    layout = "kits23" if sigmoid else "lits"
    ids = write_layout(data, layout, n=4)
    write_probs(probs, data, layout, ids, sigmoid=sigmoid)
    argv = ["--data", data, "--layout", layout, "--probs", probs] + (["--activation", "sigmoid"] if sigmoid else [])
    assert run_cli(*argv, "--fit-plan", tmp_path / "plan.json", "--out", tmp_path / "fit") == 0
    plan = Plan.load(tmp_path / "plan.json")
    assert plan.targets == tuple(LAYOUTS[layout].regions)
    assert plan.options.regions == tuple(tuple(r) for r in LAYOUTS[layout].regions.values())
    assert (plan.options.output_mode == "multilabel") == sigmoid
    assert run_cli(*argv, "--plan", tmp_path / "plan.json", "--out", tmp_path / "test") == 0
    report = json.loads((tmp_path / "test" / "report.json").read_text())
    assert report["skipped"] == [] and list(report["summary"]) == list(LAYOUTS[layout].regions)


def test_a_fitted_plan_decodes_alike_in_every_adapter(tmp_path):
    """The plan file -> core, rankseg-eval's decoder, MONAI's transforms and mmseg's decoder: the same labels."""
    fit = fit_plan(synthetic(range(12)), Decoders(), plan_demo.LAYOUT, folds=3)
    path = tmp_path / "plan.json"
    fit.plan.save(path)
    assert Plan.load(path) == fit.plan
    probs = synthetic(range(12, 13))[0].load().probs
    expected = RankSEG.from_plan(path)(probs[None])[0]
    labels, _ = Decoders(plan=path)(probs)
    assert torch.equal(labels["plan"], expected)
    monai_ext = pytest.importorskip("monai_ext")
    out = monai_ext.RankSEGd(keys="pred", plan=str(path))({"pred": probs})["pred"]
    assert torch.equal(torch.as_tensor(out)[0].long(), expected)
    if importlib.util.find_spec("mmseg") is not None:
        from mmseg_ext.decoders import DECODERS

        decoder = DECODERS.build(dict(type="rankseg", plan=str(path)))
        assert torch.equal(decoder(probs[None])[0], expected)


def bad_plan(tmp_path: Path, **change) -> Path:
    """A valid plan for the synthetic 3-class cases, with ``change`` applied."""
    data = {"format": "rankseg-plan", "version": 1, "options": {}, "channels": 3,
            "targets": ["background", "organ", "lesion"], "decisions": [{"decoder": "rankseg"}] * 3, **change}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


def usage_error(capsys, *argv) -> str:
    try:
        status = run_cli(*argv)
    except SystemExit as stop:
        status = stop.code
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rankseg-eval: error: "), err
    return err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(channels=4, targets=["a", "b", "c", "d"], decisions=[{"decoder": "rankseg"}] * 4),
         "the plan was fitted for 4 input channels (a, b, c, d), but the probabilities have 3"),
        (dict(options={"regions": [[1, 2], [2]]}, targets=["a", "b"], decisions=[{"decoder": "rankseg"}] * 2),
         "decodes regions [[1, 2], [2]]: give --data DIR --layout NAME"),
        (dict(version=7), "has version 7; this rankseg-plugins reads version 1"),
        (dict(format="other"), "is not a RankSEG plan"),
    ],
    ids=["class-count", "regions", "version", "format"],
)
def test_plans_that_do_not_fit_are_one_line_errors(tmp_path, capsys, change, message):
    probs, labels = write_cases(tmp_path, range(2))
    err = usage_error(capsys, "--probs", probs, "--labels", labels, "--plan", bad_plan(tmp_path, **change),
                      "--out", tmp_path / "out")
    assert message in err


def test_plan_for_other_regions_is_refused(tmp_path, capsys):
    pytest.importorskip("nibabel")
    data, probs = tmp_path / "data", tmp_path / "probs"
    write_probs(probs, data, "kits23", write_layout(data, "kits23", n=1))
    path = bad_plan(tmp_path, channels=4, options={"regions": [[1, 2], [2]]}, targets=["a", "b"],
                    decisions=[{"decoder": "rankseg"}] * 2)
    err = usage_error(capsys, "--data", data, "--layout", "kits23", "--probs", probs, "--plan", path,
                      "--out", tmp_path / "out")
    assert "the plan was fitted regions [[1, 2], [2]] (a, b), but this evaluation decodes regions kidney" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--fit-plan", "{t}/p.json", "--plan", "{t}/bad.json"], "give one of them"),
        (["--fit-plan", "{t}/p.json", "--pruning-prob", "0.5"], "the fit tries pruning itself"),
        (["--fit-plan", "{t}/bad.json"], "exists; pass --overwrite"),
        (["--fit-plan", "{t}"], "is a folder"),
        (["--plan", "{t}/bad.json", "--solver", "exact"], "carries its own RankSEG options; drop --solver"),
        (["--cases", "5:"], "selects none of the 2 cases"),
        (["--cases", "blobs_000,nope"], "unknown case id(s) ['nope']"),
        (["--fit-plan", "{t}/p.json", "--cases", ":1"], "needs at least 2"),
        (["--folds", "1"], "at least 2 folds"),
    ],
)
def test_plan_usage_errors(tmp_path, capsys, extra, message):
    probs, labels = write_cases(tmp_path, range(2))
    bad_plan(tmp_path)
    argv = ["--probs", probs, "--labels", labels, "--out", tmp_path / "out"] + [a.format(t=tmp_path) for a in extra]
    assert message in usage_error(capsys, *argv)
    assert not (tmp_path / "p.json").exists()


def test_cases_selects_by_slice_and_id(tmp_path):
    probs, labels = write_cases(tmp_path, range(4))
    argv = ["--probs", probs, "--labels", labels, "--overwrite", "--out", tmp_path / "out"]
    assert run_cli(*argv, "--cases", "1:3") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [c["case_id"] for c in report["cases"]] == ["blobs_001", "blobs_002"]
    assert run_cli(*argv, "--cases", "blobs_003,blobs_000") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [c["case_id"] for c in report["cases"]] == ["blobs_003", "blobs_000"]
    assert not (tmp_path / "out" / "reliability.png").exists()


def test_channel_count_changing_between_cases_leaves_the_case_out():
    cases = synthetic(range(6))
    odd = CaseData(torch.full((4, 8, 8), 0.25), np.zeros((8, 8), np.int64))
    fit = fit_plan(cases + [Case("odd", lambda: odd)], Decoders(), plan_demo.LAYOUT, folds=2)
    assert fit.plan.evidence["cases"] == 6


def test_plans_under_torchrun(tmp_path):
    """--plan runs under torchrun; a plan that does not fit the probabilities stops every rank with status 2."""
    probs, labels = write_cases(tmp_path, range(4))
    fit = fit_plan(synthetic(range(4)), Decoders(), plan_demo.LAYOUT, folds=2)
    fit.plan.save(tmp_path / "plan.json")

    def torchrun(plan: Path, out: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "rankseg_eval", "--probs", str(probs), "--labels", str(labels), "--plan", str(plan), "--no-progress",
               "--out", str(tmp_path / out)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ,
                                                                                    "OMP_NUM_THREADS": "1"})

    done = torchrun(tmp_path / "plan.json", "ok")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "ok" / "report.json").read_text())["methods"] == ["argmax", "plan"]
    stopped = torchrun(bad_plan(tmp_path, channels=4, targets=list("abcd"), decisions=[{"decoder": "argmax"}] * 4),
                       "bad")
    assert stopped.returncode != 0
    assert stopped.stderr.count("rankseg-eval: error: the plan was fitted for 4 input channels") == 1
