"""Environment fixes that must run before mmseg's models are imported.

* mmcv-lite ships no compiled ops, but mmseg imports ``mmcv.ops`` unconditionally. When (and only when)
  ``mmcv._ext`` is missing, a stand-in module is registered whose ops raise when called, so models that
  need no compiled op import and run, and those that do still fail loudly.
* torch >= 2.6 loads checkpoints with ``weights_only=True``; checkpoints saved by mmengine 0.10 hold its
  ``HistoryBuffer`` and numpy arrays, which are allow-listed here.
"""

import importlib.machinery
import importlib.util
import pickle
import sys
import types
from collections.abc import Callable
from typing import NoReturn

import numpy as np
import torch


class _MissingCompiledOps(types.ModuleType):
    """Stand-in for ``mmcv._ext``: every attribute is an op that raises when called."""

    def __getattr__(self, name: str) -> Callable[..., NoReturn]:
        if name.startswith("__"):
            raise AttributeError(name)

        def missing_op(*args, **kwargs) -> NoReturn:
            raise RuntimeError(
                f"mmcv op {name!r} needs mmcv's compiled ops (mmcv._ext), which mmcv-lite does not "
                "ship. Install full mmcv (e.g. `pip install mmcv==2.1.0`, built from source on CPU) "
                "to use this model."
            )

        return missing_op


def install_mmcv_ext_stub() -> None:
    """Register the ``mmcv._ext`` stand-in if mmcv has no compiled ops."""
    if "mmcv._ext" in sys.modules or importlib.util.find_spec("mmcv._ext") is not None:
        return
    stub = _MissingCompiledOps("mmcv._ext")
    # mmengine probes `pkgutil.find_loader('mmcv._ext')`: a spec without a loader reads as "not available".
    stub.__spec__ = importlib.machinery.ModuleSpec("mmcv._ext", loader=None)
    sys.modules["mmcv._ext"] = stub


def allow_mmengine_checkpoints() -> None:
    """Allow-list what mmengine checkpoints hold for torch's ``weights_only`` loader (default from torch 2.6).

    Besides numpy arrays and scalars, a pickled ``HistoryBuffer`` names its statistics methods as
    ``getattr(HistoryBuffer, 'min')``; ``getattr`` is allowed for exactly those, nothing else.
    """
    from mmengine.logging import HistoryBuffer
    from mmengine.utils import digit_version

    if digit_version(torch.__version__) < digit_version("2.6.0"):
        return
    statistics = ("min", "max", "current", "mean")

    def history_buffer_getattr(obj: object, name: str) -> Callable:
        if obj is not HistoryBuffer or name not in statistics:
            raise pickle.UnpicklingError(
                f"weights_only load: getattr({obj!r}, {name!r}) is not allowed; mmseg_ext allows only "
                f"getattr(HistoryBuffer, name) for name in {statistics}. Load with weights_only=False only "
                "if you trust the file."
            )
        return getattr(obj, name)

    numpy_globals = [np.ndarray, np.dtype, *{type(np.dtype(code)) for code in np.typecodes["All"]}]
    for function in (np.empty(0).__reduce__()[0], np.float64(0).__reduce__()[0]):  # _reconstruct, scalar
        # numpy 1.x pickles these as numpy.core.multiarray.*, numpy 2.x as numpy._core.multiarray.*
        numpy_globals += [(function, f"numpy.{core}.multiarray.{function.__name__}") for core in ("core", "_core")]
    torch.serialization.add_safe_globals([HistoryBuffer, (history_buffer_getattr, "builtins.getattr"), *numpy_globals])
