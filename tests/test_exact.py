"""The exact solver (``solver="exact"``) and ``expected_metric`` against brute force, Monte-Carlo and RMA."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from rankseg_plugins import RankSEG
from rankseg_plugins.exact import _bounds, exact_thresholds, expected_metric, expected_metric_curve

TIE_VALUES = [0.0, 0.05, 0.2, 0.5, 0.9, 1.0]
SMOOTHS = [0.0, 0.0, 0.1, 1.0, 7.5]


def _draw(kind: str, d: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "uniform":
        return rng.random(d)
    if kind == "ties":
        return rng.choice(TIE_VALUES, d)
    if kind == "peaky":
        return 1 / (1 + np.exp(-8 * rng.standard_normal(d)))
    if kind == "tiny":
        return rng.random(d) * 1e-6
    if kind == "near_one":
        return 1 - rng.random(d) * 1e-9
    return np.zeros(d) if kind == "zeros" else np.ones(d)


@st.composite
def prob_vectors(draw, min_size: int = 1, max_size: int = 12) -> np.ndarray:
    d = draw(st.integers(min_size, max_size))
    kind = draw(st.sampled_from(["uniform", "ties", "peaky", "tiny", "near_one", "zeros", "ones"]))
    return _draw(kind, d, np.random.default_rng(draw(st.integers(0, 2**32 - 1))))


def brute_force(p: np.ndarray, masks: np.ndarray, metric: str, s: float) -> np.ndarray:
    """E[metric] of each row of ``masks (m, d)`` by enumerating all 2^d label vectors (0/0 := 1)."""
    Y = np.array(list(itertools.product([False, True], repeat=p.size)))
    weight = np.prod(np.where(Y, p, 1 - p), axis=1)
    out = []
    for mask in masks:
        inter, union_y = (Y & mask).sum(1), Y.sum(1)
        num = (2 * inter if metric == "dice" else inter) + s
        den = mask.sum() + union_y + s - (0 if metric == "dice" else inter)
        out.append(weight @ np.where(den > 0, num / np.maximum(den, 1e-300), 1.0))
    return np.array(out)


def top_tau_masks(p_sorted: np.ndarray) -> np.ndarray:
    return np.arange(p_sorted.size)[None, :] < np.arange(p_sorted.size + 1)[:, None]


def best_tau(p_sorted: np.ndarray, values: np.ndarray, tol: float = 1e-12) -> int:
    """Smallest tie-group boundary tau whose value is within ``tol`` of the best boundary."""
    d = p_sorted.size
    ok = [t for t in range(d + 1) if t in (0, d) or p_sorted[t - 1] > p_sorted[t]]
    best = max(values[ok])
    return min(t for t in ok if values[t] >= best - tol)


@given(prob_vectors(), st.sampled_from(["dice", "iou"]), st.sampled_from(SMOOTHS))
def test_curve_matches_enumeration(p, metric, smooth):
    p_sorted, values = expected_metric_curve(torch.as_tensor(p), metric, smooth)
    assert torch.equal(p_sorted, torch.sort(torch.as_tensor(p), descending=True).values)
    ref = brute_force(p_sorted.numpy(), top_tau_masks(p_sorted.numpy()), metric, smooth)
    np.testing.assert_allclose(values.numpy(), ref, rtol=0, atol=1e-12)


@given(prob_vectors(), st.integers(0, 2**32 - 1), st.sampled_from(["dice", "iou"]), st.sampled_from(SMOOTHS))
def test_arbitrary_masks_match_enumeration(p, seed, metric, smooth):
    masks = np.random.default_rng(seed).random((3, p.size)) < [[0.0], [0.5], [1.0]]
    probs = torch.as_tensor(p).expand(1, 3, -1)
    got = expected_metric(probs, torch.as_tensor(masks)[None], metric=metric, smooth=smooth)
    np.testing.assert_allclose(got[0].numpy(), brute_force(p, masks, metric, smooth), rtol=0, atol=1e-12)


@pytest.mark.parametrize("metric", ["dice", "iou"])
def test_fourteen_pixels_with_exact_zeros_and_ones(metric):
    rng = np.random.default_rng(14)
    p = np.r_[0.0, 0.0, 1.0, 1.0, 1e-7, 1 - 1e-7, 0.5, 0.5, rng.random(6)]
    p_sorted, values = expected_metric_curve(torch.as_tensor(p), metric, 0.5)
    ref = brute_force(p_sorted.numpy(), top_tau_masks(p_sorted.numpy()), metric, 0.5)
    np.testing.assert_allclose(values.numpy(), ref, rtol=0, atol=1e-12)


@given(prob_vectors(), st.sampled_from(["dice", "iou"]), st.sampled_from(SMOOTHS))
def test_solver_picks_enumerated_optimum(p, metric, smooth):
    """The mask is ``x > t``, never splits a tie group, and is the smallest best top-tau mask by enumeration."""
    x = torch.as_tensor(p)
    t = exact_thresholds(x[None], metric, smooth)
    assert t.dtype == torch.float64 and t.shape == (1,)
    mask = (x > t).numpy()
    p_sorted = np.sort(p)[::-1]
    values = brute_force(p_sorted, top_tau_masks(p_sorted), metric, smooth)
    assert mask.sum() == best_tau(p_sorted, values)
    assert not (np.isin(p[mask], p[~mask])).any()  # no tie group split
    if not mask.any():
        assert t.item() >= p.max()


@given(prob_vectors(min_size=20, max_size=400), st.sampled_from(["dice", "iou"]), st.sampled_from(SMOOTHS))
def test_window_holds_the_optimum_of_the_full_curve(p, metric, smooth):
    """The solver only evaluates a window of tau; its choice equals the argmax over the whole exact curve."""
    p_sorted, values = expected_metric_curve(torch.as_tensor(p), metric, smooth)
    t = exact_thresholds(torch.as_tensor(p)[None], metric, smooth)
    assert int((torch.as_tensor(p) > t).sum()) == best_tau(p_sorted.numpy(), values.numpy(), tol=1e-13)


@pytest.mark.parametrize("kind", ["uniform", "ties", "peaky", "tiny", "near_one"])
@pytest.mark.parametrize("metric, smooth", [("dice", 0.0), ("iou", 0.0), ("dice", 2.0), ("iou", 1e3)])
def test_window_on_maps_of_many_blocks(kind, metric, smooth):
    """2,000 pixels span eight blocks of the window search; 0s and 1s included."""
    p = np.r_[_draw(kind, 1990, np.random.default_rng(len(kind))), np.zeros(5), np.ones(5)]
    p_sorted, values = expected_metric_curve(torch.as_tensor(p), metric, smooth)
    t = exact_thresholds(torch.as_tensor(p)[None], metric, smooth)
    assert int((torch.as_tensor(p) > t).sum()) == best_tau(p_sorted.numpy(), values.numpy(), tol=1e-13)


@given(prob_vectors(max_size=300), st.sampled_from(["dice", "iou"]), st.sampled_from(SMOOTHS))
def test_window_bounds_enclose_the_curve(p, metric, smooth):
    p_sorted, values = expected_metric_curve(torch.as_tensor(p), metric, smooth)
    tau = torch.arange(1, p.size + 1, dtype=torch.float64)
    S2_terms = p_sorted * (p_sorted if metric == "dice" else 1 - p_sorted)
    mu, var = p_sorted.sum().item(), (p_sorted * (1 - p_sorted)).sum().item()
    L, U = _bounds(tau, p_sorted.cumsum(0), S2_terms.cumsum(0), mu, var, metric, smooth)
    assert (L <= values[1:] + 1e-13).all() and (values[1:] <= U + 1e-13).all()


def test_ties_go_to_the_smaller_mask():
    # Dice(top-1) = Dice(top-2) = 5/6 for p = (1, 1/2); on all-zero maps the empty mask scores 1, any other 0.
    assert (torch.tensor([1.0, 0.5]) > exact_thresholds(torch.tensor([[1.0, 0.5]]), "dice", 0.0)).sum() == 1
    for metric, smooth in [("dice", 0.0), ("iou", 0.0), ("dice", 1.0)]:
        zeros = torch.zeros(1, 50)
        assert not (zeros > exact_thresholds(zeros, metric, smooth)).any()
    ones = torch.ones(1, 50)
    assert (ones > exact_thresholds(ones, "iou", 0.0)).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_low_precision_and_strided_input(dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.sigmoid(4 * torch.randn(3, 400, generator=g)).to(dtype)
    x[:, :6] = torch.tensor([0.0, -0.0, 1.0, 1.0, -0.0, 0.0])  # -0.0 sorts as 0.0 (the solver sorts bit patterns)
    x = x[:, ::2]  # non-contiguous; values tie in fp16/bf16
    t = exact_thresholds(x, "dice", 0.0)
    for n in range(3):
        p_sorted, values = expected_metric_curve(x[n].double(), "dice", 0.0)
        assert int((x[n] > t[n]).sum()) == best_tau(p_sorted.numpy(), values.numpy(), tol=1e-13)
        assert torch.equal(x[n] > t[n], x[n].double() > t[n])


def calibrated_maps(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth model-like sigmoid maps: low-resolution logits upsampled x8, scaled, shifted."""
    g = torch.Generator().manual_seed(seed)
    low = 4 * torch.randn(n, 1, size // 8, size // 8, generator=g) - 2 * torch.rand(n, 1, 1, 1, generator=g)
    return torch.sigmoid(F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)).double()


