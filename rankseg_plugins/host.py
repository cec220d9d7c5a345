"""Device-to-host transfers of the solvers: every one goes through :func:`to_host`, so tests can count them.

A transfer from a GPU waits for every queued kernel (a host sync); the batched solver needs one per step, not one
per class.
"""

from __future__ import annotations

import torch


def to_host(t: torch.Tensor) -> torch.Tensor:
    """``t`` on the CPU (a host sync when ``t`` lives on a GPU)."""
    return t.cpu()


def nonzero(t: torch.Tensor) -> torch.Tensor:
    """Flat indices of the non-zero elements of ``t`` (a host sync on a GPU, where the count decides the size)."""
    return t.reshape(-1).nonzero().flatten()
