"""How the decoder uses CPU threads: all of them for the passes over the whole input, one for everything else.

A parallel region costs little on an idle machine, but when another process keeps a core busy (a data loader, a
second job) every region waits at its barrier for a thread that is not running: hundreds of short regions then
cost more than the work. So a decode runs single-threaded, and only the few passes over a million elements or more
(the statistics, passes over every block or over many gathered tiles) use every thread torch has. On a
GPU this changes nothing. Torch's thread count is per calling thread (OpenMP), so decodes in several Python
threads do not disturb each other; the count is restored when the decode ends, also on an error.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

_state = threading.local()  # .all: the calling thread's torch thread count while it decodes


@contextlib.contextmanager
def decoding() -> Iterator[None]:
    """Run the block single-threaded, remembering torch's thread count for :func:`streaming`."""
    if getattr(_state, "all", 0):  # nested: already set up
        yield
        return
    _state.all = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(_state.all)
        _state.all = 0


LARGE = 1 << 20  # elements from which a pass is worth a parallel region


@contextlib.contextmanager
def streaming(elements: int = LARGE) -> Iterator[None]:
    """Inside :func:`decoding`, run the block with every thread if it touches at least ``LARGE`` elements;
    elsewhere change nothing."""
    n = getattr(_state, "all", 0)
    if not n or elements < LARGE:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(1)
