"""rankseg-eval's scoring and reports through the function-level API: statistics, JSON, CSV, Markdown, figure."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from rankseg_plugins.options import option_specs
from rankseg_eval import Case, CaseData, CaseResult, Decoders, build_report, evaluate, terminal_table, write_reports
from rankseg_eval.layouts import Layout
from rankseg_eval.scoring import dice, iou
from rankseg_eval.summary import sign_test, summarise

LAYOUT = Layout("test", {1: "organ", 2: "lesion"}, {"organ": (1, 2), "lesion": (2,)})


def result(case_id: str, argmax: float, rankseg: float) -> CaseResult:
    """A scored case with one region whose Dice and IoU move from ``argmax`` to ``rankseg``."""
    same = {"tumour": {"dice": argmax, "iou": argmax}}
    moved = {"tumour": {"dice": rankseg, "iou": rankseg}}
    return CaseResult(case_id, 3, {"argmax": same, "rankseg_dice": moved, "rankseg_iou": moved},
                      {"argmax": 0.01, "rankseg_dice": 0.02, "rankseg_iou": 0.03})


def test_sign_test_exact_values():
    assert sign_test([1.0] * 8) == pytest.approx(2 / 256)
    assert sign_test([1.0, -1.0]) == 1.0
    assert sign_test([0.0, 0.0]) == 1.0
    assert sign_test([2.0, 3.0, 1.0, -1.0, 0.0]) == pytest.approx(2 * (1 + 4) / 16)


def test_summary_counts_and_means():
    results = [result("a", 0.50, 0.60), result("b", 0.50, 0.505), result("c", 0.70, 0.65), result("d", 0.9, 0.9),
               CaseResult("e", error="no label file")]
    summary = summarise(results, "argmax", ["tumour"])
    s = summary["tumour"]["dice"]
    assert (s["n"], s["improved"], s["stable"], s["worsened"]) == (4, 1, 2, 1)
    assert s["mean"]["argmax"] == pytest.approx(0.65) and s["mean"]["rankseg_dice"] == pytest.approx(0.66375)
    assert s["delta_pp"] == pytest.approx((10 + 0.5 - 5 + 0) / 4)
    assert s["sign_test_p"] == pytest.approx(1.0)
    assert s["rankseg"] == "rankseg_dice" and summary["tumour"]["iou"]["rankseg"] == "rankseg_iou"


def test_metrics_conventions():
    a = torch.tensor([True, True, False, False])
    b = torch.tensor([True, False, True, False])
    assert dice(a, b) == 0.5 and iou(a, b) == pytest.approx(1 / 3)
    empty = torch.zeros(4, dtype=torch.bool)
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert dice(a, empty) == 0.0


def synthetic_cases(n: int = 4, lesion: bool = True) -> list[Case]:
    """2D cases: a disc (1) with a lesion (2), blurry probabilities, as in-memory loaders."""
    yy, xx = np.mgrid[:24, :24]
    cases = []
    for i in range(n):
        r2 = (yy - 12 - i) ** 2 + (xx - 11) ** 2
        label = np.zeros((24, 24), np.int64)
        label[r2 < 64] = 1
        label[r2 < (9 + 4 * i if lesion else 0)] = 2
        logits = 3.0 * torch.nn.functional.one_hot(torch.from_numpy(label), 3).permute(2, 0, 1).float()
        logits = logits + torch.from_numpy(np.random.default_rng(i).normal(0, 1.5, (3, 24, 24))).float()
        probs = torch.softmax(logits, 0)
        cases.append(Case(f"img{i}", lambda p=probs, y=label: CaseData(p, y, y * 50.0)))
    return cases


def test_report_files(tmp_path):
    logits = torch.full((3, 24, 24), 3.0)
    cases = synthetic_cases() + [Case("broken", lambda: CaseData(logits, np.zeros((24, 24), np.int64)))]
    decoders = Decoders(dict(LAYOUT.regions), solver="rma")
    results = evaluate(cases, decoders, LAYOUT.regions)
    report = build_report(results, decoders, LAYOUT, {"source": "test"})
    paths = write_reports(tmp_path, report, results)
    assert [p.name for p in paths] == ["report.json", "cases.csv", "figure.png", "report.md"]

    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert set(saved) >= {"config", "decoding", "labels", "regions", "methods", "summary", "timing", "cases", "skipped"}
    assert saved["decoding"]["rankseg"] == "RankSEG by region: organ {1,2} ⊃ lesion {2} (softmax probabilities)"
    assert saved["decoding"]["baseline"].startswith("argmax")
    for name, metric in (("rankseg_dice", "dice"), ("rankseg_iou", "iou")):
        options = saved["decoding"]["options"][name]
        assert set(options) == set(option_specs()) and options["metric"] == metric
        assert options["regions"] == [[1, 2], [2]]
    assert saved["labels"] == {"1": "organ", "2": "lesion"}
    assert [c["case_id"] for c in saved["cases"]] == ["img0", "img1", "img2", "img3"]
    assert saved["skipped"][0]["case_id"] == "broken" and "[0, 1]" in saved["skipped"][0]["reason"]
    first = saved["cases"][0]
    assert set(first["scores"]) == {"argmax", "rankseg_dice", "rankseg_iou"}
    assert set(first["scores"]["argmax"]) == {"organ", "lesion"}
    assert first["delta_pp"]["lesion"]["dice"] == pytest.approx(
        100 * (first["scores"]["rankseg_dice"]["lesion"]["dice"] - first["scores"]["argmax"]["lesion"]["dice"]))
    assert all(v >= 0 for v in first["decode_seconds"].values())
    for metric in ("dice", "iou"):
        s = saved["summary"]["lesion"][metric]
        assert s["improved"] + s["stable"] + s["worsened"] == s["n"] == 4
        assert 0 <= s["sign_test_p"] <= 1 and (s["wilcoxon_p"] is None or 0 <= s["wilcoxon_p"] <= 1)

    rows = list(csv.DictReader((tmp_path / "cases.csv").open()))
    assert len(rows) == 4 * 2 and rows[0]["case_id"] == "img0" and rows[0]["region"] == "organ"
    assert math.isclose(float(rows[1]["dice_argmax"]), first["scores"]["argmax"]["lesion"]["dice"], abs_tol=1e-6)
    assert {"delta_dice_pp", "delta_iou_pp", "seconds_rankseg_dice", "iou_rankseg_iou"} <= set(rows[0])

    md = (tmp_path / "report.md").read_text()
    assert "| lesion | dice | 4 |" in md and "## Skipped cases (1)" in md and "![argmax vs RankSEG](figure.png)" in md
    assert "RankSEG by region: organ {1,2} ⊃ lesion {2}" in md and "pruning_prob=None" in md
    assert (tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = terminal_table(report)
    assert "RankSEG by region: organ {1,2} ⊃ lesion {2}" in table and "solver='rma'" in table
    header = next(line for line in table.splitlines() if line.startswith("region"))
    assert header.split()[:5] == ["region", "metric", "n", "argmax", "RankSEG"]
    assert "skipped broken: RankSEG rejected the probabilities" in table


def test_by_class_is_named_too():
    decoders = Decoders(solver="exact")
    assert decoders.describe()["rankseg"] == "RankSEG by class (softmax probabilities)"
    assert decoders.describe()["options"]["rankseg_dice"]["solver"] == "exact"


def test_ignore_empty_leaves_empty_truth_unscored(tmp_path):
    cases = synthetic_cases(3, lesion=False)
    plain = evaluate(cases, Decoders(dict(LAYOUT.regions)), LAYOUT.regions)
    ignoring = evaluate(cases, Decoders(dict(LAYOUT.regions), ignore_empty=True), LAYOUT.regions)
    assert all(isinstance(r.scores[m]["lesion"]["dice"], float) for r in plain for m in r.scores)
    assert all(r.scores[m]["lesion"]["dice"] is None for r in ignoring for m in r.scores)
    report = build_report(ignoring, Decoders(dict(LAYOUT.regions), ignore_empty=True), LAYOUT)
    assert list(report["summary"]) == ["organ"] and "not scored" in report["averaging"]
    write_reports(tmp_path, report, ignoring)
    assert "| img0 | lesion | - | - | - |" in (tmp_path / "report.md").read_text()


def test_no_scored_case_writes_reports_without_figure_and_removes_a_stale_one(tmp_path):
    (tmp_path / "figure.png").write_bytes(b"from an earlier run")
    results = [CaseResult("x", error="no label file")]
    report = build_report(results, Decoders(), None, {"source": "t"})
    assert [p.name for p in write_reports(tmp_path, report, results)] == ["report.json", "cases.csv", "report.md"]
    assert not (tmp_path / "figure.png").exists()
    assert report["summary"] == {} and report["timing"] == {}


def test_decoders_refuse_options_the_evaluation_sets():
    with pytest.raises(ValueError, match="set by the evaluation"):
        Decoders(metric="iou")
    with pytest.raises(ValueError, match="one channel per region"):
        Decoders(activation="sigmoid")
    with pytest.raises(ValueError, match="smooth"):
        Decoders(smooth=-1.0)
