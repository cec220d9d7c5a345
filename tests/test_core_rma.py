"""The batched RMA solver against an independent sort-based reference and against the per-class solver it replaced.

The solver's own masks are checked with ``ignore_empty=True`` (no presence rule: the empty mask never competes);
the presence rule has its own tests in ``test_core_presence.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import rankseg_plugins.blocks as blocks
import rankseg_plugins.threads as threads
from legacy_rma import rma_decision
from rankseg_plugins import RankSEG, rankseg
from reference import multiclass_assign, rma_best, rma_objective

TIE_VALUES = [0.0, 0.05, 0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 1.0]
SOLVER_ONLY = dict(ignore_empty=True)  # the solver's mask, without the presence rule


def values_of(kind: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Probabilities: continuous, heavily tied, a mix, peaky (near 0 and 1), or all 0 / all 1."""
    if kind == "uniform":
        return rng.random(shape)
    if kind == "ties":
        return rng.choice(TIE_VALUES, shape)
    if kind == "mixed":
        return np.where(rng.random(shape) < 0.5, rng.random(shape), rng.choice(TIE_VALUES, shape))
    if kind == "peaky":
        return 1 / (1 + np.exp(-4 * rng.standard_normal(shape)))
    return np.zeros(shape) if kind == "zeros" else np.ones(shape)


KINDS = ["uniform", "ties", "mixed", "peaky", "zeros", "ones"]


@st.composite
def prob_vectors(draw, max_size: int = 120) -> np.ndarray:
    d = draw(st.integers(1, max_size))
    return values_of(draw(st.sampled_from(KINDS)), (d,), np.random.default_rng(draw(st.integers(0, 2**32 - 1))))


def _check_binary(p: np.ndarray, metric: str, smooth: float, dtype: torch.dtype = torch.float64) -> None:
    probs = torch.as_tensor(p, dtype=dtype).view(1, 1, -1)
    values = probs.double().numpy().ravel()  # what the solver actually sees
    rs = RankSEG(metric=metric, output_mode="multilabel", smooth=smooth, **SOLVER_ONLY)
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
    mask = rankseg(torch.as_tensor(p).view(1, 1, -1), metric=metric, output_mode="multilabel", **SOLVER_ONLY)
    assert rma_objective(p, mask.numpy().ravel(), metric, 0.0) >= rma_best(p, metric, 0.0, split_ties=True) - 1e-12


@given(prob_vectors(), st.sampled_from(["dice", "iou"]), st.sampled_from([0.0, 1.0]))
def test_ties_never_split_and_order_free(p, metric, smooth):
    probs = torch.as_tensor(p).view(1, 1, -1)
    opts = dict(metric=metric, output_mode="multilabel", smooth=smooth, **SOLVER_ONLY)
    mask = rankseg(probs, **opts).numpy().ravel()
    if mask.any() and not mask.all():
        assert p[mask].min() > p[~mask].max()  # a top set that never splits a tie group
    perm = np.random.default_rng(0).permutation(p.size)
    np.testing.assert_array_equal(rankseg(probs[..., perm], **opts).numpy().ravel(), mask[perm])


@st.composite
def batches(draw) -> np.ndarray:
    """(B, C, *spatial) maps of one kind per class, 1 to 3 spatial dims."""
    B, C = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    spatial = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return np.stack([np.stack([values_of(draw(st.sampled_from(KINDS)), spatial, rng) for _ in range(C)])
                     for _ in range(B)])


@given(batches(), st.sampled_from(["dice", "iou"]), st.sampled_from([0.0, 1.0]),
       st.sampled_from([torch.float64, torch.float32, torch.float16, torch.bfloat16]))
def test_batched_solver_equals_per_class_solver(x, metric, smooth, dtype):
    """All pairs stepping together give the masks the per-class solver gave, pair by pair."""
    probs = torch.as_tensor(x).to(dtype)
    masks = rankseg(probs, metric=metric, output_mode="multilabel", smooth=smooth, **SOLVER_ONLY)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    B, C = x.shape[:2]
    for b in range(B):
        for c in range(C):
            row = probs[b, c].reshape(-1)
            old = rma_decision(row, row.sum(dtype=compute).item(), metric, smooth, compute)
            expected = row.to(compute) > old.theta
            got = masks[b, c].reshape(-1)
            if smooth > 0 and dtype != torch.float64 and not torch.equal(got, expected):
                # Dice with s > 0 in half precision: the per-class solver's size and threshold could disagree by a
                # rounding step (its mask one pixel off its own optimum); the batched one must reach the optimum
                v = row.double().numpy()
                got_value = rma_objective(v, got.numpy(), metric, smooth)
                assert got_value >= rma_best(v, metric, smooth) - 1e-6, (got_value, old)
                assert got_value >= rma_objective(v, expected.numpy(), metric, smooth) - 1e-9
            else:
                assert torch.equal(got, expected), (b, c, old, (got != expected).sum())


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
       st.sampled_from([None, 0.0, 0.3, 0.5, "ignore_empty"]), st.sampled_from(["max_score", "void"]))
