"""The RMA solver against an independent sort-based reference, on many random inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rankseg_plugins import RankSEG, rankseg
from reference import multiclass_assign, rma_best, rma_objective

TIE_VALUES = [0.0, 0.05, 0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 1.0]


@st.composite
def prob_vectors(draw, max_size: int = 120) -> np.ndarray:
    """Probability vectors: continuous, heavily tied, or a mix; sometimes all 0 or all 1."""
    d = draw(st.integers(1, max_size))
    kind = draw(st.sampled_from(["uniform", "ties", "mixed", "peaky", "zeros", "ones"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "uniform":
        return rng.random(d)
    if kind == "ties":
        return rng.choice(TIE_VALUES, d)
    if kind == "mixed":
        return np.where(rng.random(d) < 0.5, rng.random(d), rng.choice(TIE_VALUES, d))
    if kind == "peaky":
        return 1 / (1 + np.exp(-4 * rng.standard_normal(d)))
    return np.zeros(d) if kind == "zeros" else np.ones(d)


def _check_binary(p: np.ndarray, metric: str, smooth: float, dtype: torch.dtype = torch.float64) -> None:
    probs = torch.as_tensor(p, dtype=dtype).view(1, 1, -1)
    values = probs.double().numpy().ravel()  # what the solver actually sees
    rs = RankSEG(metric=metric, output_mode="multilabel", smooth=smooth)
    mask = rs(probs).numpy().ravel()
    theta = rs.thresholds(probs).item()
    np.testing.assert_array_equal(mask, values > theta)  # the mask is the published threshold rule
    got = rma_objective(values, mask, metric, smooth)
    best = rma_best(values, metric, smooth)
    assert got >= best - 1e-9 * max(1.0, abs(best)) * (1 if dtype == torch.float64 else 1e3), (got, best)


@given(prob_vectors(), st.sampled_from(["dice", "iou"]), st.sampled_from([0.0, 0.0, 0.1, 1.0, 7.5]))
def test_rma_reaches_sort_reference_optimum(p, metric, smooth):
    _check_binary(p, metric, smooth)


@given(prob_vectors(), st.sampled_from(["dice", "iou"]), st.sampled_from([torch.float16, torch.bfloat16, torch.float32]))
def test_rma_optimum_in_low_precision(p, metric, dtype):
    _check_binary(p, metric, 0.0, dtype)


@given(st.integers(1, 200), st.integers(0, 2**32 - 1), st.sampled_from(["dice", "iou"]))
def test_without_ties_optimum_over_all_tau(d, seed, metric):
    """On distinct values the threshold mask is optimal over every tau, not only tie boundaries."""
    p = np.random.default_rng(seed).random(d)
    mask = rankseg(torch.as_tensor(p).view(1, 1, -1), metric=metric, output_mode="multilabel").numpy().ravel()
    assert rma_objective(p, mask, metric, 0.0) >= rma_best(p, metric, 0.0, split_ties=True) - 1e-12


@given(prob_vectors(), st.sampled_from(["dice", "iou"]), st.sampled_from([0.0, 1.0]))
def test_ties_never_split_and_order_free(p, metric, smooth):
    probs = torch.as_tensor(p).view(1, 1, -1)
    mask = rankseg(probs, metric=metric, output_mode="multilabel", smooth=smooth).numpy().ravel()
    if mask.any() and not mask.all():
        assert p[mask].min() > p[~mask].max()  # a top set that never splits a tie group
    perm = np.random.default_rng(0).permutation(p.size)
    permuted = rankseg(probs[..., perm], metric=metric, output_mode="multilabel", smooth=smooth).numpy().ravel()
    np.testing.assert_array_equal(permuted, mask[perm])


@st.composite
def softmax_maps(draw) -> np.ndarray:
    """(B, C, *spatial) softmax maps, sometimes with exactly tied or one-hot pixels."""
    B, C = draw(st.integers(1, 3)), draw(st.integers(2, 5))
    spatial = draw(st.lists(st.integers(1, 7), min_size=1, max_size=3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.0, 0.5, 2.0, 6.0, 50.0]))
    logits = scale * rng.standard_normal((B, C, *spatial))
    if draw(st.booleans()):
        logits = np.round(logits)  # ties across pixels
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@given(softmax_maps(), st.sampled_from(["dice", "iou"]), st.sampled_from([0.0, 1.0]),
       st.sampled_from([0.0, 0.3, 0.5]), st.sampled_from(["max_score", "void"]))
def test_multiclass_matches_pixelwise_reference(x, metric, smooth, pruning_prob, unassigned):
    probs = torch.as_tensor(x)
    rs = RankSEG(metric=metric, smooth=smooth, pruning_prob=pruning_prob, unassigned=unassigned, void_index=99)
    labels = rs(probs)
    assert labels.dtype == torch.int64 and labels.shape == probs.shape[:1] + probs.shape[2:]
    theta = rs.thresholds(probs)
    B, C = x.shape[:2]
    for b in range(B):
        P = x[b].reshape(C, -1)
        masks = P > theta[b].numpy()[:, None]
        for c in range(C):  # each class's own mask is RMA-optimal, or the class is pruned
            if np.isinf(theta[b, c].item()):
                assert P[c].max() <= pruning_prob
            else:
                assert rma_objective(P[c], masks[c], metric, smooth) >= rma_best(P[c], metric, smooth) - 1e-9
        expected = multiclass_assign(P, masks, metric, smooth, unassigned, 99)
        np.testing.assert_array_equal(labels[b].numpy().ravel(), expected)
        unique = masks.sum(0) == 1
        np.testing.assert_array_equal(labels[b].numpy().ravel()[unique], masks[:, unique].argmax(0))


def test_multiclass_equals_multilabel_where_one_class_claims():
    torch.manual_seed(0)
    probs = (4 * torch.randn(2, 5, 40, 40)).softmax(1)
    labels = rankseg(probs)
    masks = rankseg(probs, output_mode="multilabel")
    theta = RankSEG().thresholds(probs)
    assert torch.equal(theta, RankSEG(output_mode="multilabel").thresholds(probs).where(~theta.isinf(), theta))
    alone = masks.sum(1) == 1
    assert alone.float().mean() > 0.5
    assert torch.equal(labels[alone], masks.int().argmax(1)[alone])


@pytest.mark.parametrize("spatial", [(50,), (12, 17), (6, 7, 8)])
@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
def test_layouts_and_dtypes_agree(spatial, mode):
    torch.manual_seed(1)
    probs = (3 * torch.randn(3, 4, *spatial, dtype=torch.float64)).softmax(1)
    expected = rankseg(probs, output_mode=mode)
    assert torch.equal(rankseg(probs.float(), output_mode=mode), expected)
    strided = probs.repeat_interleave(2, dim=-1)[..., ::2]  # non-contiguous view, same values
    assert not strided.is_contiguous()
    assert torch.equal(rankseg(strided, output_mode=mode), expected)
    perm = (0, *range(2, probs.ndim), 1)
    channels_last = probs.permute(perm).contiguous().permute(0, probs.ndim - 1, *range(1, probs.ndim - 1))
    assert torch.equal(rankseg(channels_last, output_mode=mode), expected)
    for half in (torch.float16, torch.bfloat16):
        out = rankseg(probs.to(half), output_mode=mode)
        assert out.shape == expected.shape and out.dtype == expected.dtype


def test_channels_last_memory_format():
    probs = torch.randn(2, 3, 16, 16).softmax(1)
    cl = probs.contiguous(memory_format=torch.channels_last)
    assert torch.equal(rankseg(cl), rankseg(probs))
    cl3 = torch.randn(1, 3, 4, 8, 8).softmax(1).contiguous(memory_format=torch.channels_last_3d)
    assert torch.equal(rankseg(cl3), rankseg(cl3.contiguous()))


def test_edge_cases():
    zeros = torch.zeros(1, 1, 5, 5)
    ones = torch.ones(1, 1, 5, 5)
    for metric in ("dice", "iou"):
        assert not rankseg(zeros, metric=metric, output_mode="multilabel").any()
        assert rankseg(ones, metric=metric, output_mode="multilabel").all()
        assert rankseg(zeros, metric=metric).sum() == 0  # C == 1: empty foreground
        assert rankseg(ones, metric=metric).eq(1).all()
        single = torch.tensor([[[0.7]], [[0.3]]]).view(1, 2, 1)
        assert rankseg(single, metric=metric).tolist() == [[0]]
    # C == 1 multiclass is the binary mask of the foreground probability, after pruning
    p = torch.rand(2, 1, 30)
    p[1] *= 0.4  # image 1: nothing above pruning_prob -> background
    labels = rankseg(p)
    masks = rankseg(p, output_mode="multilabel")
    assert torch.equal(labels[0], masks[0, 0].long()) and labels[1].sum() == 0
    assert torch.equal(rankseg(p, pruning_prob=0.0)[1], masks[1, 0].long())


def test_all_classes_below_pruning_prob_use_scores():
    probs = torch.full((1, 4, 3, 3), 0.25)
    probs[0, 2] += 0.03
    probs[0, :2] -= 0.015
    rs = RankSEG()
    assert rs.thresholds(probs).isinf().all()
    assert rs(probs).eq(2).all()  # no class claims anything: every pixel goes by increment score
    assert RankSEG(unassigned="void", void_index=7)(probs).eq(7).all()


def test_acc_is_argmax_and_half_threshold():
    torch.manual_seed(2)
    probs = torch.randn(2, 3, 9, 9).softmax(1)
    assert torch.equal(rankseg(probs, metric="acc"), probs.argmax(1))
    sig = torch.rand(2, 3, 9, 9)
    assert torch.equal(rankseg(sig, metric="acc", output_mode="multilabel"), sig > 0.5)
    assert torch.equal(RankSEG(metric="acc", output_mode="multilabel").thresholds(sig), torch.full((2, 3), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="argmax"):
        RankSEG(metric="acc").thresholds(probs)


def test_input_untouched_and_device_kept():
    probs = torch.randn(2, 3, 10, 10).softmax(1)
    before = probs.clone()
    for mode in ("multiclass", "multilabel"):
        out = rankseg(probs, output_mode=mode)
        assert out.device == probs.device
    assert torch.equal(probs, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    probs = (4 * torch.randn(2, 5, 64, 64)).softmax(1)
    for mode in ("multiclass", "multilabel"):
        for metric in ("dice", "iou"):
            got = rankseg(probs.cuda(), metric=metric, output_mode=mode)
            assert got.is_cuda and got.dtype == (torch.int64 if mode == "multiclass" else torch.bool)
            # sums run in another order on the GPU: thresholds agree to rounding, masks up to boundary pixels
            same = (got.cpu() == rankseg(probs, metric=metric, output_mode=mode)).float().mean().item()
            assert same > 0.999
            rs = RankSEG(metric=metric, output_mode=mode)
            torch.testing.assert_close(rs.thresholds(probs.cuda()).cpu(), rs.thresholds(probs), rtol=1e-5, atol=1e-6)


@given(prob_vectors(), st.sampled_from(["dice", "iou"]))
def test_overshooting_bracket_still_reaches_optimum(p, metric):
    """The streaming bracket is a shortcut only: a bound above lam* is caught by the first exact ratio."""
    import rankseg_plugins.rma as rma

    original = rma._bracket
    rma._bracket = lambda parts, dtype, alpha, beta, gamma, lam_lo, lam_hi: 0.95 * lam_hi
    try:
        _check_binary(p, metric, 0.0)
    finally:
        rma._bracket = original


@pytest.mark.parametrize("metric", ["dice", "iou"])
@pytest.mark.parametrize("unassigned", ["max_score", "void"])
def test_chunked_passes_match_single_pass(monkeypatch, metric, unassigned):
    """Volumes are walked in chunks; with tiny chunks the result must not change."""
    import rankseg_plugins.chunks as chunks

    torch.manual_seed(3)
    probs = (3 * torch.randn(2, 4, 9, 10, 11)).softmax(1)
    sig = torch.rand(2, 3, 9, 10, 11)
    expected = rankseg(probs, metric=metric, unassigned=unassigned), rankseg(sig, metric=metric, output_mode="multilabel")
    monkeypatch.setattr(chunks, "CHUNK_ELEMENTS", 230)
    assert len(chunks.chunk_views(probs[0, 0])) == 5 and len(chunks.chunk_views(probs[0], dim=1)) == 9
    assert torch.equal(rankseg(probs, metric=metric, unassigned=unassigned), expected[0])
    assert torch.equal(rankseg(sig, metric=metric, output_mode="multilabel"), expected[1])


@pytest.mark.parametrize("fraction", [1, 10**9])
def test_dense_and_gathered_scoring_agree(monkeypatch, fraction):
    """Contested/unclaimed pixels are scored densely or gathered, depending on how many there are."""
    import rankseg_plugins.assign as assign

    probs = (0.7 * torch.randn(2, 5, 30, 30, dtype=torch.float64)).softmax(1)
    expected = rankseg(probs, pruning_prob=0.0)
    monkeypatch.setattr(assign, "_DENSE_FRACTION", fraction)
    assert torch.equal(rankseg(probs, pruning_prob=0.0), expected)
