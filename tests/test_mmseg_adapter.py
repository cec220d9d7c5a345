"""mmseg adapter: ``model.test_cfg.decoder='rankseg'`` through mmseg's own entry points, on CPU.

A tiny generated dataset and a tiny UNet/FCN trained for two iterations (so the checkpoint is a real
mmengine one) go through ``Runner.test()``, ``tools/test.py --tta``, ``init_model`` +
``inference_model`` and a two-process ``torchrun``; every RankSEG prediction is checked against the core
applied to the probabilities mmseg stored.
"""

import contextlib
import copy
import itertools
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

mmseg = pytest.importorskip("mmseg")

import mmseg_ext  # noqa: E402,F401  (before mmseg's models: stands in for mmcv._ext under mmcv-lite)
from mmengine.config import Config  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.logging import HistoryBuffer  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from mmseg.apis import inference_model, init_model  # noqa: E402
from mmseg.models.segmentors import SegTTAModel  # noqa: E402
from mmseg.registry import MODELS  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402
from mmseg_ext import DECODERS, decoders  # noqa: E402
from mmseg_ext._compat import _MissingCompiledOps, install_mmcv_ext_stub  # noqa: E402
from mmseg_fixtures import make_config, to_tta, write_dataset  # noqa: E402
from PIL import Image  # noqa: E402
from rankseg_plugins import rankseg  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOOLS_TEST = Path(mmseg.__file__).parent / ".mim" / "tools" / "test.py"  # shipped in mmseg's wheel
_runs = itertools.count()


class CollectPredictions(Hook):
    """Keeps every test output (one ``SegDataSample`` per image)."""

    def __init__(self) -> None:
        self.samples: list[SegDataSample] = []

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.samples.extend(outputs)


def run_test(cfg: dict) -> tuple[dict[str, float], dict[str, SegDataSample], str]:
    """``Runner.test()``: metrics, outputs by image name, and the run's log."""
    cfg = Config(copy.deepcopy(cfg))
    cfg.experiment_name = f"run{next(_runs)}"  # a fresh logger (and log file) per run
    runner = Runner.from_cfg(cfg)
    collector = CollectPredictions()
    runner.register_hook(collector)
    metrics = runner.test()
    log = (Path(runner.log_dir) / f"{runner.timestamp}.log").read_text()
    return metrics, {Path(s.img_path).stem: s for s in collector.samples}, log


def probs_of(seg_logits: torch.Tensor) -> torch.Tensor:
    """Probabilities from stored ``seg_logits``: logits for C > 1, sigmoid probabilities for C == 1."""
    seg_logits = seg_logits.float()
    return seg_logits.softmax(0) if seg_logits.shape[0] > 1 else seg_logits


def assert_core_labels(samples: dict[str, SegDataSample], **options) -> None:
    """``pred_sem_seg`` is the core applied to the stored original-size probabilities."""
    for sample in samples.values():
        probs = probs_of(sample.seg_logits.data)
        assert probs.shape[1:] == sample.ori_shape
        expected = rankseg(probs[None], **options)[0]
        assert torch.equal(sample.pred_sem_seg.data[0].long(), expected)


def write_config(cfg: dict, path: Path) -> Path:
    Config(cfg).dump(str(path))
    return path


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_dataset(root)
    return root


@pytest.fixture(scope="module")
def checkpoint(data_root, tmp_path_factory) -> Path:
    """A checkpoint saved by mmengine's CheckpointHook after two training iterations."""
    work_dir = tmp_path_factory.mktemp("train")
    cfg = Config(make_config(data_root, work_dir))
    cfg.experiment_name = "train"
    Runner.from_cfg(cfg).train()
    return work_dir / "iter_2.pth"


@pytest.fixture(scope="module")
def rankseg_cfg(data_root, checkpoint, tmp_path_factory) -> dict:
    cfg = make_config(data_root, tmp_path_factory.mktemp("work"), decoder="rankseg", load_from=checkpoint)
    cfg["model"]["test_cfg"]["rankseg"] = dict(metric="iou")
    return cfg


@pytest.fixture(scope="module")
def rankseg_run(rankseg_cfg):
    return run_test(rankseg_cfg)


