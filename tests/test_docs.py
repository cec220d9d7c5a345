"""Every code block of README.md and docs/ runs (docs/eval.md has its own test with its fixtures).

Blocks run with ``docs_blocks.run_block`` in a temporary folder; blocks marked ``<!-- checked: reason -->``
(installs, GPU, datasets that cannot ship) are syntax-checked. The README's option table must list exactly the options of ``rankseg_plugins.options``,
with their defaults, and the README stays a short front door.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from docs_blocks import ROOT, Block, blocks, run_block
from rankseg_plugins.options import option_specs

OWN_TESTS = {"eval.md", "nnunet.md"}  # run by tests/test_docs_eval.py, tests/test_docs_nnunet.py
FILES = [ROOT / "README.md"] + sorted(p for p in (ROOT / "docs").glob("*.md") if p.name not in OWN_TESTS)
BLOCKS = [b for path in FILES for b in blocks(path) if b.lang in ("python", "bash")]


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block_runs(block: Block, tmp_path: Path) -> None:
    run_block(block, tmp_path)


def test_every_checked_block_says_why() -> None:
    assert all(b.arg for path in FILES for b in blocks(path) if b.tag == "checked")


def test_readme_option_table_is_the_options() -> None:
    text = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", text, re.M)
    assert [name for name, _ in rows] == list(option_specs())
    for name, default in rows:
        assert default == repr(option_specs()[name].default), name


def test_readme_is_a_front_door() -> None:
    assert (ROOT / "README.md").stat().st_size <= 12 * 1024
    for link in re.findall(r"\]\((docs/[\w.-]+\.md)\)", (ROOT / "README.md").read_text()):
        assert (ROOT / link).is_file(), link
