"""monai_ext.RankSEG / RankSEGd, tested the way MONAI tests its post-transforms."""

from __future__ import annotations

import pytest

pytest.importorskip("monai")

import numpy as np
import torch
from monai.data import MetaTensor, decollate_batch
from monai.data.meta_obj import set_track_meta
from monai.metrics import DiceMetric
from monai.transforms import Activationsd, AsDiscrete, Compose

import monai_ext
from monai_ext import RankSEG, RankSEGd
from rankseg_plugins import RankSEG as CoreRankSEG

AFFINE = torch.tensor([[-0.8, 0, 0, 10.0], [0, -0.8, 0, 20.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]], dtype=torch.float64)
INPUT_TYPES = {
    "numpy": lambda t: t.numpy(),
    "torch": lambda t: t,
    "metatensor": lambda t: MetaTensor(t, affine=AFFINE, meta={"filename_or_obj": "case_00001/imaging.nii.gz"}),
}
SPATIAL = {"2d": (12, 10), "3d": (8, 7, 6)}


def probs(channels: int, spatial: tuple[int, ...], sigmoid: bool = False, seed: int = 0) -> torch.Tensor:
    logits = 3 * torch.randn(channels, *spatial, generator=torch.Generator().manual_seed(seed))
    return torch.sigmoid(logits) if sigmoid else torch.softmax(logits, 0)


@pytest.mark.parametrize("input_type", INPUT_TYPES)
@pytest.mark.parametrize("dims", SPATIAL)
@pytest.mark.parametrize("metric", ["dice", "iou"])
def test_multiclass_matches_core_and_asdiscrete_layout(input_type: str, dims: str, metric: str) -> None:
    p = probs(3, SPATIAL[dims])
    img = INPUT_TYPES[input_type](p)
    out = RankSEG(metric=metric)(img)
    reference = AsDiscrete(argmax=True)(img)
    assert type(out) is type(reference) and out.dtype == reference.dtype == torch.float32
    assert out.shape == reference.shape == (1, *SPATIAL[dims])
    expected = CoreRankSEG(metric=metric)(p[None])
    torch.testing.assert_close(torch.as_tensor(out).long(), expected, rtol=0, atol=0)


@pytest.mark.parametrize("input_type", INPUT_TYPES)
@pytest.mark.parametrize("dims", SPATIAL)
def test_multilabel_matches_core(input_type: str, dims: str) -> None:
    p = probs(2, SPATIAL[dims], sigmoid=True)
    out = RankSEG(output_mode="multilabel")(INPUT_TYPES[input_type](p))
    assert out.shape == (2, *SPATIAL[dims]) and out.dtype == torch.float32
    torch.testing.assert_close(torch.as_tensor(out).bool(), CoreRankSEG(output_mode="multilabel")(p[None])[0])


def test_binary_foreground_probability() -> None:
    p = probs(1, SPATIAL["3d"], sigmoid=True)
    out = RankSEG()(p)
    assert out.shape == (1, *SPATIAL["3d"])
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(out.long(), CoreRankSEG()(p[None]))
    assert RankSEG(to_onehot=2)(p).shape == (2, *SPATIAL["3d"])


@pytest.mark.parametrize("dims", SPATIAL)
def test_meta_and_affine_survive(dims: str) -> None:
    img = INPUT_TYPES["metatensor"](probs(3, SPATIAL[dims]))
    img.applied_operations = [{"class": "Spacingd"}]
    for out in (RankSEG()(img), RankSEG(to_onehot=3)(img), RankSEG(output_mode="multilabel")(img)):
        assert isinstance(out, MetaTensor)
        torch.testing.assert_close(out.affine, AFFINE)
        assert out.meta["filename_or_obj"] == "case_00001/imaging.nii.gz"
        assert out.applied_operations == img.applied_operations


def test_without_meta_tracking_returns_plain_tensor() -> None:
    set_track_meta(False)
    try:
        out = RankSEG()(INPUT_TYPES["metatensor"](probs(3, SPATIAL["2d"])))
    finally:
        set_track_meta(True)
    assert type(out) is torch.Tensor


def test_to_onehot_feeds_dice_metric() -> None:
    p = probs(3, SPATIAL["3d"])
    labels = RankSEG()(p)
    onehot = RankSEG(to_onehot=3)(p)
    assert onehot.shape == (3, *SPATIAL["3d"]) and onehot.dtype == torch.float32
    torch.testing.assert_close(onehot, AsDiscrete(to_onehot=3)(labels))
    dice = DiceMetric(include_background=True)(onehot[None], onehot[None])
    torch.testing.assert_close(dice, torch.ones(1, 3))


def test_to_onehot_leaves_void_voxels_empty() -> None:
    p = torch.full((3, 4, 4), 1 / 3)  # with the reference's pruning no class claims: every voxel is unassigned
    out = RankSEG(unassigned="void", void_index=255, pruning_prob=0.5)(p)
    assert (out == 255).all()
    assert not RankSEG(unassigned="void", to_onehot=3, pruning_prob=0.5)(p).any()


def test_dtype_option() -> None:
    assert RankSEG(dtype=torch.uint8)(probs(3, SPATIAL["2d"])).dtype == torch.uint8
    assert RankSEG(dtype=np.uint8)(probs(3, SPATIAL["2d"]).numpy()).dtype == torch.uint8