@contextlib.contextmanager
def recording_tta_views():
    """Records the per-image lists of augmented views that ``SegTTAModel.merge_preds`` receives."""
    views: list[list[SegDataSample]] = []
    merge_preds = SegTTAModel.merge_preds

    def recording(self, data_samples_list):
        views.extend(data_samples_list)
        return merge_preds(self, data_samples_list)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SegTTAModel, "merge_preds", recording)
        yield views


@pytest.fixture(scope="module")
def tta_run(rankseg_cfg) -> tuple[dict[str, SegDataSample], list[list[SegDataSample]]]:
    """``--tta`` in process: merged outputs by image name, and the views that were merged."""
    with recording_tta_views() as views:
        _, merged, _ = run_test(to_tta(copy.deepcopy(rankseg_cfg)))
    return merged, views


def test_runner_rankseg_vs_argmax(data_root, checkpoint, rankseg_cfg, rankseg_run, tmp_path):
    argmax_metrics, argmax, _ = run_test(make_config(data_root, tmp_path, load_from=checkpoint))
    metrics, ranked, log = rankseg_run
    assert set(metrics) == set(argmax_metrics) >= {"mIoU", "mDice"}
    assert_core_labels(ranked, metric="iou")
    for name, sample in argmax.items():
        assert torch.equal(sample.seg_logits.data, ranked[name].seg_logits.data)  # left as mmseg stores it
        assert torch.equal(sample.pred_sem_seg.data[0], sample.seg_logits.data.argmax(0))
    assert any(not torch.equal(argmax[n].pred_sem_seg.data, ranked[n].pred_sem_seg.data) for n in argmax)
    assert log.count("mmseg_ext: test_cfg.decoder {'type': 'rankseg', 'metric': 'iou'} is active") == 1
    assert "RankSEG(metric='iou'" in log


def test_slide_inference(data_root, checkpoint, tmp_path):
    cfg = make_config(data_root, tmp_path, decoder="rankseg", slide=True, load_from=checkpoint)
    assert_core_labels(run_test(cfg)[1])


def test_cascade_encoder_decoder(data_root, tmp_path):
    cfg = make_config(data_root, tmp_path, decoder="rankseg", cascade=True)
    cfg["model"]["test_cfg"]["rankseg"] = dict(pruning_prob=0.3)
    assert_core_labels(run_test(cfg)[1], pruning_prob=0.3)


def test_one_channel_sigmoid_head(data_root, tmp_path):
    _, ranked, _ = run_test(make_config(data_root, tmp_path, binary=True, decoder="rankseg"))
    for sample in ranked.values():
        probs = sample.seg_logits.data
        assert probs.shape[0] == 1 and 0 <= probs.min() and probs.max() <= 1  # mmseg stores sigmoid(logits)
        assert sample.pred_sem_seg.data.dtype == probs.dtype  # like mmseg's one-channel prediction: float 0/1
    assert_core_labels(ranked)


def test_tta_merges_probabilities(tta_run):
    merged, views = tta_run
    assert len(views) == len(merged) and all(len(v) == 4 for v in views)  # 2 scales x 2 flips
    for image_views in views:
        probs = torch.stack([probs_of(v.seg_logits.data) for v in image_views]).mean(0)
        pred = merged[Path(image_views[0].img_path).stem].pred_sem_seg.data
        assert torch.equal(pred[0], rankseg(probs[None], metric="iou")[0])


def test_tta_one_channel_averages_stored_probabilities(data_root, tmp_path):
    with recording_tta_views() as views:
        _, merged, _ = run_test(to_tta(make_config(data_root, tmp_path, binary=True, decoder="rankseg")))
    for image_views in views:
        # seg_logits of a one-channel head already hold sigmoid probabilities: no second sigmoid
        probs = torch.stack([v.seg_logits.data for v in image_views]).mean(0)
        pred = merged[Path(image_views[0].img_path).stem].pred_sem_seg.data
        assert torch.equal(pred[0].long(), rankseg(probs[None])[0])


