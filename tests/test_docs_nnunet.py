"""Every code block of docs/nnunet.md runs, in a folder holding prediction folders written by nnU-Net's own export
code (tests/nnunet_fixtures.py) under the names the page uses; the page mentions every option of rankseg-nnunet.

nnU-Net's own commands in the blocks (nnUNetv2_evaluate_folder, nnUNetv2_apply_postprocessing) run for real, with
one worker process (nnUNet_def_n_proc=1) to keep their start-up short.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("nnunetv2")

from docs_blocks import ROOT, Block, blocks, run_block  # noqa: E402
from nnunet_fixtures import build_dataset, write_postprocessing  # noqa: E402

from nnunet_ext.cli import build_parser  # noqa: E402

PAGE = ROOT / "docs" / "nnunet.md"
BLOCKS = [b for b in blocks(PAGE) if b.lang in ("python", "bash")]


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pred``, ``pred_fold1``, ``labelsTr``, ``postprocessing.pkl`` (KiTS23-like, region-based) and
    ``liver/pred``, ``liver/labelsTr`` (label-based)."""
    built = tmp_path_factory.mktemp("built")
    root = tmp_path_factory.mktemp("nnunet-docs")
    regions, labels = build_dataset(built, "regions"), build_dataset(built, "labels")
    shutil.copytree(regions / "pred_0", root / "pred")
    shutil.copytree(regions / "pred_1", root / "pred_fold1")
    shutil.copytree(regions / "raw" / "labelsTr", root / "labelsTr")
    write_postprocessing(root / "postprocessing.pkl", "regions")
    shutil.copytree(labels / "pred_0", root / "liver" / "pred")
    shutil.copytree(labels / "raw" / "labelsTr", root / "liver" / "labelsTr")
    return root


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block_runs(block: Block, examples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("nnUNet_def_n_proc", "1")
    work = tmp_path / "work"
    shutil.copytree(examples, work)
    run_block(block, work)
    for report in work.glob("**/report/report.json"):
        assert json.loads(report.read_text())["skipped"] == [], f"{block.id}: {report}"
        summary = report.parent.parent / "summary.json"
        if summary.is_file():
            assert_same_means(json.loads(report.read_text())["nnunet_convention"], json.loads(summary.read_text()))


def assert_same_means(ours: dict, summary: dict) -> None:
    """The report's means in nnU-Net's convention are those of the summary.json nnUNetv2_evaluate_folder wrote
    (for the written files: the RankSEG Dice objective by default)."""
    assert summary["mean"]
    for key, means in summary["mean"].items():
        for metric in ("Dice", "IoU"):
            assert ours["mean"]["rankseg_dice"][key][metric] == pytest.approx(means[metric], abs=1e-12)
    assert ours["foreground_mean"]["rankseg_dice"]["Dice"] == pytest.approx(summary["foreground_mean"]["Dice"])


def test_every_checked_block_says_why() -> None:
    assert all(b.arg for b in blocks(PAGE) if b.tag == "checked")


def test_page_mentions_every_option() -> None:
    text = PAGE.read_text()
    flags = [s for a in build_parser()._actions for s in a.option_strings if s not in ("-h", "--help")]
    missing = [flag for flag in flags if f"`{flag}" not in text and f" {flag}" not in text
               and not flag.startswith("--no-ignore")]
    assert not missing
