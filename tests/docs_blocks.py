"""Fenced code blocks of the Markdown docs, for the tests that run every one of them.

A block is ```` ```LANG ```` ... ```` ``` ````. ``python`` blocks run in a fresh namespace; ``bash`` blocks run with
``bash -e`` in a working folder a test prepares. A block preceded by ``<!-- setup: NAME -->`` asks the test for the
fixture ``NAME``; one preceded by ``<!-- checked: REASON -->`` is only syntax-checked (``bash -n`` / ``compile``),
for commands that install packages or need a GPU, with the reason in the docs' source.
"""

from __future__ import annotations

import re
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
