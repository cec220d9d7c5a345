"""On labels drawn from the probabilities themselves, RankSEG's expected Dice is at least argmax's.

RMA approximates the expected Dice; the approximation is sharp for large images (d >> 1), not for a handful of
pixels, so this is checked by Monte-Carlo on model-sized maps. Each image's paired Dice difference (same sampled
labels for both decoders) must not fall below zero by more than 4 standard errors.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rankseg_plugins import rankseg

N_SAMPLES = 256


def model_like(C: int, size: int, generator: torch.Generator, scale: float = 4.0) -> torch.Tensor:
    """Smooth maps: low-resolution random logits upsampled x16, scaled, softmax (sigmoid for C == 1)."""
    logits = scale * torch.randn(1, max(C, 1), size // 16, size // 16, generator=generator)
    logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
    return logits.sigmoid() if C == 1 else logits.softmax(1)


def sampled_dice(labels: torch.Tensor, y: torch.Tensor, classes: range) -> torch.Tensor:
    """Mean over classes of Dice(labels == c, y == c) for each sample; empty vs empty counts 1. ``y`` is (n, d)."""
    scores = []
    for c in classes:
        A, Y = labels.view(1, -1) == c, y == c
        den = (A.sum() + Y.sum(1)).double()
        scores.append(torch.where(den > 0, 2 * (A & Y).sum(1).double() / den.clamp_min(1), torch.ones_like(den)))
    return torch.stack(scores).mean(0)


@pytest.mark.parametrize("C", [1, 3, 5])
@pytest.mark.parametrize("metric", ["dice", "iou"])
def test_rankseg_beats_argmax_in_expectation(C, metric):
    g = torch.Generator().manual_seed(C)
    deltas = []
    for _ in range(6):
        probs = model_like(C, 96, g, scale=2.0 if C == 1 else 4.0)
        if C == 1:
            p = probs.view(1, -1)
            y = (torch.rand(N_SAMPLES, p.shape[1], generator=g) < p).long()
            base = (probs > 0.5).long()[:, 0]
            classes = range(1, 2)  # the foreground, which C == 1 decodes
        else:
            y = torch.multinomial(probs[0].reshape(C, -1).T, N_SAMPLES, replacement=True, generator=g).T
            base = probs.argmax(1)
            classes = range(C)
        ours = rankseg(probs, metric=metric)
        diff = sampled_dice(ours, y, classes) - sampled_dice(base, y, classes)
        stderr = diff.std() / N_SAMPLES**0.5
        assert diff.mean() >= -4 * stderr - 1e-12, (diff.mean().item(), stderr.item())
        deltas.append(diff.mean().item())
    if metric == "dice":
        assert sum(deltas) > 0  # and on average it gains
