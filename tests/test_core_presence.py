"""Presence: the empty mask competes with the solver's mask under the convention the user scores with."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from rankseg_plugins import RankSEG, expected_metric, rankseg
from rankseg_plugins.exact import SMALL_P, candidate_and_empty
from rankseg_plugins.presence import empty_wins
from rankseg_plugins.rma import solve
from rankseg_plugins.validation import probability_stats
from reference import best_mask_bruteforce, expected_bruteforce


@st.composite
def small_maps(draw, max_size: int = 9) -> np.ndarray:
    """Short probability vectors from faint (a few hundredths, some below SMALL_P) to confident."""
    d = draw(st.integers(1, max_size))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1e-4, 0.01, 0.05, 0.2, 0.6, 1.0]))
    p = scale * rng.random(d)
    if draw(st.booleans()):
        p[rng.integers(d)] = draw(st.sampled_from([0.0, 0.3, 0.5, 0.9, 1.0]))
    return p


@given(small_maps(), st.sampled_from(["dice", "iou"]), st.sampled_from([0.0, 0.5]), st.booleans())
def test_decision_matches_enumeration(p, metric, smooth, ignore_empty):
    """Per convention: 0/0 := 1 keeps the better of RMA's mask and the empty mask; ignore_empty keeps RMA's mask."""
    probs = torch.as_tensor(p).view(1, 1, -1)
    rma_mask = rankseg(probs, metric=metric, smooth=smooth, output_mode="multilabel", ignore_empty=True).numpy().ravel()
    mask = rankseg(probs, metric=metric, smooth=smooth, output_mode="multilabel", ignore_empty=ignore_empty)
    mask = mask.numpy().ravel()
    if ignore_empty:
        np.testing.assert_array_equal(mask, rma_mask)
        return
    e_rma = expected_bruteforce(p, rma_mask, metric, smooth, empty=1.0)
    e_empty = expected_bruteforce(p, np.zeros_like(rma_mask), metric, smooth, empty=1.0)
    assert mask.sum() in (0, rma_mask.sum())
    if abs(e_rma - e_empty) > 1e-9:
        assert (not mask.any()) == (e_empty > e_rma), (e_rma, e_empty, mask)


@given(small_maps(), st.sampled_from(["dice", "iou"]), st.sampled_from([0.0, 0.5]), st.booleans())
def test_exact_solver_is_the_enumerated_optimum_per_convention(p, metric, smooth, ignore_empty):
    probs = torch.as_tensor(p).view(1, 1, -1)
    mask = rankseg(probs, metric=metric, smooth=smooth, output_mode="multilabel", solver="exact", ignore_empty=ignore_empty)
    got = expected_bruteforce(p, mask.numpy().ravel(), metric, smooth, empty=1.0)
    best = best_mask_bruteforce(p, metric, smooth, allow_empty=not ignore_empty)
    if ignore_empty and p.max() > 0:
        assert mask.any()
    assert got >= best - 1e-10, (got, best)


@given(small_maps(max_size=12), st.integers(0, 2**32 - 1), st.sampled_from(["dice", "iou"]), st.sampled_from([0.0, 1.0]))
def test_candidate_and_empty_match_enumeration(p, seed, metric, smooth):
    """The presence evaluator (pixels below SMALL_P summarised by power sums) against all 2^d outcomes."""
    p[: p.size // 2] *= SMALL_P  # half the pixels in the summarised range
    theta = np.random.default_rng(seed).choice(np.append(p, [0.0, 0.5 * SMALL_P]))
    e_cand, e_empty = candidate_and_empty(torch.as_tensor(p), torch.tensor(theta), metric, smooth)
    mask = p > theta
    assert e_cand == pytest.approx(expected_bruteforce(p, mask, metric, smooth, empty=1.0), rel=1e-9, abs=1e-12)
    assert e_empty == pytest.approx(expected_bruteforce(p, np.zeros(p.size, bool), metric, smooth, empty=1.0),
                                    rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("metric", ["dice", "iou"])
@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_candidate_and_empty_match_expected_metric_on_large_maps(metric, smooth):
    """On 64x64 faint maps (mostly below SMALL_P) the series agree with the binned evaluation of every pixel."""
    g = torch.Generator().manual_seed(0)
    probs = faint_maps(4, 1, 64, g, shift=-9.0).double()
    for b in range(4):
        row = probs[b, 0]
        theta = row.flatten().sort(descending=True).values[5]
        mask = (row > theta)[None, None]
        e_cand, e_empty = candidate_and_empty(row, theta, metric, smooth)
        want = expected_metric(probs[b : b + 1], mask, metric=metric, smooth=smooth).item()
        want_empty = expected_metric(probs[b : b + 1], torch.zeros_like(mask), metric=metric, smooth=smooth).item()
        assert e_cand == pytest.approx(want, rel=1e-9) and e_empty == pytest.approx(want_empty, rel=1e-9)


def faint_maps(B: int, C: int, size: int, g: torch.Generator, shift: float = -6.0) -> torch.Tensor:
    """Sigmoid maps with a few expected foreground pixels (smooth blobs, low logits)."""
    logits = 3.0 * torch.randn(B, C, size // 8, size // 8, generator=g)
    logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
    offsets = shift + 4.0 * torch.rand(B, C, 1, 1, generator=g)
    return (logits + offsets).sigmoid()


@pytest.mark.parametrize("metric", ["dice", "iou"])
@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_bounds_never_overrule_the_exact_comparison(metric, smooth):
    """Pairs settled by the cheap bounds get the decision the exact evaluation of both masks gives."""
    g = torch.Generator().manual_seed(1)
    probs = torch.cat([faint_maps(6, 3, 48, g, shift) for shift in (-12.0, -8.0, -5.0, -2.0, 1.0)])
    stats = probability_stats(probs, multiclass=False)
    cand = solve(probs, stats, metric, smooth)
    decided = empty_wins(probs, stats, cand, metric, smooth)
    assert 0 < decided.sum() < decided.numel()
    for b in range(probs.shape[0]):
        for c in range(probs.shape[1]):
            if cand.tau[b, c] == 0:
                assert decided[b, c]
                continue
            e_cand, e_empty = candidate_and_empty(probs[b, c], cand.theta[b, c], metric, smooth)
            if abs(e_cand - e_empty) > 1e-12:
                assert bool(decided[b, c]) == (e_empty > e_cand), (b, c, e_cand, e_empty)


def test_an_empty_class_never_appears_in_multiclass_output():
    """A class decided absent in an image wins no pixel there, also not unclaimed ones (the old rule let it)."""
    g = torch.Generator().manual_seed(2)
    logits = F.interpolate(4 * torch.randn(8, 4, 8, 8, generator=g), size=(64, 64), mode="bilinear")
    logits[::2, 3] -= 10.0  # class 3 faint in every other image
    probs = logits.softmax(1)
    for options in ({}, dict(solver="exact"), dict(pruning_prob=0.5), dict(unassigned="void")):
        rs = RankSEG(**options)
        labels, theta = rs(probs), rs.thresholds(probs)
        assert theta[::2, 3].isinf().any()
        for b in range(8):
            for c in theta[b].isinf().nonzero().flatten().tolist():
                assert not (labels[b] == c).any(), (options, b, c)


def test_faint_class_no_longer_loses_to_argmax():
    """The issue's case, smaller: a class faint in half of the calibrated maps. Exact expected Dice per class."""
    g = torch.Generator().manual_seed(3)
    logits = F.interpolate(4 * torch.randn(12, 4, 8, 8, generator=g), size=(48, 48), mode="bilinear")
    logits[::2, 3] = -10.0
    probs = logits.softmax(1).double()
    onehot = lambda labels: F.one_hot(labels, 4).permute(0, 3, 1, 2).bool()  # noqa: E731
    score = {name: expected_metric(probs, onehot(labels))
             for name, labels in [("argmax", probs.argmax(1)), ("default", rankseg(probs)),
                                  ("exact", rankseg(probs, solver="exact"))]}
    assert score["default"][::2, 3].mean() >= score["argmax"][::2, 3].mean()  # where the class is faint
    assert score["default"].mean() >= score["argmax"].mean()
    assert score["default"].mean() >= score["exact"].mean() - 2e-3


def test_pruning_prob_is_the_reference_heuristic_in_both_modes():
    probs = torch.rand(2, 3, 10, 10)
    probs[0, 1] *= 0.4  # max <= 0.4
    for mode in ("multilabel", "multiclass"):
        theta = RankSEG(output_mode=mode, pruning_prob=0.45).thresholds(probs.softmax(1) if mode == "multiclass" else probs)
        assert theta[0, 1].isinf() or mode == "multiclass"
    masks = rankseg(probs, output_mode="multilabel", pruning_prob=0.45)
    assert not masks[0, 1].any() and masks[1].any()


def test_ignore_empty_never_predicts_absent():
    g = torch.Generator().manual_seed(4)
    probs = faint_maps(6, 2, 32, g, shift=-10.0)
    assert not rankseg(probs, output_mode="multilabel").flatten(2).any(2).all()  # 0/0 := 1: some absent
    assert rankseg(probs, output_mode="multilabel", ignore_empty=True).flatten(2).any(2).all()
    with pytest.raises(ValueError, match="ignore_empty"):
        RankSEG(ignore_empty=True, pruning_prob=0.5)