def test_multiclass_matches_pixelwise_reference(x, metric, smooth, presence, unassigned):
    probs = torch.as_tensor(x)
    options = dict(ignore_empty=True) if presence == "ignore_empty" else dict(pruning_prob=presence)
    rs = RankSEG(metric=metric, smooth=smooth, unassigned=unassigned, void_index=99, **options)
    labels = rs(probs)
    assert labels.dtype == torch.int64 and labels.shape == probs.shape[:1] + probs.shape[2:]
    theta = rs.thresholds(probs)
    B, C = x.shape[:2]
    for b in range(B):
        P = x[b].reshape(C, -1)
        masks = P > theta[b].numpy()[:, None]
        for c in range(C):  # each class's own mask is RMA-optimal, or the class is decided absent
            if np.isinf(theta[b, c].item()):
                assert presence is None or (isinstance(presence, float) and P[c].max() <= presence) or not (
                    P[c] > RankSEG(metric=metric, smooth=smooth, output_mode="multilabel", **SOLVER_ONLY)
                    .thresholds(probs[b : b + 1, c : c + 1]).item()
                ).any()
            else:
                assert masks[c].any()
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
    assert torch.equal(theta, RankSEG(output_mode="multilabel").thresholds(probs))
    alone = masks.sum(1) == 1
    assert alone.float().mean() > 0.5
    assert torch.equal(labels[alone], masks.int().argmax(1)[alone])


@pytest.mark.parametrize("spatial", [(50,), (12, 17), (6, 7, 8)])
@pytest.mark.parametrize("mode", ["multiclass", "multilabel"])
@pytest.mark.filterwarnings("ignore:probs of shape")
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
        for options in ({}, SOLVER_ONLY):
            assert not rankseg(zeros, metric=metric, output_mode="multilabel", **options).any()
            assert rankseg(ones, metric=metric, output_mode="multilabel", **options).all()
            assert rankseg(zeros, metric=metric, **options).sum() == 0  # C == 1: empty foreground
            assert rankseg(ones, metric=metric, **options).eq(1).all()
        single = torch.tensor([[[[0.7]], [[0.3]]]])
        assert rankseg(single, metric=metric).tolist() == [[[0]]]
    # C == 1 multiclass is the binary mask of the foreground probability, after the presence decision
    p = torch.rand(2, 1, 30)
    p[1] *= 0.02  # image 1: under one expected foreground pixel, most likely none -> background
    labels = rankseg(p)
    masks = rankseg(p, output_mode="multilabel")
    assert torch.equal(labels, masks[:, 0].long()) and labels[1].sum() == 0
    assert rankseg(p, **SOLVER_ONLY)[1].sum() > 0


def test_no_eligible_class_falls_back_to_argmax_or_void():
    probs = torch.full((1, 4, 3, 3), 0.25)
    probs[0, 2] += 0.03
    probs[0, :2] -= 0.015
    rs = RankSEG(pruning_prob=0.5)
    assert rs.thresholds(probs).isinf().all()  # every class pruned
    assert rs(probs).eq(2).all()  # no class competes: every pixel keeps its argmax class
    assert RankSEG(pruning_prob=0.5, unassigned="void", void_index=7)(probs).eq(7).all()


def test_acc_is_argmax_and_half_threshold():
    torch.manual_seed(2)
    probs = torch.randn(2, 3, 9, 9).softmax(1)
    assert torch.equal(rankseg(probs, metric="acc"), probs.argmax(1))
    assert torch.equal(rankseg(probs, metric="accuracy", solver="argmax"), probs.argmax(1))  # the reference's names
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


@pytest.mark.parametrize("metric", ["dice", "iou"])
@pytest.mark.parametrize("unassigned", ["max_score", "void"])
def test_blocks_match_one_pass(monkeypatch, metric, unassigned):
    """Batches and volumes are walked in blocks; with tiny blocks the result must not change."""
    torch.manual_seed(3)
    probs = (3 * torch.randn(2, 4, 9, 10, 11)).softmax(1)
    sig = torch.rand(2, 3, 9, 10, 11)
    opts = dict(metric=metric, unassigned=unassigned, smooth=0.5)
    expected = rankseg(probs, **opts), rankseg(sig, output_mode="multilabel", **opts)
    monkeypatch.setattr(blocks, "BLOCK_ELEMENTS", 4 * 10 * 11 * 2)
    assert len(list(blocks.image_blocks(probs, 0))) == 5
    assert torch.equal(rankseg(probs, **opts), expected[0])
    assert torch.equal(rankseg(sig, output_mode="multilabel", **opts), expected[1])


