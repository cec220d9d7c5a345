"""Bad input gets a clear error naming the problem and the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rankseg_plugins import RankSEG, rankseg


def probs(*shape: int) -> torch.Tensor:
    return torch.randn(*shape).softmax(1)


@pytest.mark.parametrize(
    "value, match",
    [(float("nan"), "NaN or inf"), (float("inf"), "NaN or inf"), (-float("inf"), "NaN or inf"),
     (3.5, "logits"), (-0.2, "logits")],
)
def test_bad_values(value, match):
    x = probs(1, 3, 8, 8)
    x[0, 1, 2, 3] = value
    with pytest.raises(ValueError, match=match):
        rankseg(x)
    with pytest.raises(ValueError, match=match):
        RankSEG().thresholds(x)


def test_logits_message_says_apply_softmax():
    with pytest.raises(ValueError, match="softmax"):
        rankseg(torch.randn(2, 3, 8, 8) * 5)


@pytest.mark.parametrize("shape", [(5,), (3, 8)])
def test_wrong_rank(shape):
    with pytest.raises(ValueError, match=r"\(B, C, \*spatial\)"):
        rankseg(torch.rand(*shape))


def test_empty_input():
    with pytest.raises(ValueError, match="empty"):
        rankseg(torch.rand(1, 0, 4))


def test_wrong_types():
    with pytest.raises(TypeError, match="torch.Tensor"):
        rankseg(np.random.rand(1, 2, 4, 4))
    with pytest.raises(TypeError, match="floating"):
        rankseg(torch.ones(1, 2, 4, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="string"):
        RankSEG(metric=1)
    with pytest.raises(TypeError, match="smooth"):
        RankSEG(smooth="1")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(metric="f1"), "metric"),
        (dict(solver="sort"), "solver"),
        (dict(output_mode="binary"), "output_mode"),
        (dict(unassigned="nearest"), "unassigned"),
        (dict(smooth=-1.0), "smooth"),
        (dict(smooth=float("nan")), "smooth"),
        (dict(pruning_prob=1.5), "pruning_prob"),
        (dict(pruning_prob=-0.1), "pruning_prob"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RankSEG(**kwargs)
    with pytest.raises(ValueError, match=match):
        rankseg(probs(1, 2, 4, 4), **kwargs)


def test_option_names_are_case_and_space_insensitive():
    rs = RankSEG(metric=" IoU ", output_mode="Multi Label", solver="RMA", unassigned="max score")
    assert (rs.options.metric, rs.options.output_mode, rs.options.unassigned) == ("iou", "multilabel", "max_score")


def test_unnormalised_multiclass_warns():
    sig = torch.rand(1, 3, 16, 16)
    with pytest.warns(UserWarning, match="multilabel"):
        rankseg(sig)


def test_softmax_does_not_warn(recwarn):
    rankseg(probs(2, 4, 16, 16).half())
    rankseg(torch.rand(1, 3, 16, 16), output_mode="multilabel")
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_one_spatial_dim_warns_with_the_fix():
    """A (C, H, W) image passed without its batch dim reads as (B, C, L): say so, with the fix."""
    image = torch.rand(2, 64, 64)
    for mode in ("multiclass", "multilabel"):
        with pytest.warns(UserWarning, match=r"probs\[None\]"):
            rankseg(image, output_mode=mode)
