"""How the decoder uses CPU threads: one image per thread for a batch, or all threads for the big passes of one
image.

A parallel region costs little on an idle machine, but when another process keeps a core busy (a data loader, a
second job) every region waits at its barrier for a thread that is not running, and OpenMP's threads spin between
regions, taking the core from the thread that has work. So every decode runs single-threaded:

* a batch of several large images is shared out image by image among ``torch.get_num_threads()`` Python threads
  (:func:`per_image`), each decoding its images alone: no barrier, no spinning, and a thread that the machine
  slows down simply takes fewer images;
* a single large image uses every thread only in the few passes over a million elements or more
  (:func:`streaming`: the statistics, passes over every block or over many gathered tiles).

On a GPU this changes nothing. Torch's thread count is per calling thread (OpenMP), so decodes in several Python
threads do not disturb each other; the count is restored when the decode ends, also on an error.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

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


def per_image(decode: Callable[[slice], torch.Tensor], probs: torch.Tensor) -> torch.Tensor | None:
    """``decode`` of every image ``probs[b : b + 1]`` on its own single-threaded Python thread, concatenated; ``None``
    (decode the batch as usual) on a GPU, for one image, one thread, small images or a one-dim spatial shape."""
    n, B = torch.get_num_threads(), probs.shape[0]
    if probs.device.type != "cpu" or B < 2 or n < 2 or probs[0].numel() < LARGE or probs.ndim < 4:
        return None

    def one(b: int) -> torch.Tensor:
        with decoding():
            return decode(slice(b, b + 1))

    with ThreadPoolExecutor(min(n, B), initializer=torch.set_num_threads, initargs=(1,)) as pool:
        return torch.cat(list(pool.map(one, range(B))))
