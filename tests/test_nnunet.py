"""rankseg-nnunet on folders written by nnU-Net's own export code (tests/nnunet_fixtures.py).

The proof that we read and write nnU-Net's formats as nnU-Net does: ``--decoder argmax`` gives nnU-Net's own
segmentation files byte for byte (label- and region-based, ensembles included), with identical geometry. RankSEG's
output equals the core's decoding of the same probabilities, ``-pp`` equals nnU-Net's postprocessing run on our
output, and ``--labels`` writes rankseg-eval's report with nnU-Net's own summary numbers beside it.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")  # a safety net: CI installs the [nnunet] extra
import SimpleITK as sitk  # noqa: E402
from nnunet_fixtures import CASE_IDS, DATASETS, build_dataset, write_postprocessing  # noqa: E402
from nnunetv2.ensembling.ensemble import merge_files  # noqa: E402
from nnunetv2.evaluation.evaluate_predictions import compute_metrics  # noqa: E402
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO  # noqa: E402
from nnunetv2.postprocessing.remove_connected_components import load_postprocess_save  # noqa: E402

from nnunet_ext import Decoder, UnsafePickleError, find_predictions, load_pickle, load_postprocessing  # noqa: E402
from nnunet_ext.cli import main  # noqa: E402
from rankseg_plugins import Plan, RankSEG  # noqa: E402

ENDING = ".nii.gz"
KITS23 = [[1, 2, 3], [2, 3], [2]]


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both datasets (two models each) and a postprocessing.pkl per dataset; never modified by the tests."""
    root = tmp_path_factory.mktemp("nnunet")
    for key in DATASETS:
        build_dataset(root, key)
        write_postprocessing(root / key / "postprocessing.pkl", key)
    return root


def run(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def seg(path: Path) -> np.ndarray:
    return SimpleITKIO().read_seg(str(path))[0][0]


def geometry(path: Path) -> tuple:
    image = sitk.ReadImage(str(path))
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection(), image.GetPixelIDTypeAsString()


def probabilities(*folders: Path, case: str) -> torch.Tensor:
    """nnU-Net's average: float32, summed in folder order, divided by n."""
    arrays = [np.load(folder / f"{case}.npz")["probabilities"] for folder in folders]
    total = arrays[0].astype(np.float32)
    for a in arrays[1:]:
        total += a
    return torch.from_numpy(total / np.float32(len(arrays)))


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


# --- nnU-Net's own decoding, voxel for voxel -------------------------------------------------------------------


@pytest.mark.parametrize("key", list(DATASETS))
def test_argmax_reproduces_nnunet_files_byte_for_byte(fx, tmp_path, capsys, key):
    pred, out = fx / key / "pred_0", tmp_path / "out"
    before = snapshot(pred)
    code, stdout, _ = run(capsys, "-i", pred, "-o", out, "--decoder", "argmax", "-np", "1")
    assert code == 0, stdout
    for case in CASE_IDS:
        ours, theirs = out / f"{case}{ENDING}", pred / f"{case}{ENDING}"
        np.testing.assert_array_equal(seg(ours), seg(theirs))
        assert geometry(ours) == geometry(theirs)
        assert ours.read_bytes() == theirs.read_bytes()
    for name in ("dataset.json", "plans.json"):
        assert (out / name).read_bytes() == (pred / name).read_bytes()
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{c}{ENDING}" for c in CASE_IDS] +
                                                           ["dataset.json", "plans.json"])
    assert snapshot(pred) == before  # inputs are never written to


def test_nibabel_reader_writer(tmp_path, capsys):
    """Datasets whose plans name NibabelIO: properties with affine arrays, files written by nibabel."""
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIO

    pred = build_dataset(tmp_path, "regions", n_models=1, reader="NibabelIO") / "pred_0"
    assert "nibabel_stuff" in load_pickle(pred / "case_001.pkl")
    for decoder in ("argmax", "rankseg"):
        assert run(capsys, "-i", pred, "-o", tmp_path / decoder, "--decoder", decoder)[0] == 0
    core = RankSEG(regions=KITS23, output_mode="multilabel")
    for case in CASE_IDS:
        ours, theirs = tmp_path / "argmax" / f"{case}{ENDING}", pred / f"{case}{ENDING}"
        assert ours.read_bytes() == theirs.read_bytes()
        expected = core(probabilities(pred, case=case)[None])[0].numpy()
        np.testing.assert_array_equal(NibabelIO().read_seg(str(tmp_path / "rankseg" / f"{case}{ENDING}"))[0][0],
                                      expected)


