"""Reading nnU-Net's ``.pkl`` files without running code from them.

Loading a pickle calls whatever functions it names, so a ``.pkl`` from a folder you did not write yourself can run
any code (``os.system`` included). nnU-Net's own files hold only plain data, and :func:`load_pickle` admits nothing
else: Python containers and scalars, NumPy arrays, dtypes and scalars (under NumPy 2's ``numpy._core`` names and
NumPy 1's ``numpy.core`` ones), and, in ``postprocessing.pkl`` only, the postprocessing function stock nnU-Net
writes there. Anything else stops the load with :class:`UnsafePickleError`, naming what the file asked for.

What the files hold (nnU-Net 2.8.1):

- ``<case>.pkl`` (``--save_probabilities``): the case's properties, a dict of tuples, lists and ints with
  ``np.float64`` spacings; ``NibabelIO`` adds 4 x 4 affine arrays.
- ``postprocessing.pkl`` (``nnUNetv2_determine_postprocessing``): ``(pp_fns, pp_fn_kwargs)``, a list of functions
  (always ``remove_all_but_largest_component_from_segmentation``) and a list of their keyword arguments.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np

#: Module -> names a properties file may refer to. Every one only builds data from data.
DATA = {
    "builtins": {"set", "frozenset", "complex", "bytearray", "slice", "range"},
    "collections": {"OrderedDict"},
    "_codecs": {"encode"},  # how protocol 2 stores bytes
    "numpy": {"dtype", "ndarray"},
    "numpy._core.multiarray": {"scalar", "_reconstruct"},
    "numpy._core.numeric": {"_frombuffer"},  # protocol 5 arrays
}
#: What ``postprocessing.pkl`` may name besides data. Other functions of that module are left out on purpose:
#: ``load_postprocess_save`` or ``apply_postprocessing_to_folder`` would write files wherever a pickle says.
POSTPROCESSING = {
    "nnunetv2.postprocessing.remove_connected_components": {"remove_all_but_largest_component_from_segmentation"},
}
_NUMPY_CORE = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names a global that is not on the allow-list; nothing it names was called."""


class _Restricted(pickle.Unpickler):
    def __init__(self, file: Any, path: Path, allowed: dict[str, set[str]]) -> None:
        super().__init__(file)
        self.path, self.allowed = path, allowed

    def find_class(self, module: str, name: str) -> Any:
        # pickles from NumPy 1 say numpy.core, from NumPy 2 numpy._core: read both with the installed NumPy;
        # protocols 0-2 say __builtin__ for builtins
        canonical = module.replace("numpy.core", "numpy._core", 1) if module.startswith("numpy.core") else module
        canonical = "builtins" if canonical == "__builtin__" else canonical
        if name not in self.allowed.get(canonical, ()):
            raise UnsafePickleError(
                f"{self.path}: refused to load {module}.{name}, because unpickling it could run code; nnU-Net's .pkl "
                "files hold only plain data (and, in postprocessing.pkl, its postprocessing function). Recreate the "
                "file with nnU-Net, or check where it came from."
            )
        if canonical.startswith("numpy._core"):
            canonical = canonical.replace("numpy._core", _NUMPY_CORE, 1)
        return getattr(importlib.import_module(canonical), name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.path} uses persistent ids, which nnU-Net's pickles never do; refused.")


def load_pickle(path: Path | str, postprocessing: bool = False) -> Any:
    """The content of nnU-Net's ``.pkl`` file ``path``; ``postprocessing=True`` for ``postprocessing.pkl``.

    Raises :class:`UnsafePickleError` for anything but data (and nnU-Net's postprocessing function), ``OSError``
    when the file cannot be read, ``pickle.UnpicklingError`` (or ``EOFError``) when it is not a pickle.
    """
    path = Path(path)
    allowed = {**DATA, **POSTPROCESSING} if postprocessing else DATA
    with path.open("rb") as f:
        return _Restricted(f, path, allowed).load()


def load_postprocessing(path: Path | str) -> tuple[list[Any], list[dict[str, Any]]]:
    """``(pp_fns, pp_fn_kwargs)`` from nnU-Net's ``postprocessing.pkl``; ``ValueError`` when it holds other data."""
    content = load_pickle(path, postprocessing=True)
    ok = isinstance(content, (tuple, list)) and len(content) == 2
    if ok:
        fns, kwargs = content
        ok = isinstance(fns, list) and isinstance(kwargs, list) and len(fns) == len(kwargs)
        ok = ok and all(callable(f) for f in fns) and all(isinstance(k, dict) for k in kwargs)
    if not ok:
        raise ValueError(f"{path} is not nnU-Net's postprocessing.pkl: expected (functions, keyword dicts) of equal "
                         "length, as nnUNetv2_determine_postprocessing writes")
    return fns, kwargs
