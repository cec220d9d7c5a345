"""``rankseg-eval``: does RankSEG help my model on my data? Argmax vs RankSEG, per case, with a report.

With no arguments it runs the embedded LiTS demo. Under ``torchrun --nproc_per_node=N`` cases are split
across ranks and rank 0 writes one merged report.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import datasets
from .datasets import Case, Regions
from .evaluate import CaseResult, Decoders, evaluate
from .report import payload, terminal_table, write_reports

EPILOG = """\
examples:
  rankseg-eval                                          # embedded LiTS demo (needs the [demo] extra)
  rankseg-eval --data KITS23 --layout kits23 --bundle BUNDLE_DIR --out report/
  rankseg-eval --data LITS --layout lits --checkpoint net.pt --network-config unet.json \\
               --roi-size 96 96 96 --intensity-range -200 250 --spacing 1 1 1 --orientation RAS
  rankseg-eval --probs PROBS_DIR --data MSD_TASK --layout msd
  rankseg-eval --probs PROBS_DIR --labels LABELS_DIR
  torchrun --nproc_per_node=2 -m rankseg_plugins.eval --probs PROBS_DIR --labels LABELS_DIR

layouts (--data DIR): kits19/kits23 DIR/case_XXXXX/{imaging,segmentation}.nii.gz; lits volume-N.nii +
segmentation-N.nii anywhere under DIR; msd DIR/imagesTr + DIR/labelsTr (+ dataset.json for region names).
--probs DIR: <case id>.npy/.npz (C, *spatial) or .nii/.nii.gz (*spatial, C), softmax probabilities.
Scored regions: kits19 kidney {1,2}, tumour {2}; kits23 kidney {1,2,3}, masses {2,3}, tumour {2};
lits liver {1,2}, tumour {2}; otherwise one region per foreground class.
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="rankseg-eval", description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_argument_group("data (none of these: run the embedded demo)")
    src.add_argument("--data", type=Path, help="dataset root (images and labels)")
    src.add_argument("--layout", choices=datasets.LAYOUTS, help="layout of --data")
    src.add_argument("--probs", type=Path, help="precomputed probability maps, one file per case")
    src.add_argument("--labels", type=Path, help="label maps named <case id>.nii.gz/.nii/.npy/.npz (with --probs)")
    net = p.add_argument_group("network (with --data, unless --probs)")
    net.add_argument("--bundle", type=Path, help="MONAI bundle directory")
    net.add_argument("--checkpoint", type=Path, help="TorchScript file or state dict")
    net.add_argument("--network-config", type=Path, help="JSON/YAML network definition for a state dict")
    net.add_argument("--roi-size", type=int, nargs="+", default=[96, 96, 96], help="sliding-window size")
    net.add_argument("--sw-batch-size", type=int, default=4)
    net.add_argument("--overlap", type=float, default=0.25)
    net.add_argument("--intensity-range", type=float, nargs=2, metavar=("MIN", "MAX"),
                     help="clip the image to [MIN, MAX] and scale to [0, 1]")
    net.add_argument("--spacing", type=float, nargs="+", help="resample to this voxel spacing before inference")
    net.add_argument("--orientation", help="reorient to these axis codes (e.g. RAS) before inference")
    net.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    rs = p.add_argument_group("RankSEG")
    rs.add_argument("--solver", default="rma", choices=["rma", "exact"])
    rs.add_argument("--pruning-prob", type=float, default=0.5,
                    help="a class whose max probability in a case is <= this claims no voxels (default 0.5)")
    rs.add_argument("--smooth", type=float, default=0.0)
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, default=Path("out/rankseg-eval"), help="report folder")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def resolve(args: argparse.Namespace) -> tuple[list[Case], Regions | None, int, dict[str, Any]]:
    """Cases, regions (``None``: per class), preview axis and the config recorded in the report."""
    config: dict[str, Any] = {"solver": args.solver, "pruning_prob": args.pruning_prob, "smooth": args.smooth}
    if args.data is None and args.probs is None and args.labels is None:
        names = ("layout", "bundle", "checkpoint", "network_config")
        stray = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is not None]
        if stray:
            raise ValueError(f"{', '.join(stray)} needs --data DIR (without any data option the demo runs)")
        from . import demo

        config["source"] = (
            "embedded demo: LiTS case 117 (128^3 crop, liver-ct-segmentation-package 1.6.0); tiny MONAI UNet "
            "(rankseg_plugins/eval/demo_model.pt) trained on other axial slices of the same scan; sliding-window "
            "inference; cases = 8 held-out axial slabs of 8 slices"
        )
        return demo.demo_cases(), demo.REGIONS, 0, config
    if args.data is not None and args.layout is None:
        raise ValueError("--data needs --layout (kits19, kits23, lits or msd)")
    files = datasets.discover(args.data, args.layout) if args.data is not None else None
    regions = datasets.layout_regions(args.layout, args.data)
    config.update(data=str(args.data) if args.data else None, layout=args.layout)
    if args.probs is not None:
        config.update(source=f"probability maps in {args.probs}", probs=str(args.probs),
                      labels=str(args.labels) if args.labels else None)
        return datasets.probs_cases(files, args.probs, args.labels), regions, -1, config
    if files is None:
        raise ValueError("--labels is used with --probs; to run a network give --data DIR --layout NAME")
    from . import inference

    if args.bundle is not None:
        predictor = inference.from_bundle(args.bundle, args.device)
        config.update(source=f"MONAI bundle {args.bundle} on {args.data}")
    elif args.checkpoint is not None:
        network = inference.load_network(args.checkpoint, args.network_config)
        pre = inference.preprocessing(args.intensity_range, args.spacing, args.orientation)
        inferer = inference.sliding_window(args.roi_size, args.sw_batch_size, args.overlap)
        predictor = inference.Predictor(network, pre, inferer, args.device)
        config.update(
            source=f"checkpoint {args.checkpoint} on {args.data}", roi_size=args.roi_size, overlap=args.overlap,
            intensity_range=args.intensity_range, spacing=args.spacing, orientation=args.orientation,
        )
    else:
        raise ValueError("--data needs a network (--bundle DIR or --checkpoint FILE) or --probs DIR")
    return inference.network_cases(files, predictor), regions, -1, config


