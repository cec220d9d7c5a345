"""Plans: one decision per class or region, loaded from a versioned file, decoded in one pass."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from rankseg_plugins import Plan, RankSEG, rankseg


def softmax_maps(B: int, C: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    logits = F.interpolate(3 * torch.randn(B, C, size // 8, size // 8, generator=g), size=(size, size), mode="bilinear")
    return logits.softmax(1)


def plan(decisions: list[dict], channels: int, **options) -> dict:
    return {"format": "rankseg-plan", "version": 1, "options": options, "channels": channels,
            "targets": [f"t{i}" for i in range(len(decisions))], "decisions": decisions}


def test_all_argmax_is_argmax():
    probs = softmax_maps(3, 5, 40, 0)
    probs[0, :, :2, :2] = 0.2  # exact ties: the first class wins, as in argmax
    decoder = RankSEG.from_plan(plan([{"decoder": "argmax"}] * 5, 5))
    assert torch.equal(decoder(probs), probs.argmax(1))


@pytest.mark.parametrize("options", [{}, dict(metric="iou"), dict(ignore_empty=True), dict(smooth=1.0),
                                     dict(solver="exact")])
def test_all_rankseg_is_rankseg(options):
    probs = softmax_maps(2, 4, 32, 1)
    decoder = RankSEG.from_plan(plan([{"decoder": "rankseg"}] * 4, 4, **options))
    assert torch.equal(decoder(probs), rankseg(probs, **options))
    assert torch.equal(decoder.thresholds(probs), RankSEG(**options).thresholds(probs))


def test_mixed_decisions_are_their_masks_then_the_multiclass_rule():
    probs = softmax_maps(2, 4, 32, 2)
    decisions = [{"decoder": "rankseg"}, {"decoder": "rankseg", "pruning_prob": 0.5},
                 {"decoder": "threshold", "threshold": 0.3}, {"decoder": "rankseg", "temperature": 2.0, "bias": 0.5}]
    decoder = RankSEG.from_plan(plan(decisions, 4))
    theta = decoder.thresholds(probs)
    assert torch.equal(theta[:, 0], RankSEG().thresholds(probs)[:, 0])
    assert torch.equal(theta[:, 1], RankSEG(pruning_prob=0.5).thresholds(probs)[:, 1])
    assert (theta[:, 2] == torch.tensor(0.3).double()).all()  # thresholds live in the compute dtype
    q = torch.sigmoid(torch.logit(probs[:, 3:].double().clamp(1e-30, 1 - 1e-7)) / 2.0 + 0.5).float()
    mask_q = rankseg(q, output_mode="multilabel")
    assert torch.equal(probs[:, 3:] > theta[:, 3, None, None, None], mask_q)  # a threshold on p, the same mask
    labels = decoder(probs)
    assert labels.shape == (2, 32, 32)


def test_regions_plan():
    probs = softmax_maps(2, 3, 32, 3)
    regions = [[1, 2], [2]]
    everywhere = RankSEG.from_plan(plan([{"decoder": "rankseg"}] * 2, 3, regions=regions))
    assert torch.equal(everywhere(probs), rankseg(probs, regions=regions))
    argmax = RankSEG.from_plan(plan([{"decoder": "argmax"}] * 2, 3, regions=regions))
    assert torch.equal(argmax(probs), probs.argmax(1))  # a region takes the pixels whose argmax class it holds
    half = RankSEG.from_plan(plan([{"decoder": "argmax"}, {"decoder": "rankseg"}], 3, regions=regions))
    inner = rankseg(probs, regions=regions) == 2
    assert torch.equal(half(probs), torch.where(inner, 2, torch.where(probs.argmax(1) > 0, 1, 0)))
    sigmoid = RankSEG.from_plan(plan([{"decoder": "argmax"}] * 3, 3, regions=[[1, 2, 3], [2, 3], [2]],
                                     output_mode="multilabel"))
    q = torch.rand(2, 3, 16, 16)
    expected = torch.zeros(2, 16, 16, dtype=torch.int64)
    for channel, label in enumerate([1, 3, 2]):  # nnU-Net's own region decoding
        expected[q[:, channel] > 0.5] = label
    assert torch.equal(sigmoid(q), expected)


def test_plan_round_trips_through_a_file(tmp_path):
    path = tmp_path / "plan.json"
    data = plan([{"decoder": "rankseg"}, {"decoder": "argmax"}, {"decoder": "threshold", "threshold": 0.4}], 3,
                metric="iou")
    loaded = Plan.load(data)
    loaded.save(path)
    again = Plan.load(path)
    assert again == loaded and json.loads(path.read_text())["version"] == 1
    probs = softmax_maps(1, 3, 16, 4)
    assert torch.equal(RankSEG(plan=path)(probs), RankSEG.from_plan(data)(probs))


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(format="other"), "not a RankSEG plan"),
        (dict(version=2), "version 2"),
        (dict(channels=4), "4 classes"),
        (dict(decisions=[{"decoder": "median"}] * 3), "median"),
        (dict(decisions=[{"decoder": "threshold"}] * 3), "threshold in"),
        (dict(decisions=[{"decoder": "argmax", "temperature": 2.0}] * 3), "temperature"),
        (dict(options={"metric": "acc"}), "nothing to decide"),
        (dict(options={"pruning_prob": 0.5}), "belongs to a class"),
        (dict(options={"regions": [[1, 2], [2]]}), "2 regions"),
        (dict(options={"ignore_empty": True}, decisions=[{"decoder": "rankseg", "pruning_prob": 0.5}] * 3), "prunes"),
    ],
)
def test_bad_plans(change, match):
    with pytest.raises(ValueError, match=match):
        Plan.load({**plan([{"decoder": "rankseg"}] * 3, 3), **change})


def test_plan_for_another_input_is_refused(tmp_path):
    decoder = RankSEG.from_plan(plan([{"decoder": "rankseg"}] * 3, 3))
    with pytest.raises(ValueError, match="fitted for 3 input channels"):
        decoder(softmax_maps(1, 4, 16, 5))
    with pytest.raises(ValueError, match="not both"):
        RankSEG(plan=plan([{"decoder": "rankseg"}] * 3, 3), metric="iou")
    with pytest.raises(ValueError, match="cannot read"):
        RankSEG.from_plan(tmp_path / "missing.json")
