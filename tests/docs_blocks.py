"""Fenced code blocks of the Markdown docs, for the tests that run every one of them.

A block is ```` ```LANG ```` ... ```` ``` ````. ``python`` blocks run in a fresh interpreter and ``bash`` blocks with
``bash -e``, both in a working folder a test prepares, with the project's commands first on the PATH. A block preceded by ``<!-- setup: NAME -->`` asks the test for the
fixture ``NAME``; one preceded by ``<!-- checked: REASON -->`` is only syntax-checked (``bash -n`` / ``compile``),
for commands that install packages or need a GPU, with the reason in the docs' source.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"(?:<!--\s*(?P<tag>setup|checked):\s*(?P<arg>[^>]*?)\s*-->\s*\n)?```(?P<lang>[\w-]*)\n(?P<body>.*?)\n```",
                   re.S)


class Block(NamedTuple):
    """One fenced block: where it is (file and line), its language, its tag (``setup``/``checked``) and code."""

    path: Path
    line: int
    lang: str
    tag: str | None
    arg: str | None
    code: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path`` with a language."""
    text = path.read_text()
    found = []
    for m in FENCE.finditer(text):
        if m["lang"]:
            line = text.count("\n", 0, m.start("body"))
            found.append(Block(path, line, m["lang"], m["tag"], m["arg"], m["body"]))
    return found


def run_block(block: Block, cwd: Path, timeout: float = 600) -> None:
    """Run (or, for ``checked`` blocks, syntax-check) ``block`` in ``cwd``; fail with its output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "REPO": str(ROOT)}
    if block.lang == "python":
        command = [sys.executable, "-c", f"compile({block.code!r}, {block.id!r}, 'exec')" if block.tag == "checked"
                   else block.code]
    else:
        command = ["bash", "-n" if block.tag == "checked" else "-e", "-c", block.code]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{block.id}\n{done.stdout}\n{done.stderr}"
