"""KiTS23-style nested regions: RankSEGNested, RegionsToLabel, LabelToRegions and their dict twins."""

from __future__ import annotations

import pytest

pytest.importorskip("monai")

import torch
from monai.data import MetaTensor

import monai_ext
from monai_ext import LabelToRegions, LabelToRegionsd, RankSEGNested, RankSEGNestedd, RegionsToLabel, RegionsToLabeld
from rankseg_plugins import RankSEG as CoreRankSEG

KITS23 = ((1, 2, 3), (2, 3), (2,))  # kidney+tumour+cyst, masses (tumour+cyst), tumour
AFFINE = torch.diag(torch.tensor([0.8, 0.8, 3.0, 1.0], dtype=torch.float64))


def region_probs(spatial: tuple[int, ...] = (10, 9, 8), seed: int = 0) -> torch.Tensor:
    """Sigmoid outputs of three region heads that are not consistently nested (each head has its own noise)."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.stack(torch.meshgrid(*(torch.linspace(-1, 1, n) for n in spatial), indexing="ij")).norm(dim=0)
    radii = torch.tensor([0.9, 0.6, 0.35]).view(3, *([1] * len(spatial)))
    return torch.sigmoid(8 * (radii - centre) + 1.5 * torch.randn(3, *spatial, generator=g))


def test_regions_to_label_paints_inner_last_and_enforces_union() -> None:
    masks = torch.zeros(3, 1, 5)
    masks[0, 0, 0:4] = 1  # kidney region
    masks[1, 0, 1:3] = 1  # masses
    masks[2, 0, 2] = 1  # tumour
    masks[2, 0, 4] = 1  # tumour outside both outer masks: kept, outer regions grow to include it
    label = RegionsToLabel(KITS23)(masks)
    torch.testing.assert_close(label, torch.tensor([[[1.0, 3.0, 2.0, 1.0, 2.0]]]))
    regions = LabelToRegions(KITS23)(label)
    assert (regions[1] >= regions[2]).all() and (regions[0] >= regions[1]).all()
    torch.testing.assert_close(regions[2], masks[2])


def test_label_to_regions_inverts_regions_to_label_on_nested_masks() -> None:
    label = torch.randint(0, 4, (1, 6, 5, 4)).float()
    regions = LabelToRegions(KITS23)(label)
    assert regions.shape == (3, 6, 5, 4)
    torch.testing.assert_close(RegionsToLabel(KITS23)(regions), label)


@pytest.mark.parametrize("metric", ["dice", "iou"])
@pytest.mark.parametrize("spatial", [(12, 11), (10, 9, 8)])
def test_rankseg_nested_is_core_multilabel_plus_union(metric: str, spatial: tuple[int, ...]) -> None:
    p = region_probs(spatial)
    label = RankSEGNested(KITS23, metric=metric)(p)
    assert label.shape == (1, *spatial) and label.dtype == torch.float32
    masks = CoreRankSEG(metric=metric, output_mode="multilabel")(p[None])[0]
    expected = torch.stack([masks[k:].any(0) for k in range(3)])  # region k = own mask | every inner mask
    assert not torch.equal(expected, masks)  # the heads disagree somewhere, so nesting had work to do
    regions = LabelToRegions(KITS23)(label).bool()
    torch.testing.assert_close(regions, expected)
    assert (regions[1] <= regions[0]).all() and (regions[2] <= regions[1]).all()


def test_rankseg_nested_keeps_meta_and_numpy() -> None:
    p = region_probs()
    out = RankSEGNested(KITS23)(MetaTensor(p, affine=AFFINE, meta={"filename_or_obj": "case_00002/imaging.nii.gz"}))
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "case_00002/imaging.nii.gz"
    torch.testing.assert_close(out.affine, AFFINE)
    torch.testing.assert_close(RankSEGNested(KITS23)(p.numpy()), out.as_tensor())


@pytest.mark.parametrize(
    "regions",
    [(), ((1, 2), (3,)), ((1, 2, 3), (2,)), ((0, 1), (1,)), ((2, 3), (2, 3)), ((1, 2), (2,), ())],
)
def test_regions_must_be_a_nested_chain(regions: tuple) -> None:
    for transform in (RankSEGNested, RegionsToLabel, LabelToRegions):
        with pytest.raises(ValueError, match="regions"):
            transform(regions)


def test_channel_count_and_binary_input_are_checked() -> None:
    with pytest.raises(ValueError, match="3 regions but 2 channels"):
        RankSEGNested(KITS23)(region_probs()[:2])
    with pytest.raises(ValueError, match="binary masks"):
        RegionsToLabel(KITS23)(region_probs())
    with pytest.raises(ValueError, match="1 channel"):
        LabelToRegions(KITS23)(torch.zeros(3, 4, 4))


def test_dict_twins() -> None:
    assert monai_ext.RankSEGNestedD is monai_ext.RankSEGNestedDict is RankSEGNestedd
    assert monai_ext.RegionsToLabelD is monai_ext.RegionsToLabelDict is RegionsToLabeld
    assert monai_ext.LabelToRegionsD is monai_ext.LabelToRegionsDict is LabelToRegionsd
    p = region_probs()
    d = RankSEGNestedd(keys=["pred", "absent"], regions=KITS23, allow_missing_keys=True)({"pred": p})
    torch.testing.assert_close(d["pred"], RankSEGNested(KITS23)(p))
    d = RegionsToLabeld(keys="pred", regions=KITS23)({"pred": (p > 0.5).float()})
    torch.testing.assert_close(d["pred"], RegionsToLabel(KITS23)((p > 0.5).float()))
    d = LabelToRegionsd(keys="label", regions=KITS23)({"label": d["pred"]})
    assert d["label"].shape == (3, *p.shape[1:])
