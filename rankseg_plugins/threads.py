"""How the decoder uses CPU threads: all of them for the passes over the whole input, one for everything else.

A parallel region costs little on an idle machine, but when another process keeps a core busy (a data loader, a
second job) every region waits at its barrier for a thread that is not running: hundreds of short regions then
cost more than the work. So a decode runs single-threaded, and only the few passes that stream the whole input
(the statistics, passes over every block, the multiclass claims without tiles) use every thread torch has. On a
GPU this changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

_all = 0  # threads of the streaming passes in the decode under way (0: not inside a decode)


@contextlib.contextmanager
def decoding() -> Iterator[None]:
    """Run the block single-threaded, remembering torch's thread count for :func:`streaming`."""
    global _all
    if _all:  # nested: already set up
        yield
        return
    _all = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(_all)
        _all = 0


@contextlib.contextmanager
def streaming() -> Iterator[None]:
    """Inside :func:`decoding`, run the block with every thread; elsewhere change nothing."""
    if not _all:
        yield
        return
    torch.set_num_threads(_all)
    try:
        yield
    finally:
        torch.set_num_threads(1)