def check_out_dir(args: argparse.Namespace) -> None:
    """Refuse an output folder inside an input folder: inputs are never written to."""
    out = args.out.resolve()
    for name in ("data", "probs", "labels", "bundle"):
        src = getattr(args, name)
        if src is not None and out.is_relative_to(src.resolve()):
            raise ValueError(f"--out {args.out} is inside --{name} {src}; inputs are never written to, pick another")


def run_distributed(
    cases: list[Case], run: Callable[[list[Case]], list[CaseResult]]
) -> list[CaseResult] | None:
    """Split ``cases`` over torch.distributed ranks, gather on every rank; ``None`` on ranks other than 0."""
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    mine = list(range(rank, len(cases), world))
    local = list(zip(mine, run([cases[i] for i in mine])))
    gathered: list[list[tuple[int, CaseResult]] | None] = [None] * world
    dist.all_gather_object(gathered, local)
    if rank != 0:
        return None
    return [r for _, r in sorted((item for part in gathered for item in part), key=lambda t: t[0])]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rankseg-eval`` and ``python -m rankseg_plugins.eval``."""
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = world > 1
    if distributed:
        import torch.distributed as dist

        use_cuda = args.device.startswith("cuda") and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            args.device = f"cuda:{torch.cuda.current_device()}"
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = torch.distributed.get_rank() if distributed else 0
    try:
        try:
            check_out_dir(args)
            cases, regions, axis, config = resolve(args)
            decoders = Decoders(args.solver, args.pruning_prob, args.smooth)
        except (ValueError, FileNotFoundError, RuntimeError) as err:
            print(f"rankseg-eval: error: {err}", file=sys.stderr)
            return 2
        progress = not args.no_progress and rank == 0 and sys.stderr.isatty()

        def run(subset: list[Case]) -> list[CaseResult]:
            return evaluate(subset, regions, decoders, axis, progress)

        results = run_distributed(cases, run) if distributed else run(cases)
        if results is None:
            return 0
        if regions is None:
            regions = datasets.class_regions(max((r.num_classes for r in results if r.num_classes), default=2))
        report = payload(results, config, {k: list(v) for k, v in regions.items()})
        print(config["source"])
        print(terminal_table(report))
        paths = write_reports(args.out, report, results)
        print(f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - start:.1f}s")
        return 0 if report["cases"] else 1
    finally:
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