@pytest.mark.parametrize("key", list(DATASETS))
def test_metric_acc_is_nnunets_decoding(fx, tmp_path, capsys, key):
    """RankSEG's 'acc' objective is argmax / p > 0.5: with regions painted as nnU-Net paints, its files."""
    pred, out = fx / key / "pred_0", tmp_path / "out"
    assert run(capsys, "-i", pred, "-o", out, "--metric", "acc")[0] == 0
    for case in CASE_IDS:
        assert (out / f"{case}{ENDING}").read_bytes() == (pred / f"{case}{ENDING}").read_bytes()


# --- RankSEG ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key, options", [("labels", []), ("labels", ["--metric", "iou", "--solver", "exact"]),
                                          ("regions", []), ("regions", ["--ignore-empty"])])
def test_rankseg_equals_the_core_with_nnunets_geometry(fx, tmp_path, capsys, key, options):
    pred, out = fx / key / "pred_0", tmp_path / "out"
    code, stdout, _ = run(capsys, "-i", pred, "-o", out, "-np", "2", *options)
    assert code == 0 and "wrote 3 of 3 segmentations" in stdout
    kwargs = {"metric": "iou", "solver": "exact"} if "--metric" in options else {}
    kwargs |= {"ignore_empty": True} if "--ignore-empty" in options else {}
    core = RankSEG(regions=KITS23, output_mode="multilabel", **kwargs) if key == "regions" else RankSEG(**kwargs)
    changed = 0
    for case in CASE_IDS:
        ours, theirs = out / f"{case}{ENDING}", pred / f"{case}{ENDING}"
        expected = core(probabilities(pred, case=case)[None])[0].numpy()
        np.testing.assert_array_equal(seg(ours), expected)
        assert geometry(ours) == geometry(theirs)
        changed += int((seg(ours) != seg(theirs)).sum())
    assert changed  # RankSEG did decide differently from argmax somewhere
    size, spacing, _, direction, _ = geometry(out / f"case_001{ENDING}")  # anisotropic, rotated, z flipped
    assert size == (32, 32, 20) and spacing[2] == 2.5 and direction[-1] == -1.0 and direction[0] < 1.0


def test_regions_for_a_label_based_dataset(fx, tmp_path, capsys):
    pred, out = fx / "labels" / "pred_0", tmp_path / "out"
    assert run(capsys, "-i", pred, "-o", out, "--regions", "[[1, 2], [2]]")[0] == 0
    core = RankSEG(regions=[[1, 2], [2]])
    for case in CASE_IDS:
        np.testing.assert_array_equal(seg(out / f"{case}{ENDING}"), core(probabilities(pred, case=case)[None])[0])


def test_regions_class_order_unlike_the_nesting_is_painted_as_nnunet_paints(fx):
    """A region list whose painted labels are not its own: RankSEG's masks painted by nnU-Net's rule."""
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    lm = LabelManager({"background": 0, "a": [1, 2], "b": [2, 3]}, [3, 1])  # overlapping, not nested
    probs = probabilities(fx / "regions" / "pred_0", case="case_000")[:2].numpy()
    masks = RankSEG(output_mode="multilabel")(torch.from_numpy(probs)[None])[0].numpy()
    expected = np.zeros(probs.shape[1:], np.uint16)
    expected[masks[0]] = 3
    expected[masks[1]] = 1
    np.testing.assert_array_equal(Decoder(lm)(probs), expected)
    np.testing.assert_array_equal(Decoder(lm, "argmax")(probs), lm.convert_probabilities_to_segmentation(probs))


