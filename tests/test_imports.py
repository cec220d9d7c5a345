"""What each package loads at import, checked in a fresh interpreter: the core stays free of the frameworks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("monai", "mmseg", "mmcv", "mmengine", "nibabel", "matplotlib", "scipy")  # torch itself loads tqdm


def loaded_after(statement: str) -> set[str]:
    """Top-level names of the modules in ``sys.modules`` after ``statement`` in a new interpreter."""
    code = f"import json, sys; {statement}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("statement", ["import rankseg_plugins", "from rankseg_eval.layouts import datalist",
                                       "import rankseg_eval"])
def test_import_loads_no_framework(statement):
    assert not loaded_after(statement) & set(HEAVY)
