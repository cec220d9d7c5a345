"""`rankseg-eval` under torchrun: 2 CPU processes (gloo) write the same report as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("nibabel")

from eval_fixtures import write_layout, write_probs

from rankseg_eval.cli import main


def without_timings(report: dict) -> dict:
    """The report minus wall-clock fields and the output folder (the only ones allowed to differ between runs)."""
    report = dict(report)
    report.pop("timing")
    report["config"]["arguments"].pop("out")
    report["cases"] = [{k: v for k, v in c.items() if k != "decode_seconds"} for c in report["cases"]]
    return report


def test_torchrun_two_processes_match_single_process(tmp_path):
    data, probs = tmp_path / "data", tmp_path / "probs"
    ids = write_layout(data, "lits", n=5)
    write_probs(probs, data, "lits", ids, "nii.gz")
    np.save(probs / f"{ids[2]}.npy", np.zeros(3))  # a shape mismatch, on rank 0
    (probs / f"{ids[2]}.nii.gz").unlink()
    argv = ["--data", str(data), "--layout", "lits", "--probs", str(probs), "--no-progress"]

    assert main(argv + ["--out", str(tmp_path / "single")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "rankseg_eval", *argv, "--out", str(tmp_path / "dist")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("cases scored: 4, skipped: 1") == 1  # only rank 0 reports

    single = json.loads((tmp_path / "single" / "report.json").read_text())
    dist = json.loads((tmp_path / "dist" / "report.json").read_text())
    assert [c["case_id"] for c in dist["cases"]] == [i for i in ids if i != ids[2]]
    assert without_timings(dist) == without_timings(single)
    assert (tmp_path / "dist" / "cases.csv").read_text().count("\n") == 1 + 4 * 2
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == ["cases.csv", "figure.png", "report.json",
                                                                    "report.md"]