# --- ensembles and postprocessing ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(DATASETS))
def test_ensemble_averages_as_nnunet_does(fx, tmp_path, capsys, key):
    folders = [fx / key / "pred_0", fx / key / "pred_1"]
    assert run(capsys, "-i", *folders, "-o", tmp_path / "argmax", "--decoder", "argmax")[0] == 0
    assert run(capsys, "-i", *folders, "-o", tmp_path / "rankseg")[0] == 0
    predictions = find_predictions(folders)
    nnunet = tmp_path / "nnunet"
    nnunet.mkdir()
    lm = predictions.dataset.label_manager
    core = RankSEG(regions=KITS23, output_mode="multilabel") if lm.has_regions else RankSEG()
    for case in CASE_IDS:
        merge_files([str(f / f"{case}.npz") for f in folders], str(nnunet / case), ENDING, SimpleITKIO(), lm)
        assert (tmp_path / "argmax" / f"{case}{ENDING}").read_bytes() == (nnunet / f"{case}{ENDING}").read_bytes()
        probs, _ = predictions.load(case)
        np.testing.assert_array_equal(probs, probabilities(*folders, case=case).numpy())
        expected = core(torch.from_numpy(probs)[None])[0]
        np.testing.assert_array_equal(seg(tmp_path / "rankseg" / f"{case}{ENDING}"), expected)
    assert (tmp_path / "rankseg" / "plans.json").is_file()  # unlike nnUNetv2_ensemble's output


def test_postprocessing_equals_nnunets_on_our_output(fx, tmp_path, capsys):
    changed = 0
    for key in DATASETS:
        pred, pp = fx / key / "pred_0", fx / key / "postprocessing.pkl"
        plain, post, theirs = tmp_path / key / "plain", tmp_path / key / "pp", tmp_path / key / "nnunet"
        assert run(capsys, "-i", pred, "-o", plain)[0] == 0
        assert run(capsys, "-i", pred, "-o", post, "-pp", pp)[0] == 0
        theirs.mkdir()
        fns, kwargs = load_postprocessing(pp)
        for case in CASE_IDS:
            name = f"{case}{ENDING}"
            load_postprocess_save(str(plain / name), str(theirs / name), SimpleITKIO(), fns, kwargs)
            np.testing.assert_array_equal(seg(post / name), seg(theirs / name))
            assert geometry(post / name) == geometry(theirs / name)
            changed += int((seg(post / name) != seg(plain / name)).sum())
    assert changed  # the postprocessing removed something


# --- the report ------------------------------------------------------------------------------------------------


def nnunet_means(reference: Path, folder: Path, keys: list) -> dict[str, float]:
    """nanmean over cases of nnU-Net's own compute_metrics: what summary.json's 'mean' holds."""
    per_case = [compute_metrics(str(reference / f"{c}{ENDING}"), str(folder / f"{c}{ENDING}"), SimpleITKIO(), keys)
                for c in CASE_IDS]
    return {str(k): float(np.nanmean([r["metrics"][k]["Dice"] for r in per_case])) for k in keys}


@pytest.mark.parametrize("key", list(DATASETS))
def test_labels_report_with_nnunets_own_numbers(fx, tmp_path, capsys, key):
    pred, labels, out = fx / key / "pred_0", fx / key / "raw" / "labelsTr", tmp_path / "out"
    code, stdout, _ = run(capsys, "-i", pred, "-o", out, "--labels", labels, "-np", "2")
    assert code == 0, stdout
    assert "nnU-Net's convention" in stdout and "cases scored: 3, skipped: 0" in stdout
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["tool"] == "rankseg-nnunet"
    assert "both empty scores 1" in report["averaging"]
    assert {p.name for p in (out / "report").iterdir()} == {"report.json", "cases.csv", "report.md", "figure.png"}
    assert "## In nnU-Net's convention" in (out / "report" / "report.md").read_text()
    lm = find_predictions([pred]).dataset.label_manager
    keys = lm.foreground_regions if lm.has_regions else lm.foreground_labels
    summary = report["nnunet_convention"]
    baseline = report["baseline"]
    for method, folder in ((baseline, pred), ("rankseg_dice", out)):
        ours = {k: v["Dice"] for k, v in summary["mean"][method].items()}
        assert ours == pytest.approx(nnunet_means(labels, folder, keys), abs=1e-12)
    # case_002 has no tumour: nnU-Net leaves it out when nothing is predicted, rankseg-eval scores it 1
    assert summary["mean"][baseline]["2"]["n"] == 2
    assert report["cases"][2]["scores"][baseline]["tumor"]["dice"] == 1.0
    # the written files are those of a run without --labels
    assert run(capsys, "-i", pred, "-o", tmp_path / "plain")[0] == 0
    for case in CASE_IDS:
        assert (out / f"{case}{ENDING}").read_bytes() == (tmp_path / "plain" / f"{case}{ENDING}").read_bytes()


