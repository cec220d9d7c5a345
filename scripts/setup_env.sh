#!/usr/bin/env bash
# Create .venv with everything: the core, the MONAI, mmseg and nnU-Net adapters, rankseg-eval and its demo data, the
# benchmarks and the tests, at the exact versions this project is tested with on its machines. (pyproject.toml
# asks only for ranges; this script pins.)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# 1. torch first, the CPU build (2.13.0+cpu; elsewhere add --index-url https://download.pytorch.org/whl/cpu), so
#    that resolving the rest never pulls a multi-GB CUDA build.
"${pip[@]}" "torch==2.13.0"
# 2. the project with every extra, each direct requirement pinned to the version tested here.
"${pip[@]}" -e ".[dev]" \
    "torch==2.13.0" "numpy==2.4.6" \
    "monai==1.6.1" "nibabel==5.4.2" "pytorch-ignite==0.5.5" "fire==0.7.1" "PyYAML==6.0.4" "tqdm==4.70.1" \
    "matplotlib==3.11.2" "scipy==1.17.1" "mrcfile==1.5.4" \
    "mmcv-lite==2.1.0" "mmengine==0.10.7" "mmsegmentation==1.2.2" "ftfy==6.3.1" "regex==2026.11.19" \
    "setuptools==80.10.2" "rankseg==0.0.8" "nnunetv2==2.8.1" \
    "pytest==9.2.0" "pytest-xdist==3.8.0" "hypothesis==6.170.17"
#    nnunetv2 pulls PyPI's torchvision (via dynamic-network-architectures -> timm), which does not load against the
#    CPU torch ("operator torchvision::nms does not exist"); nothing this project uses imports it: remove it.
.venv/bin/python -m pip uninstall --quiet --disable-pip-version-check -y torchvision || true
# 3. the demo's real CT volume ships in this package, whose own requirements pin an old torch: take the data only.
"${pip[@]}" --no-deps "liver-ct-segmentation-package==1.6.0"
