"""Regions: nested label sets decoded as binary problems and painted outer first (KiTS, LiTS)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rankseg_plugins import RankSEG, rankseg

KITS23 = [[1, 2, 3], [2, 3], [2]]


def softmax_maps(B: int, C: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = F.interpolate(3 * torch.randn(B, C, size // 8, size // 8, generator=g), size=(size, size), mode="bilinear")
    return logits.softmax(1)


def hand_built(probs: torch.Tensor, regions: list[list[int]], paint: list[int], **options) -> torch.Tensor:
    """Nested decoding written out: each region's summed probability decoded as a one-channel binary map, then
    painted in list order (outer first)."""
    out = torch.zeros(probs.shape[0], *probs.shape[2:], dtype=torch.int64)
    for region, label in zip(regions, paint):
        q = probs[:, region].sum(1, keepdim=True).clamp(0, 1)
        out[rankseg(q, output_mode="multilabel", **options)[:, 0]] = label
    return out


@pytest.mark.parametrize("options", [{}, dict(metric="iou"), dict(smooth=1.0), dict(ignore_empty=True),
                                     dict(solver="exact"), dict(pruning_prob=0.5)])
def test_regions_equal_hand_built_nested_decoding(options):
    probs = softmax_maps(3, 4, 48, seed=0)
    got = rankseg(probs, regions=KITS23, **options)
    assert got.shape == (3, 48, 48) and got.dtype == torch.int64
    assert torch.equal(got, hand_built(probs, KITS23, [1, 3, 2], **options))


def test_region_order_is_by_nesting_not_by_listing():
    probs = softmax_maps(2, 3, 32, seed=1)
    assert torch.equal(rankseg(probs, regions=[[2], [1, 2]]), rankseg(probs, regions=[[1, 2], [2]]))


def test_painted_regions_stay_nested():
    """Read back from the label map, every region contains the regions inside it (nesting by union)."""
    probs = softmax_maps(4, 4, 40, seed=2)
    labels = rankseg(probs, regions=KITS23)
    masks = [torch.isin(labels, torch.tensor(r)) for r in KITS23]
    for outer, inner in zip(masks, masks[1:]):
        assert (inner <= outer).all()
    assert all(m.any() for m in masks)


def test_sigmoid_region_channels():
    """One sigmoid channel per region (nnU-Net region-based training): decode each, paint the one own label."""
    g = torch.Generator().manual_seed(3)
    q = torch.rand(2, 3, 30, 30, generator=g)
    got = rankseg(q, regions=KITS23, output_mode="multilabel")
    masks = rankseg(q, output_mode="multilabel")
    expected = torch.zeros(2, 30, 30, dtype=torch.int64)
    for channel, label in enumerate([1, 3, 2]):
        expected[masks[:, channel]] = label
    assert torch.equal(got, expected)
    assert torch.equal(rankseg(q, regions=KITS23, output_mode="multilabel", metric="acc"), _thresholded(q, [1, 3, 2]))


def _thresholded(q: torch.Tensor, paint: list[int]) -> torch.Tensor:
    """nnU-Net's own region decoding: ``seg[p[i] > 0.5] = regions_class_order[i]``."""
    out = torch.zeros(q.shape[0], *q.shape[2:], dtype=torch.int64)
    for channel, label in enumerate(paint):
        out[q[:, channel] > 0.5] = label
    return out


def test_several_own_labels_go_by_argmax():
    """A region whose own labels are several paints their argmax; one with none, the argmax over its labels."""
    probs = softmax_maps(2, 4, 32, seed=4)
    got = rankseg(probs, regions=[[1, 2, 3], [3]])
    outer = rankseg(probs[:, [1, 2, 3]].sum(1, keepdim=True).clamp(0, 1), output_mode="multilabel")[:, 0]
    inner = rankseg(probs[:, 3:4], output_mode="multilabel")[:, 0]
    own = torch.tensor([1, 2])[probs[:, [1, 2]].argmax(1)]
    expected = torch.where(inner, 3, torch.where(outer, own, 0))
    assert torch.equal(got, expected)
    union = rankseg(probs, regions=[[1, 2], [1], [2], [3]])
    assert union.max() <= 3


def test_thresholds_are_per_region():
    probs = softmax_maps(2, 3, 32, seed=5)
    theta = RankSEG(regions=[[1, 2], [2]]).thresholds(probs)
    assert theta.shape == (2, 2)
    q = probs[:, 1:].sum(1, keepdim=True)
    assert torch.allclose(theta[:, :1], RankSEG(output_mode="multilabel").thresholds(q.clamp(0, 1)))


@pytest.mark.parametrize(
    "regions, match",
    [
        ([], "non-empty"),
        ([[1, 2], [2, 3]], "nested or disjoint"),
        ([[1, 2], []], "non-empty"),
        ([[0, 1]], "foreground"),
        ([[1, 1]], "twice"),
        ([[1, 2], [2, 1]], "twice"),
        ("12", "list"),
        ([[1.5]], "integer"),
    ],
)
def test_bad_regions(regions, match):
    with pytest.raises(ValueError, match=match):
        RankSEG(regions=regions)


def test_regions_that_do_not_fit_the_input():
    probs = softmax_maps(1, 3, 16, seed=6)
    with pytest.raises(ValueError, match="only 3 channels"):
        rankseg(probs, regions=[[1, 2, 3], [3]])
    with pytest.raises(ValueError, match=r"label\(s\) \[2\] belong to no region"):
        rankseg(probs, regions=[[1]])
    with pytest.raises(ValueError, match="one sigmoid channel per region"):
        rankseg(torch.rand(1, 2, 8, 8), regions=KITS23, output_mode="multilabel")
    with pytest.raises(ValueError, match="exactly one label"):
        rankseg(torch.rand(1, 2, 8, 8), regions=[[1, 2], [3, 4]], output_mode="multilabel")
