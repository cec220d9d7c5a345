"""A tiny on-disk dataset and tiny mmseg configs for the mmseg adapter tests.

Run as a script under ``torchrun``, it tests a config on CPU with gloo and rank 0 writes the metrics as JSON:
``torchrun --standalone --nproc_per_node=2 tests/mmseg_fixtures.py CONFIG CHECKPOINT WORK_DIR OUT_JSON``.
"""

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("background", "organ", "lesion")
IMAGE_SIZES = [(20, 28), (24, 24), (18, 30), (26, 22)]  # (H, W): odd shapes exercise resize and unpadding


def write_dataset(root: Path) -> None:
    """Images with a disc (class 1) around a smaller disc (class 2); ``ann_binary`` holds foreground only."""
    rng = np.random.default_rng(0)
    for sub in ("img", "ann", "ann_binary"):
        (root / sub).mkdir(parents=True)
    for i, (h, w) in enumerate(IMAGE_SIZES):
        yy, xx = np.mgrid[:h, :w]
        r2 = (yy - h / 3) ** 2 + (xx - w / 2) ** 2
        label = np.zeros((h, w), np.uint8)
        label[r2 < (min(h, w) / 3) ** 2] = 1
        label[r2 < (min(h, w) / 6) ** 2] = 2
        img = label[..., None] * 60 + rng.integers(0, 100, (h, w, 3))
        Image.fromarray(img.astype(np.uint8)).save(root / "img" / f"{i}.png")
        Image.fromarray(label).save(root / "ann" / f"{i}.png")
        Image.fromarray((label > 0).astype(np.uint8)).save(root / "ann_binary" / f"{i}.png")


def make_config(
    data_root: Path,
    work_dir: Path,
    decoder: str | None = None,
    slide: bool = False,
    cascade: bool = False,
    binary: bool = False,
    load_from: Path | None = None,
) -> dict:
    """A complete mmseg config (train, test, TTA) for a tiny UNet + FCN (+ OCR for cascade) model."""
    norm_cfg = dict(type="BN", requires_grad=True)
    num_classes = 2 if binary else 3
    head = dict(
        in_channels=8,
        in_index=-1,
        channels=8,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=binary),
    )
    if binary:
        head.update(out_channels=1, threshold=0.3)
    decode_head = dict(type="FCNHead", num_convs=1, concat_input=False, **head)
    if cascade:
        decode_head = [decode_head, dict(type="OCRHead", ocr_channels=8, **head)]
    test_cfg = dict(mode="slide", crop_size=(16, 16), stride=(12, 12)) if slide else dict(mode="whole")
    if decoder is not None:
        test_cfg["decoder"] = decoder
    model = dict(
        type="CascadeEncoderDecoder" if cascade else "EncoderDecoder",
        data_preprocessor=dict(
            type="SegDataPreProcessor",
            mean=[100.0] * 3,
            std=[50.0] * 3,
            bgr_to_rgb=True,
            pad_val=0,
            seg_pad_val=255,
            size=(32, 32),
            test_cfg=dict(size_divisor=16),
        ),
        backbone=dict(
            type="UNet",
            in_channels=3,
            base_channels=8,
            num_stages=2,
            strides=(1, 1),
            enc_num_convs=(1, 1),
            dec_num_convs=(1,),
            downsamples=(True,),
            enc_dilations=(1, 1),
            dec_dilations=(1,),
            norm_cfg=norm_cfg,
        ),
        decode_head=decode_head,
        test_cfg=test_cfg,
    )
    if cascade:
        model["num_stages"] = 2

    def dataset(pipeline: list) -> dict:
        return dict(
            type="BaseSegDataset",
            data_root=str(data_root),
            data_prefix=dict(img_path="img", seg_map_path="ann_binary" if binary else "ann"),
            img_suffix=".png",
            seg_map_suffix=".png",
            pipeline=pipeline,
            metainfo=dict(classes=("background", "foreground") if binary else CLASSES),
        )

    load = dict(type="LoadImageFromFile")
    annotations = dict(type="LoadAnnotations")
    resize = dict(type="Resize", scale=(32, 32), keep_ratio=True)
    pack = dict(type="PackSegInputs")
    test_pipeline = [load, resize, annotations, pack]
    return dict(
        default_scope="mmseg",
        custom_imports=dict(imports=["mmseg_ext"], allow_failed_imports=False),
        work_dir=str(work_dir),
        load_from=None if load_from is None else str(load_from),
        randomness=dict(seed=0),
        env_cfg=dict(
            cudnn_benchmark=False,
            dist_cfg=dict(backend="gloo"),
            mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
        ),
        log_level="INFO",
        model=model,
        train_dataloader=dict(
            batch_size=2,
            num_workers=0,
            sampler=dict(type="InfiniteSampler", shuffle=True),
            dataset=dataset([load, annotations, resize, pack]),
        ),
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=2, val_interval=1000),
        optim_wrapper=dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.01, momentum=0.9)),
        default_hooks=dict(
            timer=dict(type="IterTimerHook"),
            logger=dict(type="LoggerHook", interval=1),
            checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=2),
        ),
        log_processor=dict(by_epoch=False),
        test_dataloader=dict(
            batch_size=1,
            num_workers=0,
            sampler=dict(type="DefaultSampler", shuffle=False),
            dataset=dataset(test_pipeline),
        ),
        test_pipeline=test_pipeline,
        test_evaluator=dict(type="IoUMetric", iou_metrics=["mIoU", "mDice"]),
        test_cfg=dict(type="TestLoop"),
        tta_model=dict(type="SegTTAModel"),
        tta_pipeline=[
            load,
            dict(
                type="TestTimeAug",
                transforms=[
                    [resize, dict(type="Resize", scale=(24, 24), keep_ratio=True)],
                    [
                        dict(type="RandomFlip", prob=0.0, direction="horizontal"),
                        dict(type="RandomFlip", prob=1.0, direction="horizontal"),
                    ],
                    [annotations],
                    [pack],
                ],
            ),
        ],
    )


def to_tta(cfg: dict) -> dict:
    """What mmseg's ``tools/test.py --tta`` does to a config."""
    cfg["test_dataloader"]["dataset"]["pipeline"] = cfg["tta_pipeline"]
    cfg["tta_model"]["module"] = cfg["model"]
    cfg["model"] = cfg["tta_model"]
    return cfg


def main(config: str, checkpoint: str, work_dir: str, out_json: str) -> None:
    """Distributed test on CPU: gloo must be up before mmengine's init_dist, which calls cuda.set_device."""
    import torch.distributed as dist
    from mmengine.config import Config
    from mmengine.runner import Runner

    dist.init_process_group("gloo")
    cfg = Config.fromfile(config)
    cfg.launcher = "pytorch"
    cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None)
    cfg.load_from = checkpoint
    cfg.work_dir = work_dir
    metrics = Runner.from_cfg(cfg).test()
    if dist.get_rank() == 0:
        Path(out_json).write_text(json.dumps({key: float(value) for key, value in metrics.items()}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
