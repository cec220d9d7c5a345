"""Input checks shared by every solver: shape, dtype, finiteness and the [0, 1] range."""

from __future__ import annotations

import math
import warnings

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_SAMPLE_PIXELS = 4096


def spatial_dims(probs: torch.Tensor) -> tuple[int, ...]:
    """The dims after ``(B, C)``."""
    return tuple(range(2, probs.ndim))


def check_probs(probs: torch.Tensor, multiclass: bool) -> torch.Tensor:
    """Validate ``probs`` of shape ``(B, C, *spatial)`` and return its per-image, per-class maximum ``(B, C)``.

    Raises ``TypeError`` for non-tensors and non-floating dtypes, ``ValueError`` for a wrong rank, empty input,
    NaN/inf, or values outside [0, 1] (usually logits). In multiclass mode with ``C > 1`` it warns when the
    class probabilities of sampled pixels do not sum to 1 (sigmoid outputs passed to a softmax decoder).
    """
    if not isinstance(probs, torch.Tensor):
        raise TypeError(
            f"probs must be a torch.Tensor of shape (B, C, *spatial); got {type(probs).__name__}. "
            "Convert with torch.as_tensor(...)."
        )
    if probs.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"probs must be a floating tensor of probabilities (float16/bfloat16/float32/float64); got {probs.dtype}. "
            "Pass the softmax/sigmoid output of the model, not labels."
        )
    if probs.ndim < 3:
        raise ValueError(
            f"probs must have shape (B, C, *spatial) with at least one spatial dim; got shape {tuple(probs.shape)}. "
            "For a single image of shape (C, H, W) pass probs[None]."
        )
    if probs.numel() == 0:
        raise ValueError(f"probs is empty (shape {tuple(probs.shape)}): every dim must be at least 1.")
    with torch.no_grad():
        dims = spatial_dims(probs)
        pmax = probs.amax(dim=dims)
        lo, hi = probs.amin(dim=dims).min().item(), pmax.max().item()
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("probs contains NaN or inf: check the model output (e.g. for a diverged network).")
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"probs must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]: this looks like logits. "
            "Apply softmax over the class dim (multiclass) or sigmoid (multilabel) first."
        )
    if multiclass and probs.shape[1] > 1:
        _warn_if_not_normalised(probs)
    return pmax


def _warn_if_not_normalised(probs: torch.Tensor) -> None:
    """Warn when sampled pixels' class probabilities do not sum to 1 (checks a strided grid, not every pixel)."""
    sizes = probs.shape[2:]
    per_dim = math.ceil(_SAMPLE_PIXELS ** (1.0 / len(sizes)))
    index = (slice(None), slice(None)) + tuple(slice(None, None, max(1, n // per_dim)) for n in sizes)
    sample = probs[index].double().sum(dim=1)
    deviation = (sample - 1.0).abs().max().item()
    tolerance = 2e-2 if probs.dtype in (torch.float16, torch.bfloat16) else 1e-3
    if deviation > tolerance:
        warnings.warn(
            f"Class probabilities do not sum to 1 (max deviation {deviation:.3g} on sampled pixels). "
            "output_mode='multiclass' expects softmax over dim 1; for independent sigmoid outputs use "
            "output_mode='multilabel'.",
            UserWarning,
            stacklevel=4,
        )
