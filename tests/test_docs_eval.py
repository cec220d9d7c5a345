"""Every code block of docs/eval.md runs, in a folder holding the tiny datasets, probabilities, bundles and
checkpoint its examples name (and, for a block marked ``<!-- setup: plan -->``, a fitted plan); a block followed by
a ``text`` block prints what that block quotes; the page mentions every option of rankseg-eval."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("monai")
pytest.importorskip("nibabel")
pytest.importorskip("yaml")

from docs_blocks import ROOT, Block, blocks, run_block
from eval_fixtures import write_layout, write_network, write_probs, write_shipped_bundle

from rankseg_eval.cli import build_parser, main

PAGE = ROOT / "docs" / "eval.md"
ALL = blocks(PAGE)
RUNNABLE = [b for b in ALL if b.lang in ("python", "bash")]
#: The demo's command (the page's first bash block that runs), checked against the table the page quotes.
DEMO = next(b for b in RUNNABLE if b.lang == "bash" and b.tag is None)
#: Other blocks whose output the page quotes in the ``text`` block right after them: block -> quoted text.
QUOTED = {b: after.code for b, after in zip(ALL, ALL[1:]) if b in RUNNABLE and b != DEMO and after.lang == "text"}
BLOCKS = [b for b in RUNNABLE if b != DEMO and b not in QUOTED]

pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning")


def kits19_weights(path: Path) -> None:
    """Random weights of the network configs/monai/kits19/inference.yaml defines (the docs copy that config)."""
    import torch
    import yaml
    from monai.bundle import ConfigParser

    config = yaml.safe_load((ROOT / "configs" / "monai" / "kits19" / "inference.yaml").read_text())
    torch.manual_seed(0)
    torch.save(ConfigParser(config).get_parsed_content("network_def").state_dict(), path)


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the examples name: datasets per layout, probabilities, bundles, a checkpoint."""
    root = tmp_path_factory.mktemp("eval-docs")
    for layout in ("kits19", "kits23", "lits", "msd"):
        ids = write_layout(root / layout, layout, n=2)
        if layout in ("kits23", "msd"):
            write_probs(root / f"{layout}-probs", root / layout, layout, ids)
    write_probs(root / "kits23-sigmoid", root / "kits23", "kits23", ids=["case_00000", "case_00001"], sigmoid=True)
    write_shipped_bundle(root / "kits23-bundle", "kits23")
    for name, n in (("val", 4), ("test", 2)):  # validation cases to fit a plan on, test cases to evaluate it on
        write_probs(root / f"{name}-probs", root / name, "lits", write_layout(root / name, "lits", n=n))
    kits19_weights(root / "kits19-weights.pt")
    weights, config = write_network(root / "net")
    weights.rename(root / "unet.pt")
    config.rename(root / "unet.json")
    return root


@pytest.fixture(scope="module")
def plan(examples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``plan.json`` fitted on the validation cases, as the page's first plan example fits it."""
    root = tmp_path_factory.mktemp("plan")
    argv = ["--data", str(examples / "val"), "--layout", "lits", "--probs", str(examples / "val-probs"),
            "--fit-plan", str(root / "plan.json"), "--out", str(root / "fit"), "--no-progress"]
    assert main(argv) == 0
    return root / "plan.json"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block_runs(block: Block, examples: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    work = tmp_path / "work"
    shutil.copytree(examples, work)
    if block.tag == "setup":
        shutil.copy(request.getfixturevalue(block.arg), work)
    run_block(block, work)
    for report in work.glob("**/report.json"):
        assert json.loads(report.read_text())["skipped"] == [], f"{block.id}: {report}"


def test_every_checked_block_says_why() -> None:
    assert all(b.arg for b in blocks(PAGE) if b.tag == "checked")


def test_page_mentions_every_option() -> None:
    text = PAGE.read_text()
    flags = [s for a in build_parser()._actions for s in a.option_strings if s.startswith("--") and s != "--help"]
    missing = [flag for flag in flags if flag not in text and not flag.startswith("--no-ignore")]
    assert not missing


def test_demo_block_prints_the_table_on_the_page(tmp_path: Path) -> None:
    """The demo's command runs and prints the table the page quotes (the decoders are deterministic)."""
    pytest.importorskip("mrcfile")
    pytest.importorskip("liver_ct_segmentation_package")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-e", "-c", DEMO.code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    quoted = next(b.code for b in blocks(PAGE) if b.lang == "text" and b.code.startswith("region")).splitlines()
    printed = done.stdout.splitlines()
    start = printed.index(quoted[0])
    assert printed[start : start + len(quoted)] == quoted
    report = json.loads((tmp_path / "out" / "rankseg-eval" / "report.json").read_text())
    deltas = [c["delta_pp"][region]["dice"] for c in report["cases"] for region in ("liver", "tumour")]
    assert (round(min(deltas), 1), round(max(deltas), 1)) == (-2.7, 0.4)  # the range the page quotes


def assert_quoted(printed: str, quoted: str) -> None:
    """Each paragraph of ``quoted`` is a run of consecutive lines of ``printed``, in order (trailing spaces aside)."""
    lines = [line.rstrip() for line in printed.splitlines()]
    position = 0
    for paragraph in quoted.split("\n\n"):
        wanted = [line.rstrip() for line in paragraph.strip("\n").splitlines()]
        found = next((i for i in range(position, len(lines) - len(wanted) + 1) if lines[i : i + len(wanted)] == wanted),
                     None)
        assert found is not None, f"not printed:\n{paragraph}\n--- printed:\n{printed}"
        position = found + len(wanted)


@pytest.mark.parametrize("block", list(QUOTED), ids=[b.id for b in QUOTED])
def test_quoted_output_is_what_the_block_prints(block: Block, tmp_path: Path) -> None:
    """The evidence the page quotes (benchmarks/plan_demo.py, the LiTS demo's plan) is what its commands print."""
    if "rankseg-eval" in block.code and "--data" not in block.code and "--probs" not in block.code:
        pytest.importorskip("mrcfile")  # the embedded demo's data
        pytest.importorskip("liver_ct_segmentation_package")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "REPO": str(ROOT)}
    done = subprocess.run(["bash", "-e", "-c", block.code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert_quoted(done.stdout, QUOTED[block])