def test_labels_report_with_ignore_empty_says_so(fx, tmp_path, capsys):
    pred, labels = fx / "regions" / "pred_0", fx / "regions" / "raw" / "labelsTr"
    assert run(capsys, "-i", pred, "-o", tmp_path / "out", "--labels", labels, "--ignore-empty")[0] == 0
    report = json.loads((tmp_path / "out" / "report" / "report.json").read_text())
    assert "is empty is not scored" in report["averaging"]
    assert report["cases"][2]["scores"]["threshold"]["tumor"]["dice"] is None


# --- plans: --fit-plan on validation cases, --plan to decode ----------------------------------------------------


def write_plan(path: Path, key: str, decisions: list[dict], **options: object) -> Path:
    """A plan for ``key``'s three channels: softmax labels, or the regions' sigmoid channels."""
    if key == "regions":
        options |= {"output_mode": "multilabel", "regions": KITS23}
    targets = ["kidney", "masses", "tumor"] if key == "regions" else ["background", "liver", "tumor"]
    path.write_text(json.dumps({"format": "rankseg-plan", "version": 1, "options": options, "channels": 3,
                                "targets": targets, "decisions": decisions}))
    return path


MIXED = [{"decoder": "rankseg"}, {"decoder": "rankseg", "temperature": 0.7, "bias": 0.3},
         {"decoder": "threshold", "threshold": 0.3}]


@pytest.mark.parametrize("key", list(DATASETS))
def test_plan_argmax_everywhere_is_nnunets_files_and_rankseg_everywhere_is_the_default(fx, tmp_path, capsys, key):
    pred = fx / key / "pred_0"
    argmax = write_plan(tmp_path / "argmax.json", key, [{"decoder": "argmax"}] * 3)
    default = write_plan(tmp_path / "default.json", key, [{"decoder": "rankseg"}] * 3)
    for plan in (argmax, default):
        assert run(capsys, "-i", pred, "-o", tmp_path / plan.stem, "--plan", plan)[0] == 0
    assert run(capsys, "-i", pred, "-o", tmp_path / "rankseg")[0] == 0
    for case in CASE_IDS:
        name = f"{case}{ENDING}"
        assert (tmp_path / "argmax" / name).read_bytes() == (pred / name).read_bytes()
        assert (tmp_path / "default" / name).read_bytes() == (tmp_path / "rankseg" / name).read_bytes()


@pytest.mark.parametrize("key", list(DATASETS))
def test_plan_decodes_as_the_core_with_labels_report(fx, tmp_path, capsys, key):
    pred, labels, out = fx / key / "pred_0", fx / key / "raw" / "labelsTr", tmp_path / "out"
    plan = write_plan(tmp_path / "plan.json", key, MIXED, metric="iou")
    code, stdout, _ = run(capsys, "-i", pred, "-o", out, "--plan", plan, "--labels", labels)
    assert code == 0 and "(plan: " in stdout, stdout
    core = RankSEG.from_plan(plan)
    for case in CASE_IDS:
        np.testing.assert_array_equal(seg(out / f"{case}{ENDING}"), core(probabilities(pred, case=case)[None])[0])
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["methods"] == [report["baseline"], "plan"] and report["decoding"]["plan"]["decisions"] == MIXED
    assert set(report["nnunet_convention"]["mean"]) == {report["baseline"], "plan"}


