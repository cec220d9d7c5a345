"""How the decoder uses CPU threads: single-threaded torch everywhere, and work shared out among Python threads.

An OpenMP parallel region costs little on an idle machine, but when another process keeps a core busy (a data
loader, a second job) every region waits at its barrier for a thread that is not running, and OpenMP's threads
spin between regions, so the scheduler takes them for busy ones and gives the thread with work less of a core. So
a decode never runs torch with more than one thread. Instead:

* a batch of several large images is shared out image by image (:func:`per_image`);
* a single large image shares out the parts of its big passes (:func:`map_parts`: the statistics' blocks, the
  solver's chunks, gathered tiles, pixels to resolve).

Both use a pool of ``torch.get_num_threads()`` Python threads (torch releases the GIL in its kernels), each
running torch single-threaded. An idle pool thread sleeps instead of spinning, and one that the machine slows
down takes fewer parts. On a GPU nothing is shared out. Torch's thread count is per calling thread (OpenMP), so
decodes in several Python threads do not disturb each other; the count is restored when the decode ends, also on
an error.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T, R = TypeVar("T"), TypeVar("R")
LARGE = 1 << 20  # elements from which sharing out a pass pays for handing its parts to other threads
PARTS_PER_THREAD = 4  # parts a big pass is cut into per thread, so a slowed thread hands its share to the others

_state = threading.local()  # .threads: the decode's thread count; .pool: its pool, made on first use;
# .images: images decoded side by side (in a pool thread of per_image)


@contextlib.contextmanager
def decoding(device: torch.device | None = None) -> Iterator[None]:
    """Run the block with torch single-threaded, keeping torch's thread count for :func:`map_parts`'s pool (on a
    GPU, ``device``, nothing is shared out)."""
    if getattr(_state, "threads", 0):  # nested: already set up
        yield
        return
    before = torch.get_num_threads()
    _state.threads = 1 if device is not None and device.type != "cpu" else before
    _state.pool = None
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if _state.pool is not None:
            _state.pool.shutdown()
        _state.threads, _state.pool = 0, None


def _pool() -> ThreadPoolExecutor | None:
    """The decode's pool (``None`` outside :func:`decoding`, in a pool thread, or with one thread)."""
    n = getattr(_state, "threads", 0)
    if n < 2:
        return None
    if _state.pool is None:
        _state.pool = ThreadPoolExecutor(n, thread_name_prefix="rankseg", initializer=torch.set_num_threads,
                                         initargs=(1,))
    return _state.pool


def count() -> int:
    """Threads a pass inside :func:`decoding` may share its parts among (1 when nothing is shared out)."""
    return getattr(_state, "threads", 0) if _pool() is not None else 1


def share(elements: int) -> int:
    """A part's bound on scratch of ``elements``, divided among the images decoded side by side (:func:`per_image`),
    so that they take no more memory together than one decode."""
    return max(1, elements // getattr(_state, "images", 1))


def map_parts(fn: Callable[[T], R], parts: Sequence[T], elements: int) -> list[R]:
    """``[fn(part) for part in parts]``, in order; on the decode's pool when there are several parts touching at
    least ``LARGE`` elements in all. ``fn`` may write only what no other part touches."""
    pool = _pool() if len(parts) > 1 and elements >= LARGE else None
    if pool is None:
        return [fn(part) for part in parts]
    return list(pool.map(fn, parts))


def pieces(n: int, elements: int, most: int | None = None) -> list[slice]:
    """``range(n)`` cut into slices for :func:`map_parts` (one slice when the pass is not shared out), each at most
    ``most`` long (which bounds a part's temporaries)."""
    k = max(1, min(n, count() * PARTS_PER_THREAD)) if elements >= LARGE and count() > 1 else 1
    step = max(1, min(-(-n // k), most or n))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)] or [slice(0, 0)]


def per_image(
    decode: Callable[[slice, torch.Tensor], object], probs: torch.Tensor, result: Callable[[], torch.Tensor]
) -> torch.Tensor | None:
    """``result()`` (the batch's output, made once) with ``decode(images, out)`` writing the output of every image
    ``probs[b : b + 1]`` into ``out``, its slice of it, the images shared out on the pool; ``None`` (decode the batch
    as usual) on a GPU, for one image, one thread, small images or a one-dim spatial shape."""
    B = probs.shape[0]
    if probs.device.type != "cpu" or B < 2 or torch.get_num_threads() < 2 or probs[0].numel() < LARGE \
            or probs.ndim < 4:
        return None
    with decoding(probs.device):
        pool = _pool()
        assert pool is not None
        out = result()
        n = min(B, count())

        def one(b: int) -> None:
            _state.threads, _state.images = 1, n  # this pool thread decodes alone: no nested sharing
            decode(slice(b, b + 1), out[b : b + 1])

        list(pool.map(one, range(B)))
        return out