def test_tools_test_py_tta(rankseg_cfg, checkpoint, tta_run, tmp_path):
    """mmseg's own ``tools/test.py --tta`` (from the wheel), the plugin named only in the config."""
    config = write_config(rankseg_cfg, tmp_path / "rankseg_config.py")
    command = [
        sys.executable,
        str(TOOLS_TEST),
        str(config),
        str(checkpoint),
        "--tta",
        "--work-dir",
        str(tmp_path / "work"),
        "--out",
        str(tmp_path / "out"),
    ]
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "mmseg_ext: test_cfg.decoder {'type': 'rankseg', 'metric': 'iou'} is active" in result.stdout
    for name, sample in tta_run[0].items():
        saved = np.asarray(Image.open(tmp_path / "out" / f"{name}.png"))
        assert np.array_equal(saved, sample.pred_sem_seg.data[0].numpy())


def test_init_model_inference_model(rankseg_cfg, checkpoint, rankseg_run, data_root, tmp_path):
    model = init_model(str(write_config(rankseg_cfg, tmp_path / "config.py")), str(checkpoint), device="cpu")
    for name, sample in rankseg_run[1].items():
        result = inference_model(model, str(data_root / "img" / f"{name}.png"))
        assert torch.equal(result.pred_sem_seg.data, sample.pred_sem_seg.data)