@pytest.mark.parametrize("key", list(DATASETS))
def test_fit_plan_then_decode_with_it(fx, tmp_path, capsys, key):
    pred, labels = fx / key / "pred_0", fx / key / "raw" / "labelsTr"
    fit = tmp_path / "fit"
    code, stdout, _ = run(capsys, "-i", pred, "-o", fit, "--labels", labels, "--fit-plan", fit / "plan.json",
                          "--folds", "3")
    assert code == 0 and "wrote the plan to" in stdout, stdout
    plan = Plan.load(fit / "plan.json")
    assert plan.evidence["cases"] == 3 and plan.evidence["folds"] == 3
    assert plan.options.output_mode == ("multilabel" if key == "regions" else "multiclass")
    report = json.loads((fit / "report" / "report.json").read_text())
    assert set(report["plan_fit"]["targets"]) == set(plan.targets) - {"background"}
    assert (fit / "report" / "reliability.png").is_file()
    # the plan decodes another model's predictions
    assert run(capsys, "-i", fx / key / "pred_1", "-o", tmp_path / "test", "--plan", fit / "plan.json")[0] == 0
    core = RankSEG.from_plan(plan)
    for case in CASE_IDS:
        expected = core(probabilities(fx / key / "pred_1", case=case)[None])[0]
        np.testing.assert_array_equal(seg(tmp_path / "test" / f"{case}{ENDING}"), expected)


# --- bad input: exit 2, one line, nothing written --------------------------------------------------------------


def _copy(fx: Path, tmp: Path, key: str = "labels") -> Path:
    pred = tmp / "pred"
    shutil.copytree(fx / key / "pred_0", pred)
    shutil.copytree(fx / key / "raw" / "labelsTr", tmp / "labelsTr")
    return pred


def _missing_pkl(pred: Path) -> list:
    (pred / "case_001.pkl").unlink()
    return []


def _npz_without_probabilities(pred: Path) -> list:
    np.savez_compressed(pred / "case_001.npz", logits=np.zeros((3, 4, 4, 4), np.float32))
    return []


def _channel_mismatch(pred: Path) -> list:
    np.savez_compressed(pred / "case_001.npz", probabilities=np.full((4, 32, 32, 32), 0.25, np.float32))
    return []


def _output_inside_input(pred: Path) -> list:
    return ["-o", pred / "out"]


def _output_not_empty(pred: Path) -> list:
    (pred.parent / "out").mkdir()
    (pred.parent / "out" / "old.txt").write_text("x")
    return []


def _no_plans(pred: Path) -> list:
    (pred / "plans.json").unlink()
    return []


def _argmax_with_options(pred: Path) -> list:
    return ["--decoder", "argmax", "--solver", "exact"]


def _unsafe_postprocessing(pred: Path) -> list:
    (pred.parent / "postprocessing.pkl").write_bytes(pickle.dumps(Evil()))
    return ["-pp", pred.parent / "postprocessing.pkl"]


def _regions_beyond_the_labels(pred: Path) -> list:
    return ["--regions", "[[1, 3]]"]


def _labels_without_cases(pred: Path) -> list:
    (pred.parent / "labels").mkdir()
    return ["--labels", pred.parent / "labels"]


def _plan_with_options(pred: Path) -> list:
    return ["--plan", write_plan(pred.parent / "plan.json", "labels", MIXED), "--solver", "exact"]


def _plan_with_argmax(pred: Path) -> list:
    return ["--plan", write_plan(pred.parent / "plan.json", "labels", MIXED), "--decoder", "argmax"]


def _region_plan_for_labels(pred: Path) -> list:
    return ["--plan", write_plan(pred.parent / "plan.json", "regions", MIXED)]


def _nnunet_plans_as_plan(pred: Path) -> list:
    return ["--plan", pred / "plans.json"]


def _fit_plan_without_labels(pred: Path) -> list:
    return ["--fit-plan", pred.parent / "plan.json"]


def _fit_plan_with_postprocessing(pred: Path) -> list:
    write_postprocessing(pred.parent / "postprocessing.pkl", "labels")
    return ["--fit-plan", pred.parent / "plan.json", "--labels", pred.parent / "labelsTr",
            "-pp", pred.parent / "postprocessing.pkl"]


def _fit_plan_over_nnunets_plans(pred: Path) -> list:
    return ["--fit-plan", pred.parent / "out" / "plans.json", "--labels", pred.parent / "labelsTr"]


