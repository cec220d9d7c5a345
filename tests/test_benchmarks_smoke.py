"""The benchmark scripts still run end to end (tiny sizes, one repeat; nothing is timed or asserted on speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bench_core(tmp_path):
    pytest.importorskip("rankseg")
    out = run("bench_core.py", "--shape", "2,3,32,32", "--repeat", "1", "--json", str(tmp_path / "rows.json"))
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert {row["method"] for row in rows} == {"argmax", "rankseg_plugins", "rankseg 0.0.8", "rankseg 0.0.8 screening"}
    assert all(row["seconds"] > 0 and row["seconds_loaded"] > 0 and row["peak_extra_bytes"] >= 0 for row in rows)
    assert "rankseg_plugins" in out


def test_bench_exact():
    assert "32x32" in run("bench_exact.py", "--sizes", "32x32", "--repeat", "1")


def test_rma_gap(tmp_path):
    probs = tmp_path / "probs.npy"
    rng = np.random.default_rng(0)
    np.save(probs, 1 / (1 + np.exp(-4 * rng.standard_normal((2, 1, 24, 24)))))
    assert run("rma_gap.py", "--probs", str(probs), "--metrics", "dice")