def test_torchrun_two_processes_match_one(rankseg_cfg, checkpoint, rankseg_run, tmp_path):
    config = write_config(rankseg_cfg, tmp_path / "config.py")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "tests" / "mmseg_fixtures.py"),
        str(config),
        str(checkpoint),
        str(tmp_path / "work"),
        str(tmp_path / "metrics.json"),
    ]
    env = {**subprocess_env(), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Distributed training: True" in result.stdout and "GPU number: 2" in result.stdout  # world size
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == pytest.approx({k: float(v) for k, v in rankseg_run[0].items()})


def build_model(cfg: dict) -> torch.nn.Module:
    init_default_scope("mmseg")
    return MODELS.build(cfg["model"]).eval()


def padded_flipped_samples(n: int) -> list[SegDataSample]:
    """Metainfo as mmseg's pipeline leaves it: padded to 32x32, horizontally flipped, original 20x28."""
    meta = dict(
        padding_size=[0, 4, 0, 9], flip=True, flip_direction="horizontal", ori_shape=(20, 28), img_shape=(23, 28)
    )
    return [SegDataSample(metainfo=meta) for _ in range(n)]


@pytest.mark.parametrize("binary", [False, True], ids=["softmax", "sigmoid"])
def test_without_decoder_mmseg_is_untouched(binary, data_root, tmp_path):
    model = build_model(make_config(data_root, tmp_path, binary=binary))
    logits = torch.randn(2, 1 if binary else 3, 32, 32)
    ours = model.postprocess_result(logits, padded_flipped_samples(2))
    theirs = decoders._postprocess_result(model, logits, padded_flipped_samples(2))
    model.test_cfg["decoder"] = "argmax"
    argmax = model.postprocess_result(logits, padded_flipped_samples(2))
    for a, b, c in zip(ours, theirs, argmax, strict=True):
        assert set(a.keys()) == set(b.keys())
        for key in ("seg_logits", "pred_sem_seg"):
            assert a.get(key).data.dtype == b.get(key).data.dtype == c.get(key).data.dtype
            assert torch.equal(a.get(key).data, b.get(key).data) and torch.equal(a.get(key).data, c.get(key).data)


def test_decoder_errors(data_root, tmp_path):
    model = build_model(make_config(data_root, tmp_path, decoder="nearest"))
    with pytest.raises(KeyError, match=r"'nearest' is not a registered decoder; registered: .*'argmax', 'rankseg'"):
        model.postprocess_result(torch.randn(1, 3, 8, 8))
    model.test_cfg.update(decoder="rankseg", rankseg=dict(metric="hausdorff"))
    with pytest.raises(ValueError, match="hausdorff"):
        model.postprocess_result(torch.randn(1, 3, 8, 8))
    model.test_cfg.update(rankseg=dict(output_mode="multilabel"))
    with pytest.raises(ValueError, match="multiclass"):
        model.postprocess_result(torch.randn(1, 3, 8, 8))


def test_plan_and_regions_in_test_cfg(data_root, tmp_path):
    """test_cfg.rankseg takes every core option (regions here) or a plan fitted by rankseg-eval --fit-plan."""
    from rankseg_plugins import RankSEG

    plan = {"format": "rankseg-plan", "version": 1, "options": {"metric": "iou"}, "channels": 3,
            "targets": ["background", "organ", "lesion"],
            "decisions": [{"decoder": "rankseg"}, {"decoder": "argmax"}, {"decoder": "rankseg", "pruning_prob": 0.3}]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    model = build_model(make_config(data_root, tmp_path, decoder="rankseg"))
    logits = torch.randn(1, 3, 8, 8)
    for options, expected in [
        (dict(plan=str(tmp_path / "plan.json")), RankSEG.from_plan(plan)),
        (dict(regions=[[1, 2], [2]]), RankSEG(regions=[[1, 2], [2]])),
    ]:
        model.test_cfg.update(rankseg=options)
        pred = model.postprocess_result(logits)[0].pred_sem_seg.data
        assert torch.equal(pred[0], expected(logits.softmax(1))[0])


def test_user_registered_decoder_and_dict_form(data_root, tmp_path):
    DECODERS.register_module("test_last_class", module=lambda: lambda probs: probs.argmin(dim=1), force=True)
    model = build_model(make_config(data_root, tmp_path))
    model.test_cfg["decoder"] = dict(type="test_last_class")
    logits = torch.randn(1, 3, 8, 8)
    pred = model.postprocess_result(logits)[0].pred_sem_seg.data
    assert torch.equal(pred[0], logits[0].softmax(0).argmin(0))


def test_checkpoint_loads_weights_only(checkpoint, tmp_path):
    ckpt = torch.load(checkpoint)  # torch >= 2.6: weights_only=True by default
    assert isinstance(ckpt["message_hub"]["log_scalars"]["train/loss"], HistoryBuffer)

    class Sneaky:
        def __reduce__(self):
            return getattr, (HistoryBuffer, "__init__")

    torch.save(Sneaky(), tmp_path / "sneaky.pth")
    with pytest.raises(pickle.UnpicklingError, match="is not allowed"):
        torch.load(tmp_path / "sneaky.pth")


def test_mmcv_compiled_ops_fail_loudly_when_called():
    import mmcv.ops
    from mmengine.utils.dl_utils import mmcv_full_available

    if mmcv_full_available():
        pytest.skip("full mmcv: compiled ops are available")
    assert isinstance(sys.modules["mmcv._ext"], _MissingCompiledOps)
    with pytest.raises(RuntimeError, match=r"'nms' needs mmcv's compiled ops \(mmcv._ext\)"):
        mmcv.ops.nms(torch.rand(3, 4), torch.rand(3), 0.5)


def test_no_stub_over_compiled_ops(tmp_path, monkeypatch):
    """With full mmcv (here: an importable mmcv._ext on mmcv's path) the stub is not installed."""
    import mmcv

    (tmp_path / "_ext.py").write_text("")
    monkeypatch.delitem(sys.modules, "mmcv._ext", raising=False)
    monkeypatch.setattr(mmcv, "__path__", [*mmcv.__path__, str(tmp_path)])
    install_mmcv_ext_stub()
    assert "mmcv._ext" not in sys.modules


@pytest.mark.parametrize("config", sorted((REPO / "configs" / "mmseg").glob("*.py")), ids=lambda p: p.stem)
def test_shipped_configs(config):
    """Each ready config inherits a stock mmseg config, adds the decoder, and its model builds and decodes."""
    cfg = Config.fromfile(str(config))
    assert cfg.custom_imports == dict(imports=["mmseg_ext"], allow_failed_imports=False)
    assert cfg.model.test_cfg.decoder == "rankseg" and "mode" in cfg.model.test_cfg
    init_default_scope("mmseg")
    model = MODELS.build(cfg.model).eval()
    logits = torch.randn(1, model.out_channels, 16, 16)
    pred = model.postprocess_result(logits)[0].pred_sem_seg.data
    assert torch.equal(pred[0], rankseg(logits.softmax(1), **cfg.model.test_cfg.rankseg)[0])
