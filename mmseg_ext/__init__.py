"""mmsegmentation adapter: ``model.test_cfg.decoder='rankseg'`` switches a model's prediction to RankSEG.

Import it before mmseg's models (``custom_imports = dict(imports=['mmseg_ext'])`` in a config does):
with mmcv-lite it stands in for mmcv's missing compiled ops; see :mod:`mmseg_ext.decoders`.
"""

try:
    import mmseg  # noqa: F401
except ImportError as err:  # pragma: no cover - exercised only without mmseg
    raise ImportError("mmseg_ext needs mmsegmentation: pip install 'rankseg-plugins[mmseg]'.") from err

from ._compat import allow_mmengine_checkpoints, install_mmcv_ext_stub  # noqa: E402

install_mmcv_ext_stub()
allow_mmengine_checkpoints()

from .decoders import DECODERS, ArgmaxDecoder, build_decoder, rankseg_decoder  # noqa: E402

__all__ = ["DECODERS", "ArgmaxDecoder", "build_decoder", "rankseg_decoder"]