def realised(masks: torch.Tensor, Y: torch.Tensor, metric: str, s: float) -> torch.Tensor:
    """Dice/IoU of one mask ``(d,)`` against label draws ``Y (n, d)``."""
    inter, tau, y = (Y & masks).sum(1).double(), masks.sum().double(), Y.sum(1).double()
    num = (2 * inter if metric == "dice" else inter) + s
    den = tau + y + s - (0 if metric == "dice" else inter)
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.ones_like(den))


@pytest.mark.parametrize(
    "kind, metric, smooth",
    [("model", "dice", 0.0), ("model", "iou", 1.0), ("tiny_mu", "dice", 1.0), ("saturated", "iou", 0.0)],
)
def test_monte_carlo_agrees_within_five_sigma(kind, metric, smooth):
    """Fixed seed, 400 label draws on a 128x128 map: |MC mean - exact| <= 5 standard errors (+1e-12)."""
    p = calibrated_maps(1, 128, 3)[0, 0].reshape(-1)
    if kind == "tiny_mu":
        p = p * 1e-3  # mu about 5
    if kind == "saturated":
        p = torch.where(p > 0.9, torch.ones_like(p), torch.where(p < 0.1, torch.zeros_like(p), p))
    masks = [p > 0.5, p > exact_thresholds(p[None], metric, smooth), p > 0.2]
    g = torch.Generator().manual_seed(7)
    Y = torch.cat([torch.rand(100, p.numel(), generator=g, dtype=torch.float64) < p for _ in range(4)])
    exact = expected_metric(p.view(1, 1, -1).expand(1, 3, -1), torch.stack(masks)[None], metric=metric, smooth=smooth)
    for m, e in zip(masks, exact[0].tolist()):
        r = realised(m, Y, metric, smooth)
        assert abs(r.mean().item() - e) <= 5 * r.std().item() / len(r) ** 0.5 + 1e-12


