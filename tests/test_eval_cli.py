"""rankseg-eval's command line: generated RankSEG options, help, one-line usage errors, output folder checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("nibabel")

from eval_fixtures import tree_digest, write_layout, write_network, write_probs

import rankseg_eval.cli as cli
from rankseg_plugins.options import option_specs
from rankseg_eval.decoding import SET_BY_EVALUATION


def usage_error(argv: list[str], capsys) -> str:
    """Run ``rankseg-eval argv``; check it stops with status 2 and one line on stderr; return that line."""
    try:
        status = cli.main(argv)
    except SystemExit as stop:  # argparse's own checks
        status = stop.code
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rankseg-eval: error: "), err
    return err


@pytest.fixture
def no_inference(monkeypatch):
    """Fail the test if any case is evaluated."""
    monkeypatch.setattr(cli, "evaluate", lambda *a, **k: pytest.fail("evaluated cases before refusing the command"))


def test_rankseg_options_come_from_the_option_specs():
    actions = {a.dest: a for a in cli.build_parser()._actions}
    offered = [name for name in option_specs() if name not in SET_BY_EVALUATION]
    assert offered == ["solver", "smooth", "pruning_prob", "ignore_empty", "unassigned", "void_index"]
    for name in offered:
        spec, action = option_specs()[name], actions[name]
        assert (action.default, action.help) == (spec.default, spec.help)
        assert action.choices == spec.choices or (action.choices is None and spec.choices is None)
    args = cli.build_parser().parse_args(["--solver", "exact", "--pruning-prob", "0.3", "--ignore-empty"])
    assert cli.rankseg_options(args) == {
        "solver": "exact", "smooth": 0.0, "pruning_prob": 0.3, "ignore_empty": True, "unassigned": "max_score",
        "void_index": 255}


def test_help_shows_every_option_with_help_and_defaults(capsys):
    parser = cli.build_parser()
    assert all(a.help for a in parser._actions if a.option_strings)
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("--overlap OVERLAP overlap of neighbouring windows, in [0, 1) (default: 0.25)", "(default: rma)",
                  "(default: out/rankseg-eval)", "kits23: kidney {1,2,3} ⊃ masses {2,3} ⊃ tumour {2}"):
        assert shown in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "{d}"], "--data and --layout go together"),
        (["--layout", "lits", "--checkpoint", "{d}/x.pt"], "--layout, --checkpoint needs --data DIR or --probs DIR"),
        (["--data", "{d}", "--layout", "msd"], "needs a network"),
        (["--labels", "{d}"], "--labels is used with --probs"),
        (["--probs", "{d}"], "--probs needs its labels"),
        (["--data", "{d}/nope", "--layout", "lits", "--probs", "{d}"], "not a directory"),
        (["--probs", "{d}", "--labels", "{d}", "--decode", "regions"], "--decode regions decodes a layout's"),
        (["--probs", "{d}", "--labels", "{d}", "--activation", "sigmoid"], "sigmoid probabilities hold one channel"),
        (["--data", "{d}", "--layout", "msd", "--probs", "{d}", "--activation", "sigmoid", "--decode", "classes"],
         "are decoded by region"),
        (["--data", "{d}", "--layout", "msd", "--probs", "{d}", "--smooth", "-1"], "smooth must be a finite number"),
        (["--device", "tpu:x"], "not a torch device"),
        (["--overlap", "1.5"], "--overlap: must be in [0, 1)"),
        (["--roi-size", "0", "8"], "must be a positive integer"),
        (["--layout", "brats"], "invalid choice: 'brats'"),
        (["--data", "{d}", "--layout", "msd", "--checkpoint", "{d}/x.pt"], "--checkpoint {d}/x.pt not found"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, capsys, no_inference, argv, message):
    write_layout(tmp_path, "msd", n=1)
    argv = [a.format(d=tmp_path) for a in argv]
    assert message.format(d=tmp_path) in usage_error(argv + ["--out", str(tmp_path.parent / "out_usage")], capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda(tmp_path, capsys, no_inference):
    assert "CUDA is not available here" in usage_error(["--device", "cuda", "--out", str(tmp_path / "o")], capsys)


def test_roi_size_must_match_the_images(tmp_path, capsys, no_inference):
    write_layout(tmp_path / "data", "lits", n=1)
    weights, config = write_network(tmp_path / "net")
    argv = ["--data", str(tmp_path / "data"), "--layout", "lits", "--checkpoint", str(weights),
            "--network-config", str(config), "--roi-size", "64", "64", "--out", str(tmp_path / "o")]
    assert "--roi-size has 2 value(s) but the images are 3D" in usage_error(argv, capsys)


@pytest.fixture
def probs_run(tmp_path):
    """Arguments of a small --probs run, and the output folder they name."""
    data, probs = tmp_path / "data", tmp_path / "probs"
    write_probs(probs, data, "lits", write_layout(data, "lits", n=2))
    return ["--data", str(data), "--layout", "lits", "--probs", str(probs), "--no-progress"], tmp_path / "out"


def test_out_inside_an_input_is_refused(tmp_path, capsys, no_inference, probs_run):
    argv, _ = probs_run
    before = tree_digest(tmp_path / "data")
    assert "inside --data" in usage_error(argv + ["--out", str(tmp_path / "data" / "rep")], capsys)
    assert tree_digest(tmp_path / "data") == before


def test_out_that_is_a_file_is_refused_before_inference(tmp_path, capsys, no_inference, probs_run):
    argv, out = probs_run
    out.write_text("not a folder")
    assert f"--out {out} is a file" in usage_error(argv + ["--out", str(out)], capsys)


def test_unwritable_out_is_refused_before_inference(tmp_path, capsys, no_inference, probs_run):
    argv, _ = probs_run
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    out = locked / "out"
    if os.access(locked, os.W_OK):  # root writes anywhere: use a folder the kernel refuses
        out = Path("/sys/rankseg-eval-test")
        if out.parent.is_dir() and os.access(out.parent, os.W_OK):
            try:
                out.mkdir()
            except OSError:
                pass
            else:
                out.rmdir()
                pytest.skip("no unwritable folder on this machine")
    assert f"--out {out} is not a writable folder" in usage_error(argv + ["--out", str(out)], capsys)


def test_a_run_never_mixes_with_an_earlier_one(capsys, probs_run):
    argv, out = probs_run
    out.mkdir()
    (out / "figure.png").write_bytes(b"an earlier run's figure")
    (out / "notes.txt").write_text("mine")
    assert "already holds files (figure.png, notes.txt); pass --overwrite" in usage_error(
        argv + ["--out", str(out)], capsys)
    assert cli.main(argv + ["--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cases.csv", "figure.png", "notes.txt", "report.json",
                                                     "report.md"]
    assert (out / "figure.png").read_bytes()[:4] == b"\x89PNG" and (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "report.json").read_text())["config"]["arguments"]["overwrite"] is True

