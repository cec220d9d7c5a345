"""Deprecated alias of :mod:`rankseg_eval` (the ``rankseg-eval`` application moved out of the core package).

``python -m rankseg_plugins.eval`` still runs ``rankseg-eval``, and ``from rankseg_plugins.eval import demo`` still
finds ``rankseg_eval.demo``, each with a ``DeprecationWarning``: use ``rankseg_eval`` instead.
"""

import importlib
import importlib.util
import warnings
from types import ModuleType


def __getattr__(name: str) -> ModuleType:
    if name.startswith("_") or importlib.util.find_spec(f"rankseg_eval.{name}") is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"rankseg_plugins.eval.{name} moved to rankseg_eval.{name}", DeprecationWarning, stacklevel=2)
    module = globals()[name] = importlib.import_module(f"rankseg_eval.{name}")
    return module