def _fit_plan_exists(pred: Path) -> list:
    (pred.parent / "plan.json").write_text("{}")
    return ["--fit-plan", pred.parent / "plan.json", "--labels", pred.parent / "labelsTr"]


class Evil:
    """A pickle that would run a shell command when loaded."""

    def __reduce__(self):
        return os.system, (f"touch {Path.cwd() / 'pwned'}",)


BAD = {
    "missing pkl": (_missing_pkl, "case_001.pkl"),
    "npz without probabilities": (_npz_without_probabilities, "holds no 'probabilities' array"),
    "channel mismatch": (_channel_mismatch, "has 4 channels, but"),
    "output inside input": (_output_inside_input, "is inside the input folder"),
    "output not empty": (_output_not_empty, "already holds files"),
    "no plans.json": (_no_plans, "pass --plans"),
    "argmax with options": (_argmax_with_options, "drop --solver"),
    "unsafe postprocessing.pkl": (_unsafe_postprocessing, "refused to load posix.system"),
    "regions beyond the labels": (_regions_beyond_the_labels, "regions name label 3, but the softmax input has only 3"),
    "labels without cases": (_labels_without_cases, "holds none of the 3 cases' label files"),
    "plan with options": (_plan_with_options, "--plan carries its own RankSEG options; drop --solver"),
    "plan with argmax": (_plan_with_argmax, "give one of them"),
    "region plan for labels": (_region_plan_for_labels, "fitted on sigmoid region channels, but this dataset is "
                                                        "label-based"),
    "nnU-Net's plans.json as plan": (_nnunet_plans_as_plan, "is not a RankSEG plan"),
    "fit-plan without labels": (_fit_plan_without_labels, "give their ground truth with --labels"),
    "fit-plan with -pp": (_fit_plan_with_postprocessing, "drop -pp here"),
    "fit-plan over plans.json": (_fit_plan_over_nnunets_plans, "rankseg-nnunet writes that file itself"),
    "fit-plan exists": (_fit_plan_exists, "exists; pass --overwrite"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_clear_line_and_writes_nothing(fx, tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    pred = _copy(fx, tmp_path)
    setup, expected = BAD[name]
    extra = setup(pred)
    args = ["-i", pred, *([] if "-o" in extra else ["-o", tmp_path / "out"]), *extra]
    before = snapshot(pred)
    code, stdout, stderr = run(capsys, *args)
    assert code == 2 and stdout == ""
    assert stderr.startswith("rankseg-nnunet: error: ") and stderr.count("\n") == 1 and expected in stderr, stderr
    assert snapshot(pred) == before
    out = tmp_path / "out"
    assert not out.exists() or [p.name for p in out.iterdir()] in ([], ["old.txt"])
    assert not (tmp_path / "pwned").exists()


def test_plans_option_for_a_folder_without_plans(fx, tmp_path, capsys):
    pred = _copy(fx, tmp_path)
    (pred / "plans.json").unlink()
    plans = fx / "labels" / "raw" / "plans.json"
    assert run(capsys, "-i", pred, "-o", tmp_path / "out", "--plans", plans)[0] == 0
    assert (tmp_path / "out" / "plans.json").read_bytes() == plans.read_bytes()


def test_argument_errors_exit_2_from_the_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "nnunet_ext", "-i", str(tmp_path), "-o", str(tmp_path / "o"),
                           "--regions", "1, 2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--regions" in done.stderr, done.stderr


def test_region_dataset_refuses_regions_option(fx, tmp_path, capsys):
    code, _, stderr = run(capsys, "-i", fx / "regions" / "pred_0", "-o", tmp_path / "out", "--regions", "[[1, 2]]")
    assert code == 2 and "only for label-based datasets" in stderr


# --- a broken case: its own error, no half-written file, the others written ------------------------------------


def _nan_probabilities(pred: Path) -> str:
    probs = np.load(pred / "case_001.npz")["probabilities"]
    probs[0, 5, 5, 5] = np.nan
    np.savez_compressed(pred / "case_001.npz", probabilities=probs)
    return "NaN"


def _malicious_properties(pred: Path) -> str:
    (pred / "case_001.pkl").write_bytes(pickle.dumps(Evil()))
    return "refused to load posix.system"


def _failing_writer(pred: Path) -> str:
    props = load_pickle(pred / "case_001.pkl")
    props["sitk_stuff"]["direction"] = (1.0, 0.0)  # SimpleITK's writer refuses it
    (pred / "case_001.pkl").write_bytes(pickle.dumps(props))
    return "case_001"


@pytest.mark.parametrize("setup", [_nan_probabilities, _malicious_properties, _failing_writer])
def test_a_broken_case_fails_alone(fx, tmp_path, capsys, monkeypatch, setup):
    monkeypatch.chdir(tmp_path)
    pred = _copy(fx, tmp_path)
    expected = setup(pred)
    out = tmp_path / "out"
    code, stdout, stderr = run(capsys, "-i", pred, "-o", out, "--labels", fx / "labels" / "raw" / "labelsTr")
    assert code == 1
    assert "rankseg-nnunet: case_001 not written: " in stderr and expected in stderr, stderr
    assert "wrote 2 of 3 segmentations" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["case_000.nii.gz", "case_002.nii.gz", "dataset.json",
                                                     "plans.json", "report"]
    skipped = json.loads((out / "report" / "report.json").read_text())["skipped"]
    assert [s["case_id"] for s in skipped] == (["case_001"] if setup is not _failing_writer else [])
    assert not (tmp_path / "pwned").exists()


# --- the restricted unpickler ----------------------------------------------------------------------------------


def test_restricted_unpickler_reads_nnunets_files(fx):
    for key in DATASETS:
        for case in CASE_IDS:
            path = fx / key / "pred_0" / f"{case}.pkl"
            with open(path, "rb") as f:
                assert repr(load_pickle(path)) == repr(pickle.load(f))
        fns, kwargs = load_postprocessing(fx / key / "postprocessing.pkl")
        assert [f.__name__ for f in fns] == ["remove_all_but_largest_component_from_segmentation"] * 2


def test_restricted_unpickler_reads_numpy1_names_and_arrays(tmp_path):
    value = {"spacing": [np.float64(2.5)], "affine": np.eye(4), "seen": {1, 2}}
    text = pickle.dumps(value, protocol=0).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray" in text
    (tmp_path / "old.pkl").write_bytes(text)
    loaded = load_pickle(tmp_path / "old.pkl")
    assert loaded["spacing"] == [2.5] and np.array_equal(loaded["affine"], np.eye(4)) and loaded["seen"] == {1, 2}
    (tmp_path / "p5.pkl").write_bytes(pickle.dumps(value, protocol=5))
    assert np.array_equal(load_pickle(tmp_path / "p5.pkl")["affine"], np.eye(4))


def test_restricted_unpickler_refuses_code(tmp_path, monkeypatch):
    from nnunetv2.postprocessing.remove_connected_components import apply_postprocessing_to_folder

    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl: refused to load posix\.system, because unpickling it "
                                                r"could run code"):
        load_pickle(tmp_path / "evil.pkl", postprocessing=True)
    assert not (tmp_path / "pwned").exists()
    # nnU-Net's functions that write files are refused too, and its postprocessing function outside postprocessing
    (tmp_path / "writer.pkl").write_bytes(pickle.dumps(([apply_postprocessing_to_folder], [{}])))
    with pytest.raises(UnsafePickleError, match="apply_postprocessing_to_folder"):
        load_postprocessing(tmp_path / "writer.pkl")
    write_postprocessing(tmp_path / "pp.pkl", "labels")
    with pytest.raises(UnsafePickleError, match="remove_all_but_largest"):
        load_pickle(tmp_path / "pp.pkl")  # a properties file holds no function


def test_decoder_options_follow_the_dataset(fx):
    lm = find_predictions([fx / "regions" / "pred_0"]).dataset.label_manager
    with pytest.raises(ValueError, match="takes no RankSEG options"):
        Decoder(lm, "argmax", metric="iou")
    with pytest.raises(ValueError, match="output_mode follows the dataset"):
        Decoder(lm, output_mode="multiclass")
    assert Decoder(lm, metric="iou").options.output_mode == "multilabel"
