"""What each package loads at import, checked in a fresh interpreter: the core stays free of the frameworks, and
only the nnU-Net adapter loads nnunetv2."""

from __future__ import annotations

import importlib.util
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


FRAMEWORK_FREE = ["import rankseg_plugins", "import rankseg_eval", "import rankseg_eval.cli", "import monai_ext",
                  "import mmseg_ext"]


@pytest.mark.parametrize("statement", FRAMEWORK_FREE)
def test_only_the_nnunet_adapter_imports_nnunet(statement):
    """nnunetv2 (the [nnunet] extra) is loaded by nnunet_ext alone."""
    framework = {"monai_ext": "monai", "mmseg_ext": "mmseg"}.get(statement.split()[-1])
    if framework and importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed")
    assert "nnunetv2" not in loaded_after(statement)


def test_nnunet_adapter_loads_no_other_framework():
    """rankseg-nnunet needs neither MONAI, mmseg nor torchvision (which PyPI's build breaks on a CPU torch)."""
    if importlib.util.find_spec("nnunetv2") is None:
        pytest.skip("nnunetv2 is not installed")
    loaded = loaded_after("import nnunet_ext.cli")
    assert "nnunetv2" in loaded
    assert not loaded & {"monai", "mmseg", "mmcv", "mmengine", "torchvision", "timm"}