@pytest.mark.parametrize("metric, smooth", [("dice", 0.0), ("dice", 1.0), ("iou", 0.0), ("iou", 1.0)])
def test_exact_beats_argmax_and_rma_on_every_image(metric, smooth):
    probs = calibrated_maps(6, 64, 11)
    exact = RankSEG(metric=metric, output_mode="multilabel", solver="exact", smooth=smooth)(probs)
    rma = RankSEG(metric=metric, output_mode="multilabel", solver="rma", smooth=smooth)(probs)
    value = {
        name: expected_metric(probs, m, metric=metric, smooth=smooth)
        for name, m in [("exact", exact), ("rma", rma), ("argmax", probs > 0.5)]
    }
    assert (value["exact"] >= value["rma"] - 1e-12).all()
    assert (value["exact"] >= value["argmax"] - 1e-12).all()


def test_multiclass_uses_exact_class_masks():
    g = torch.Generator().manual_seed(5)
    probs = (3 * torch.randn(2, 3, 24, 24, generator=g)).softmax(1)
    rs = RankSEG(metric="dice", output_mode="multiclass", solver="exact", pruning_prob=0.0)
    theta = rs.thresholds(probs)
    expected = torch.stack([exact_thresholds(probs[b].reshape(3, -1), "dice", 0.0) for b in range(2)])
    assert torch.equal(probs > theta[..., None, None], probs > expected[..., None, None].float())
    labels = rs(probs)
    assert labels.shape == (2, 24, 24) and labels.dtype == torch.int64


def test_input_errors():
    p = torch.rand(1, 2, 5)
    with pytest.raises(ValueError, match="shape"):
        expected_metric(p, torch.ones(1, 2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        expected_metric(p, torch.ones(1, 2, 5))
    with pytest.raises(ValueError, match="NaN"):
        expected_metric(torch.full((1, 1, 3), float("nan")), torch.ones(1, 1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_metric(p + 1, p > 0.5)
    with pytest.raises(ValueError, match="metric"):
        expected_metric(p, p > 0.5, metric="acc")
    with pytest.raises(ValueError, match="smooth"):
        expected_metric(p, p > 0.5, smooth=-1.0)
    with pytest.raises(ValueError, match=r"\(B, C, \*spatial\)"):
        expected_metric(p[0], p[0] > 0.5)
