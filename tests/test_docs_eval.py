"""Every code block of docs/eval.md runs, in a folder holding the tiny datasets, probabilities, bundles and
checkpoint its examples name; the page mentions every option of rankseg-eval."""

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

from rankseg_eval.cli import build_parser

PAGE = ROOT / "docs" / "eval.md"
RUNNABLE = [b for b in blocks(PAGE) if b.lang in ("python", "bash")]
#: The demo's command (the page's first bash block that runs), checked against the table the page quotes.
DEMO = next(b for b in RUNNABLE if b.lang == "bash" and b.tag is None)
BLOCKS = [b for b in RUNNABLE if b is not DEMO]

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
    kits19_weights(root / "kits19-weights.pt")
    weights, config = write_network(root / "net")
    weights.rename(root / "unet.pt")
    config.rename(root / "unet.json")
    return root


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block_runs(block: Block, examples: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(examples, work)
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