def test_call_overrides_construction_options() -> None:
    p = probs(3, SPATIAL["2d"], seed=3)
    transform = RankSEG(metric="dice")
    torch.testing.assert_close(transform(p, metric="iou"), RankSEG(metric="iou")(p))
    torch.testing.assert_close(transform(p, to_onehot=4), RankSEG(to_onehot=4)(p))
    assert transform(p, output_mode="multilabel").shape == (3, *SPATIAL["2d"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"output_mode": "multilabel", "to_onehot": 3}, "label-map output only"),
        ({"to_onehot": 2}, "smaller than the 3 classes"),
        ({"to_onehot": True}, "number of classes"),
    ],
)
def test_bad_onehot(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RankSEG(**kwargs)(probs(3, SPATIAL["2d"]))


def test_bad_option_fails_at_construction() -> None:
    with pytest.raises(ValueError):
        RankSEG(metric="dise")
    with pytest.raises(ValueError):
        RankSEGd(keys=["a", "b"], metric=["dice", "dise"])
    with pytest.raises(ValueError, match="number of classes"):
        RankSEGd(keys=["a", "b"], to_onehot=[3, True])


def test_batched_metatensor_is_rejected() -> None:
    batch = MetaTensor(probs(3, SPATIAL["2d"])[None].repeat(2, 1, 1, 1))
    batch.is_batch = True
    with pytest.raises(ValueError, match="decollate_batch"):
        RankSEG()(batch)


def test_logits_are_rejected() -> None:
    logits = 3 * torch.randn(3, *SPATIAL["2d"])
    with pytest.raises(ValueError, match="logits"):
        RankSEG()(logits)
    with pytest.raises(ValueError, match="NaN"):
        RankSEG()(torch.full((3, 4, 4), float("nan")))
    with pytest.raises(TypeError, match="not labels"):
        RankSEG()(torch.ones(1, 4, 4, dtype=torch.int64))


def test_unbatched_vector_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(C, \*spatial\)"):
        RankSEG()(torch.rand(5))


def test_dict_aliases_and_missing_keys() -> None:
    assert monai_ext.RankSEGD is monai_ext.RankSEGDict is RankSEGd
    assert RankSEGd.backend == RankSEG.backend
    p = probs(3, SPATIAL["2d"])
    out = RankSEGd(keys=["pred", "absent"], allow_missing_keys=True)({"pred": p, "image": p})
    torch.testing.assert_close(out["pred"], RankSEG()(p))
    assert out["image"] is p
    with pytest.raises(KeyError):
        RankSEGd(keys=["pred", "absent"])({"pred": p})


def test_dict_per_key_options() -> None:
    p, q = probs(3, SPATIAL["3d"]), probs(2, SPATIAL["3d"], sigmoid=True, seed=1)
    out = RankSEGd(keys=["a", "b"], output_mode=["multiclass", "multilabel"], to_onehot=[3, None], metric="iou")(
        {"a": p, "b": q}
    )
    torch.testing.assert_close(out["a"], RankSEG(metric="iou", to_onehot=3)(p))
    torch.testing.assert_close(out["b"], RankSEG(metric="iou", output_mode="multilabel")(q))


def test_compose_after_decollate_batch() -> None:
    logits = 3 * torch.randn(2, 3, *SPATIAL["3d"])
    batch = {"pred": MetaTensor(logits, affine=AFFINE)}
    post = Compose([Activationsd(keys="pred", softmax=True), RankSEGd(keys="pred")])
    outputs = [post(item)["pred"] for item in decollate_batch(batch)]
    expected = CoreRankSEG()(torch.softmax(logits, 1))
    for out, exp in zip(outputs, expected):
        assert isinstance(out, MetaTensor) and not out.is_batch
        torch.testing.assert_close(out[0].long(), exp)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensor_stays_on_device() -> None:
    p = probs(3, SPATIAL["3d"])
    img = INPUT_TYPES["metatensor"](p).cuda()
    for transform in (RankSEG(), RankSEG(to_onehot=3), RankSEG(output_mode="multilabel")):
        out = transform(img)
        assert out.device == img.device
        torch.testing.assert_close(out.cpu(), transform(p))


def test_plan_equals_core_plan(tmp_path) -> None:
    """RankSEG(plan=...) and RankSEGd(keys, plan=...) decode as RankSEG.from_plan(...) does."""
    plan = {"format": "rankseg-plan", "version": 1, "options": {}, "channels": 3, "targets": ["bg", "a", "b"],
            "decisions": [{"decoder": "rankseg"}, {"decoder": "threshold", "threshold": 0.4}, {"decoder": "argmax"}]}
    path = tmp_path / "plan.json"
    path.write_text(__import__("json").dumps(plan))
    p = probs(3, SPATIAL["3d"])
    expected = CoreRankSEG.from_plan(plan)(p[None])
    torch.testing.assert_close(RankSEG(plan=path)(p).long()[0], expected[0], rtol=0, atol=0)
    out = RankSEGd(keys=["a", "b"], plan=str(path))({"a": p, "b": p})
    torch.testing.assert_close(out["b"].long()[0], expected[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="carries its options"):
        RankSEG(plan=path)(p, metric="iou")