@pytest.mark.parametrize("metric", ["dice", "iou"])
@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_tiles_and_full_passes_agree(monkeypatch, metric, smooth):
    """Passes over gathered tiles (where a class can reach its threshold) give what passes over everything give."""
    import rankseg_plugins.tiles as tiles

    g = torch.Generator().manual_seed(5)
    logits = torch.nn.functional.interpolate(4 * torch.randn(3, 12, 8, 8, generator=g), size=(64, 64), mode="bilinear")
    probs = logits.softmax(1)
    opts = dict(metric=metric, smooth=smooth)
    expected = rankseg(probs, **opts), rankseg(probs, output_mode="multilabel", **opts)
    assert tiles.Tiles.of(probs) is not None
    monkeypatch.setattr(tiles, "COMPACT_FRACTION", 0.0)  # nothing is ever gathered
    assert torch.equal(rankseg(probs, **opts), expected[0])
    assert torch.equal(rankseg(probs, output_mode="multilabel", **opts), expected[1])


def test_converged_classes_are_gathered_or_not_alike(monkeypatch):
    """An image's unconverged classes are gathered once they are few; computing all of them gives the same masks."""
    import rankseg_plugins.rma as rma

    probs = (3 * torch.randn(2, 12, 40, 40)).softmax(1)
    expected = rankseg(probs, output_mode="multilabel")
    monkeypatch.setattr(rma, "_GATHER_FRACTION", 0.0)
    assert torch.equal(rankseg(probs, output_mode="multilabel"), expected)


def test_host_syncs_do_not_grow_with_classes(monkeypatch):
    """The solver waits for the device once per step, not once per class: the count of device-to-host transfers
    (values and ``nonzero`` sizes) is about the same for 3 and for 150 classes, decoded single-threaded as on a GPU
    (where nothing is shared out): what makes the GPU path launch- and sync-light."""
    import rankseg_plugins.host as host

    counts: dict[int, int] = {}
    for name in ("to_host", "nonzero"):
        original = getattr(host, name)

        def counting(t, original=original):
            counts[key] = counts.get(key, 0) + 1
            return original(t)

        monkeypatch.setattr(host, name, counting)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for C in (3, 150):
            key = C
            g = torch.Generator().manual_seed(0)
            logits = torch.nn.functional.interpolate(4 * torch.randn(1, C, 16, 16, generator=g), size=(256, 256),
                                                     mode="bilinear")
            rankseg(logits.softmax(1))
    finally:
        torch.set_num_threads(before)
    # stats, one transfer or two per solver step (4 to 12 here), presence, tile selections and the assignment
    assert counts[150] <= counts[3] + 12 and counts[150] <= 32, counts


def test_thread_count_is_restored_also_on_errors():
    """A decode runs single-threaded between its streaming passes and gives torch its thread count back."""
    before = torch.get_num_threads()
    rankseg(torch.randn(2, 3, 16, 16).softmax(1))
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError):
        rankseg(torch.randn(2, 3, 16, 16))  # logits
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("options", [{}, {"metric": "iou", "smooth": 1.0}, {"output_mode": "multilabel"},
                                     {"regions": [[1, 2, 3], [2, 3], [3]]}, {"unassigned": "void"}])
def test_a_batch_decoded_image_by_image_on_threads_equals_one_thread(options):
    """Several images of a million elements or more are shared out among Python threads (threads.per_image): the
    same labels as the single-threaded batch decode, the error of a bad image, and torch's thread count kept."""
    g = torch.Generator().manual_seed(3)
    low = 4 * torch.randn(3, 4, 16, 16, generator=g)
    probs = torch.nn.functional.interpolate(low, size=(512, 512), mode="bilinear").softmax(1)  # 1M per image
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        expected = rankseg(probs, **options)
        torch.set_num_threads(2)
        assert threads.per_image(lambda b, out: out.copy_(probs[b, 0]), probs, lambda: probs[:, 0].clone()) is not None
        assert torch.equal(rankseg(probs, **options), expected)
        assert torch.get_num_threads() == 2
        bad = probs.clone()
        bad[2, 0, 7, 7] = torch.nan
        with pytest.raises(ValueError, match="NaN"):
            rankseg(bad, **options)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("options", [{}, {"metric": "iou"}, {"smooth": 1.0}, {"output_mode": "multilabel"}])
def test_one_large_image_shared_out_on_threads_equals_one_thread(monkeypatch, layout, options):
    """The big passes of one image are shared out among Python threads (threads.map_parts): same labels as one
    thread, with tiles (contiguous) and without (channels-last: blocks)."""
    g = torch.Generator().manual_seed(5)
    low = 4 * torch.randn(1, 6, 8, 24, 24, generator=g)
    probs = torch.nn.functional.interpolate(low, size=(16, 384, 384), mode="trilinear").softmax(1)  # 14M
    if layout == "channels_last":
        probs = probs.to(memory_format=torch.channels_last_3d)
    pools = []

    class Counting(threads.ThreadPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(threads, "ThreadPoolExecutor", Counting)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        expected = rankseg(probs, **options)
        assert not pools
        torch.set_num_threads(2)
        assert torch.equal(rankseg(probs, **options), expected)
        assert len(pools) == 1 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
