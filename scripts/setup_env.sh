#!/usr/bin/env bash
# Create .venv with everything: the core, the MONAI and mmseg adapters, the demo data, benchmarks and tests.
# Torch is pinned (pyproject.toml) to the CPU build 2.13.0; install your own torch first to use another build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
# The demo's real CT volume ships in this package, whose own requirements pin an old torch: take the data only.
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "liver-ct-segmentation-package==1.6.0"
