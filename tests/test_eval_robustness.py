"""rankseg-eval bad inputs: each is reported per case with its root cause, the others still run, inputs are never
written to."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("nibabel")

from eval_fixtures import SHAPE, tree_digest, write_layout, write_probs

from rankseg_eval.cases import CaseError, error_message
from rankseg_eval.cli import main


def test_bad_cases_are_skipped_with_reasons(tmp_path, capsys):
    data, probs, out = tmp_path / "data", tmp_path / "probs", tmp_path / "out"
    ids = write_layout(data, "kits19", n=6)
    write_probs(probs, data, "kits19", ids)
    (data / ids[0] / "segmentation.nii.gz").unlink()  # missing label
    np.save(probs / f"{ids[1]}.npy", np.full((3, *SHAPE[:2], SHAPE[2] - 1), 1 / 3, np.float32))  # shape mismatch
    (data / ids[2] / "segmentation.nii.gz").write_bytes(b"not a nifti file")  # unreadable
    logits = np.load(probs / f"{ids[3]}.npy")
    np.save(probs / f"{ids[3]}.npy", np.log(logits) * 3)  # logits, not probabilities
    (probs / f"{ids[4]}.npy").unlink()  # no probability map
    before = {"data": tree_digest(data), "probs": tree_digest(probs)}

    assert main(["--data", str(data), "--layout", "kits19", "--probs", str(probs), "--out", str(out)]) == 0

    assert {"data": tree_digest(data), "probs": tree_digest(probs)} == before
    report = json.loads((out / "report.json").read_text())
    assert [c["case_id"] for c in report["cases"]] == [ids[5]]
    reasons = {s["case_id"]: s["reason"] for s in report["skipped"]}
    assert list(reasons) == ids[:5]
    assert reasons[ids[0]] == f"no label file {data / ids[0] / 'segmentation.nii.gz'}"
    assert "shape mismatch" in reasons[ids[1]] and "(3, 16, 18, 19)" in reasons[ids[1]]
    assert "cannot read" in reasons[ids[2]] and "not a gzip file" in reasons[ids[2]]
    assert "RankSEG rejected the probabilities" in reasons[ids[3]] and "[0, 1]" in reasons[ids[3]]
    assert "no probability map" in reasons[ids[4]]
    printed = capsys.readouterr().out
    assert "skipped: 5" in printed and f"skipped {ids[0]}: no label file" in printed
    md = (out / "report.md").read_text()
    assert "## Skipped cases (5)" in md and f"`{ids[3]}`: RankSEG rejected" in md


def test_label_values_beyond_channels(tmp_path):
    data, probs = tmp_path / "data", tmp_path / "probs"
    ids = write_layout(data, "kits23", n=1)
    write_probs(probs, data, "kits23", ids)
    np.save(probs / f"{ids[0]}.npy", np.load(probs / f"{ids[0]}.npy")[:3] / 1.0)
    argv = ["--data", str(data), "--layout", "kits23", "--probs", str(probs), "--decode", "classes"]
    assert main(argv + ["--out", str(tmp_path / "o")]) == 1
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert "label value 3 but the probabilities have only 3 channels" in report["skipped"][0]["reason"]


def wrapped(inner: BaseException) -> RuntimeError:
    """``inner`` wrapped twice, as MONAI's Compose wraps a transform's error."""
    try:
        try:
            raise inner
        except Exception as err:
            raise RuntimeError("applying transform <monai.transforms.io.dictionary.LoadImaged object at 0x7f>") from err
    except RuntimeError as err:
        return err


def test_error_message_keeps_the_root_cause():
    message = error_message(wrapped(KeyError("label")))
    assert message == ("RuntimeError: applying transform monai.transforms.io.dictionary.LoadImaged "
                       "(cause: KeyError: 'label')")
    try:
        raise CaseError("cannot read or preprocess x.nii.gz") from wrapped(OSError("disk\nfull"))
    except CaseError as err:
        assert error_message(err) == "cannot read or preprocess x.nii.gz (cause: OSError: disk)"
    assert error_message(CaseError("no label file")) == "no label file"
    assert len(error_message(ValueError("x" * 1000))) < 320
