"""``model.test_cfg.decoder``: how an mmseg model turns its probabilities into ``pred_sem_seg``.

Importing this module wraps ``BaseSegmentor.postprocess_result`` and ``SegTTAModel.merge_preds`` once. The
wrappers run mmseg's own method first (unpadding, un-flipping, resizing to the original shape, argmax) and,
only for a model whose ``test_cfg`` names a decoder, replace ``pred_sem_seg`` with that decoder's labels
computed from the original-size probabilities; ``seg_logits`` stays as mmseg stores it. Without
``test_cfg.decoder`` the result is mmseg's, untouched. In a config::

    custom_imports = dict(imports=['mmseg_ext'], allow_failed_imports=False)
    model = dict(test_cfg=dict(decoder='rankseg', rankseg=dict(metric='iou')))

``decoder=dict(type='rankseg', metric='iou')`` is the same. Decoders live in :data:`DECODERS`, a child of
mmseg's ``TASK_UTILS`` registry: a decoder maps probabilities ``(B, C, H, W)`` to labels ``(B, H, W)``.
"""

import functools
from collections.abc import Callable

import torch
from mmengine.logging import print_log
from mmengine.registry import Registry
from mmengine.structures import PixelData
from mmseg.models.segmentors import BaseSegmentor, SegTTAModel
from mmseg.registry import TASK_UTILS
from mmseg.structures import SegDataSample
from mmseg.utils import OptSampleList, SampleList

from rankseg_plugins import RankSEG

Decoder = Callable[[torch.Tensor], torch.Tensor]

DECODERS = Registry("decoder", parent=TASK_UTILS, scope="mmseg_ext")


@DECODERS.register_module("argmax")
class ArgmaxDecoder:
    """mmseg's rule: argmax over classes; for one (sigmoid) channel, ``prob > threshold``.

    Args:
        threshold: foreground threshold for one-channel heads (mmseg's default ``decode_head.threshold``).
    """

    def __init__(self, threshold: float = 0.3) -> None:
        self.threshold = threshold

    def __call__(self, probs: torch.Tensor) -> torch.Tensor:
        if probs.shape[1] > 1:
            return probs.argmax(dim=1)
        return (probs[:, 0] > self.threshold).long()

    def __repr__(self) -> str:
        return f"ArgmaxDecoder(threshold={self.threshold})"


@DECODERS.register_module("rankseg")
def rankseg_decoder(**options) -> RankSEG:
    """RankSEG (Dice/IoU-optimal labels); ``options`` are :class:`rankseg_plugins.RankSEG`'s, or ``plan=`` a plan
    file fitted by ``rankseg-eval --fit-plan``."""
    if "output_mode" in options:
        raise ValueError(
            "mmseg's pred_sem_seg is a label map: the rankseg decoder is always "
            "output_mode='multiclass'; remove output_mode from its options"
        )
    if "plan" in options:
        decoder = RankSEG(**options)
        if decoder.options.output_mode != "multiclass":
            raise ValueError(f"the plan {options['plan']} decodes sigmoid channels; mmseg's pred_sem_seg needs a "
                             "softmax (multiclass) plan")
        return decoder
    return RankSEG(output_mode="multiclass", **options)


def build_decoder(segmentor: BaseSegmentor) -> Decoder | None:
    """The decoder ``segmentor.test_cfg`` asks for (built and logged once per model), or None."""
    test_cfg = getattr(segmentor, "test_cfg", None) or {}
    cfg = test_cfg.get("decoder")
    if cfg is None:
        return None
    if isinstance(cfg, str):
        cfg = dict(type=cfg, **test_cfg.get(cfg, {}))
    cfg = dict(cfg)
    cached = getattr(segmentor, "_mmseg_ext_decoder", None)
    if cached is not None and cached[0] == cfg:
        return cached[1]
    options = {key: value for key, value in cfg.items() if key != "type"}
    decoder_type = DECODERS.get(cfg["type"])
    if decoder_type is None:
        raise KeyError(
            f"test_cfg.decoder={cfg['type']!r} is not a registered decoder; registered: {sorted(DECODERS.module_dict)}"
        )
    decoder = decoder_type(**options)
    print_log(
        f"mmseg_ext: test_cfg.decoder {cfg} is active: pred_sem_seg = {decoder!r}(probabilities)", logger="current"
    )
    segmentor._mmseg_ext_decoder = (cfg, decoder)
    return decoder


def _probs(seg_logits: torch.Tensor) -> torch.Tensor:
    """Probabilities from one ``seg_logits`` (C, H, W): mmseg stores logits if C > 1, sigmoid if C == 1."""
    seg_logits = seg_logits.float()
    return seg_logits.softmax(dim=0) if seg_logits.shape[0] > 1 else seg_logits


def _set_pred(sample: SegDataSample, decoder: Decoder, probs: torch.Tensor) -> None:
    """Replace ``pred_sem_seg`` by ``decoder``'s labels, in mmseg's dtype (int64, or float for C == 1)."""
    labels = decoder(probs[None])
    sample.pred_sem_seg = PixelData(data=labels.to(sample.pred_sem_seg.data.dtype))


_postprocess_result = BaseSegmentor.postprocess_result
_merge_preds = SegTTAModel.merge_preds


# mmseg's postprocess_result (unpad, un-flip, resize, argmax), then test_cfg.decoder on the probabilities.
@functools.wraps(_postprocess_result)
def postprocess_result(self: BaseSegmentor, seg_logits: torch.Tensor, data_samples: OptSampleList = None) -> SampleList:
    data_samples = _postprocess_result(self, seg_logits, data_samples)
    decoder = build_decoder(self)
    if decoder is not None:
        for sample in data_samples:
            _set_pred(sample, decoder, _probs(sample.seg_logits.data))
    return data_samples


# mmseg's merge_preds, then test_cfg.decoder on the views' mean probabilities (what mmseg averages for C > 1;
# for C == 1 the stored probabilities themselves, where mmseg applies a second sigmoid).
@functools.wraps(_merge_preds)
def merge_preds(self: SegTTAModel, data_samples_list: list[SampleList]) -> SampleList:
    predictions = _merge_preds(self, data_samples_list)
    decoder = build_decoder(self.module)
    if decoder is not None:
        for merged, views in zip(predictions, data_samples_list, strict=True):
            probs = torch.stack([_probs(view.seg_logits.data) for view in views]).mean(dim=0)
            _set_pred(merged, decoder, probs)
    return predictions


BaseSegmentor.postprocess_result = postprocess_result
SegTTAModel.merge_preds = merge_preds
