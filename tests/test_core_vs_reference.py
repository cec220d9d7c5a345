"""Agreement with the reference package rankseg==0.0.8 (the [bench] extra) on tie-free random inputs.

One documented difference: a class pruned by ``pruning_prob`` can still win unclaimed pixels by increment score
here (the multiclass rule, step 3 in rankseg_plugins.assign), while the reference leaves pruned classes out of that step. So the
comparison runs with ``pruning_prob=0``, where both prune nothing that could claim a pixel.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rankseg_plugins import rankseg

reference = pytest.importorskip("rankseg")


@given(
    st.integers(0, 2**32 - 1),
    st.sampled_from([(1, 3, 40), (2, 4, 16, 16), (1, 3, 6, 7, 8), (2, 1, 20, 20)]),
    st.sampled_from(["dice", "iou"]),
    st.sampled_from(["multiclass", "multilabel"]),
    st.sampled_from([0.5, 2.0, 5.0]),
)
def test_same_masks_as_reference_rma(seed, shape, metric, mode, scale):
    if shape[1] == 1:
        mode = "multilabel"  # the reference has no single-channel multiclass mode
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(shape, generator=g, dtype=torch.float64)
    probs = logits.sigmoid() if mode == "multilabel" or shape[1] == 1 else logits.softmax(1)
    expected = reference.RankSEG(metric=metric, output_mode=mode, solver="RMA", pruning_prob=0.0).predict(probs)
    assert torch.equal(rankseg(probs, metric=metric, output_mode=mode, pruning_prob=0.0), expected)
