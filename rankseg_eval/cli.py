"""``rankseg-eval``: does RankSEG help my model on my data? The baseline vs RankSEG, per case, with a report.

With no data option it runs the embedded LiTS demo. Under ``torchrun --nproc_per_node=N`` cases are split across
ranks and rank 0 writes one merged report. ``--fit-plan PLAN.json`` also fits a plan on the cases (one decision per
class or region, cross-validated); ``--plan PLAN.json`` evaluates a plan against the baseline.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, get_args, get_type_hints

import torch

from rankseg_plugins import Plan
from rankseg_plugins.options import Options, option_specs

from . import layouts
from .cases import Case, error_message, probs_cases
from .decoding import ACTIVATIONS, METRICS, SET_BY_EVALUATION, Decoders, regions_text
from .layouts import Layout
from .plans import AGGREGATES, PlanFitter
from .report import prepare_out_dir, terminal_table, write_reports
from .scoring import CaseResult, RunError, evaluate
from .summary import build_report

#: Errors that mean "the command line (or what it points at) is wrong": exit status 2, one line.
USAGE_ERRORS = (ValueError, TypeError, OSError, RuntimeError)

SCORED_REGIONS = "".join(f"\n  {name}: {regions_text(layout.regions)}" for name, layout in layouts.LAYOUTS.items())
EPILOG = f"""\
examples:
  rankseg-eval                                          # embedded LiTS demo (needs the [demo] extra)
  rankseg-eval --data KITS23 --layout kits23 --bundle BUNDLE_DIR --out report
  rankseg-eval --data LITS --layout lits --checkpoint net.pt --network-config unet.json \\
               --roi-size 96 96 96 --intensity-range -200 250 --spacing 1 1 1 --orientation RAS
  rankseg-eval --data MSD_TASK --layout msd --probs PROBS_DIR
  rankseg-eval --probs PROBS_DIR --labels LABELS_DIR
  torchrun --nproc_per_node=2 -m rankseg_eval --probs PROBS_DIR --labels LABELS_DIR
  rankseg-eval --probs VAL_PROBS --labels VAL_LABELS --fit-plan plan.json --out fit     # fit a plan
  rankseg-eval --probs TEST_PROBS --labels TEST_LABELS --plan plan.json --out test      # evaluate it

layouts (--data DIR): kits19/kits23 DIR/case_XXXXX/{{imaging,segmentation}}.nii.gz; lits volume-N.nii +
segmentation-N.nii in one folder, anywhere under DIR; msd DIR/imagesTr + DIR/labelsTr + DIR/dataset.json.
scored regions:{SCORED_REGIONS}
  msd: one per label of dataset.json; --labels without a layout: one per foreground class
--probs DIR: <case id>.npy/.npz (C, *spatial) or .nii/.nii.gz (*spatial, C) probabilities on the label's grid.
Full reference: docs/eval.md.
"""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with each option's default (unless it has none) and the description and epilog as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """An argument error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _overlap(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _folds(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"cross-validation needs at least 2 folds, got {text}")
    return value


def select_cases(cases: list[Case], selection: str) -> list[Case]:
    """The cases ``selection`` names: ``START:STOP`` (a Python slice of the cases in order, e.g. ``:4``, ``4:``) or
    case ids separated by commas; ``ValueError`` for an empty selection or an unknown id."""
    if ":" in selection:
        try:
            start, stop = (int(x) if x.strip() else None for x in selection.split(":"))
        except ValueError as err:
            raise ValueError(f"--cases {selection!r}: give START:STOP (e.g. :4 or 4:) or case ids with commas") from err
        chosen = cases[start:stop]
    else:
        ids = [x.strip() for x in selection.split(",") if x.strip()]
        known = {c.case_id: c for c in cases}
        unknown = [x for x in ids if x not in known]
        if unknown:
            raise ValueError(f"--cases: unknown case id(s) {unknown}; the cases are {', '.join(list(known)[:6])}"
                             + (", ..." if len(known) > 6 else ""))
        chosen = [known[x] for x in ids]
    if not chosen:
        raise ValueError(f"--cases {selection!r} selects none of the {len(cases)} cases")
    return chosen


def add_rankseg_options(group: argparse._ArgumentGroup) -> None:
    """One flag per RankSEG option the evaluation does not set itself, with its default, choices and help from
    :func:`rankseg_plugins.options.option_specs`."""
    hints = get_type_hints(Options)
    for name, spec in option_specs().items():
        if name in SET_BY_EVALUATION:
            continue
        kind = next(t for t in (get_args(hints[name]) or (hints[name],)) if t is not type(None))
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=spec.default, help=spec.help)
        else:
            group.add_argument(flag, type=kind, choices=spec.choices, default=spec.default, help=spec.help)


def rankseg_options(args: argparse.Namespace) -> dict[str, Any]:
    """The RankSEG options given on the command line (see :func:`add_rankseg_options`)."""
    return {name: getattr(args, name) for name in option_specs() if name not in SET_BY_EVALUATION}


def add_plan_options(group: argparse._ArgumentGroup, plan_help: str) -> None:
    """``--fit-plan``, ``--plan`` (with ``plan_help``), ``--folds``, ``--fit-metric`` and ``--aggregate``: the plan
    flags rankseg-eval and rankseg-nnunet share."""
    group.add_argument("--fit-plan", type=Path, metavar="PLAN.json",
                       help="also fit a plan on these cases (cross-validated: a class or region leaves argmax only "
                       "where a candidate's paired gain has a 95%% bootstrap interval above 0) and write it here")
    group.add_argument("--plan", type=Path, metavar="PLAN.json", help=plan_help)
    group.add_argument("--folds", type=_folds, default=5, help="cross-validation folds of --fit-plan (at most one per "
                       "case)")
    group.add_argument("--fit-metric", choices=METRICS, default="dice", help="the metric --fit-plan optimises")
    group.add_argument("--aggregate", choices=AGGREGATES, default="case",
                       help="how --fit-plan scores: the mean over cases of the per-case metric, or the metric of "
                       "intersections and sizes pooled over the cases (mmseg's IoUMetric); 'dataset' adds a fixed "
                       "threshold per class as a candidate")


def build_parser() -> ArgumentParser:
    """The command-line interface."""
    p = ArgumentParser(prog="rankseg-eval", description=__doc__.replace("``", ""), epilog=EPILOG,
                       formatter_class=HelpFormatter)
    src = p.add_argument_group("data (none of --data, --probs, --labels: run the embedded demo)")
    src.add_argument("--data", type=Path, help="dataset root (images and labels), in the layout --layout names")
    src.add_argument("--layout", choices=layouts.NAMES, help="layout of --data: where files are, scored regions")
    src.add_argument("--probs", type=Path, help="precomputed probability maps, one file per case")
    src.add_argument("--labels", type=Path,
                     help="label maps named <case id>.nii.gz/.nii/.npy/.npz (with --probs, instead of --data)")
    src.add_argument("--activation", choices=ACTIVATIONS,
                     help="what the probabilities are: softmax over classes (background first), or sigmoid, one "
                     "channel per scored region, outermost first; default: the bundle's Activationsd, else softmax")
    src.add_argument("--decode", choices=("regions", "classes"),
                     help="RankSEG decodes the layout's scored regions (RankSEG(regions=...)) or each class; "
                     "default: regions for layouts with nested regions (kits19, kits23, lits), else classes")
    net = p.add_argument_group("network (with --data, instead of --probs)")
    net.add_argument("--bundle", type=Path, help="MONAI bundle folder (configs/inference.*, models/model.pt|ts)")
    net.add_argument("--checkpoint", type=Path, help="TorchScript file, or a state dict with --network-config")
    net.add_argument("--network-config", type=Path, help="JSON/YAML network definition (_target_) for a state dict")
    net.add_argument("--roi-size", type=_positive_int, nargs="+", default=[96, 96, 96],
                     help="sliding-window size, one value per spatial dimension (with --checkpoint)")
    net.add_argument("--sw-batch-size", type=_positive_int, default=4, help="windows per network call")
    net.add_argument("--overlap", type=_overlap, default=0.25, help="overlap of neighbouring windows, in [0, 1)")
    net.add_argument("--intensity-range", type=float, nargs=2, metavar=("MIN", "MAX"),
                     help="clip the image to [MIN, MAX] and scale to [0, 1] (with --checkpoint)")
    net.add_argument("--spacing", type=float, nargs="+", help="resample to this voxel spacing (with --checkpoint)")
    net.add_argument("--orientation", help="reorient to these axis codes, e.g. RAS (with --checkpoint)")
    net.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                     help="torch device the network runs on (cpu, cuda, cuda:1); decoding and scoring run on CPU")
    add_rankseg_options(p.add_argument_group(
        "RankSEG options", "for both the Dice and the IoU decoder; --ignore-empty also scores as it says: a region "
        "whose truth is empty in a case is left out of that case's scores"))
    plans = p.add_argument_group("plans (one decision per class or region, fitted on validation cases)")
    add_plan_options(plans, "evaluate this plan (fitted with --fit-plan) against the baseline; it carries its own "
                     "RankSEG options")
    plans.add_argument("--cases", metavar="SELECTION",
                       help="evaluate only these cases: START:STOP over the cases in order (:4, 4:) or case ids "
                       "separated by commas")
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, default=Path("out/rankseg-eval"),
                     help="report folder; must be empty or new, unless --overwrite")
    out.add_argument("--overwrite", action="store_true",
                     help="write into a non-empty --out, replacing rankseg-eval's files there (report.json, "
                     "cases.csv, report.md, figure.png, reliability.png), and replace an existing --fit-plan "
                     "file; other files are left alone")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@dataclass
class Job:
    """What one run evaluates: the cases, the decoders, the layout (``None``: per class), the recorded config and,
    with ``--fit-plan``, the plan's fitter."""

    cases: list[Case]
    decoders: Decoders
    layout: Layout | None
    config: dict[str, Any]
    fitter: PlanFitter | None = None


def check_device(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is a torch device that exists here."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device {name!r} is not a torch device (cpu, cuda, cuda:1, ...)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")


def check_roi_size(roi_size: list[int], files: list[layouts.CaseFiles]) -> None:
    """Raise ``ValueError`` unless ``roi_size`` has one value per spatial dimension of the first readable image."""
    import nibabel as nib

    for entry in files:
        try:
            shape = nib.load(str(entry.image)).shape
        except Exception:  # a missing or corrupt image is that case's error, reported per case
            continue
        dims = min(len(shape), 3)
        if len(roi_size) != dims:
            raise ValueError(
                f"--roi-size has {len(roi_size)} value(s) but the images are {dims}D ({entry.image} has shape "
                f"{shape}): give {dims}, e.g. --roi-size {' '.join(['96'] * dims)}"
            )
        return


def plan_decoders(args: argparse.Namespace, layout: Layout | None, activation: str) -> Decoders:
    """The baseline and ``--plan``'s decoder; ``ValueError`` when the plan does not fit the command line."""
    plan = Plan.load(args.plan)
    given = [f"--{name.replace('_', '-')}" for name, value in rankseg_options(args).items()
             if value != option_specs()[name].default]
    if given:
        raise ValueError(f"--plan carries its own RankSEG options; drop {', '.join(given)}")
    decode = "classes" if plan.options.regions is None else "regions"
    if args.decode is not None and args.decode != decode:
        raise ValueError(f"--decode {args.decode}, but the plan {args.plan} decodes {decode}")
    if plan.options.regions is not None and layout is None:
        raise ValueError(f"the plan {args.plan} decodes regions {[list(r) for r in plan.options.regions]}: give "
                         "--data DIR --layout NAME, whose scored regions they are")
    if plan.options.output_mode == "multilabel" and activation != "sigmoid":
        raise ValueError(f"the plan {args.plan} decodes sigmoid region channels: pass --activation sigmoid")
    return Decoders(layout.regions if decode == "regions" else None, activation, plan=plan)


def make_decoders(args: argparse.Namespace, layout: Layout | None, activation: str) -> Decoders:
    """The decoders ``--decode``, ``--activation`` and the RankSEG options (or ``--plan``) ask for."""
    if args.plan is not None:
        return plan_decoders(args, layout, activation)
    if activation == "sigmoid" and (layout is None or args.decode == "classes"):
        raise ValueError("sigmoid probabilities hold one channel per scored region, so they are decoded by region: "
                         "give --data DIR --layout NAME (and no --decode classes)")
    by_region = activation == "sigmoid" or (layout is not None and layout.nested)
    decode = args.decode or ("regions" if by_region else "classes")
    if decode == "regions" and layout is None:
        raise ValueError("--decode regions decodes a layout's scored regions: give --data DIR --layout NAME")
    return Decoders(layout.regions if decode == "regions" else None, activation, **rankseg_options(args))


def _demo(args: argparse.Namespace, config: dict[str, Any]) -> Job:
    names = ("layout", "bundle", "checkpoint", "network_config", "activation")
    stray = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n) is not None]
    if stray:
        raise ValueError(f"{', '.join(stray)} needs --data DIR or --probs DIR (without a data option the demo runs)")
    from . import demo

    decoders = make_decoders(args, demo.LAYOUT, "softmax")
    return Job(demo.demo_cases(), decoders, demo.LAYOUT, {"source": demo.SOURCE, **config})


def plan_job(args: argparse.Namespace, job: Job, distributed: bool) -> Job:
    """``job`` with ``--cases`` applied and, with ``--fit-plan``, its fitter; ``ValueError`` for what does not fit."""
    if args.cases is not None:
        job.cases = select_cases(job.cases, args.cases)
        job.config["cases"] = [c.case_id for c in job.cases]
    if args.fit_plan is None:
        return job
    if args.plan is not None:
        raise ValueError("--fit-plan fits a plan and --plan evaluates one: give one of them")
    if distributed:
        raise ValueError("--fit-plan runs in one process (its second pass needs every case's statistics): run it "
                         "without torchrun")
    if len(job.cases) < 2:
        raise ValueError(f"--fit-plan cross-validates over cases and needs at least 2; got {len(job.cases)}")
    job.fitter = PlanFitter(job.decoders, job.layout, args.folds, args.aggregate, args.fit_metric)
    return job


def check_plan_file(path: Path, overwrite: bool, inputs: dict[str, Path | None]) -> None:
    """Raise ``ValueError`` unless ``--fit-plan``'s file can be written: outside every input folder, not a folder,
    new unless ``overwrite``."""
    for name, source in inputs.items():
        if source is not None and path.resolve().is_relative_to(source.resolve()):
            raise ValueError(f"--fit-plan {path} is inside --{name} {source}; inputs are never written to")
    if path.is_dir():
        raise ValueError(f"--fit-plan {path} is a folder; give a file name, e.g. {path / 'plan.json'}")
    if path.exists() and not overwrite:
        raise ValueError(f"--fit-plan {path} exists; pass --overwrite to replace it, or pick another name")
    if not path.parent.is_dir():
        raise ValueError(f"--fit-plan {path}: folder {path.parent} does not exist")


def _bundle_predictor(args: argparse.Namespace, layout: Layout) -> tuple[Any, Decoders]:
    from .inference import Bundle

    bundle = Bundle(args.bundle, args.device)
    activation = args.activation or bundle.activation or "softmax"
    expected = [list(labels) for labels in layout.regions.values()]
    if activation == "sigmoid" and bundle.regions is not None and bundle.regions != expected:
        raise ValueError(f"the bundle's network channels are regions {bundle.regions}, but layout {layout.name} "
                         f"scores {expected}; they must match, outermost first")
    decoders = make_decoders(args, layout, activation)  # option errors before the weights load
    return bundle.predictor(activation), decoders


def resolve(args: argparse.Namespace) -> Job:
    """Turn the command line into a :class:`Job`; ``ValueError``/``FileNotFoundError`` for what does not fit."""
    config = {"arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    if args.data is None and args.probs is None and args.labels is None:
        return _demo(args, config)
    if (args.data is None) != (args.layout is None):
        raise ValueError(f"--data and --layout go together: --data DIR --layout {{{','.join(layouts.NAMES)}}}")
    layout = layouts.layout(args.layout, args.data) if args.layout else None
    files = layouts.discover(args.data, args.layout) if args.data is not None else None
    if args.probs is not None:
        decoders = make_decoders(args, layout, args.activation or "softmax")
        cases = probs_cases(files, args.probs, args.labels)
        return Job(cases, decoders, layout, {"source": f"probability maps in {args.probs}", **config})
    if files is None:
        raise ValueError("--labels is used with --probs; to run a network give --data DIR --layout NAME")
    from . import inference

    if args.bundle is not None:
        predictor, decoders = _bundle_predictor(args, layout)
        source = f"MONAI bundle {args.bundle} on {args.data}"
    elif args.checkpoint is not None:
        check_roi_size(args.roi_size, files)
        activation = args.activation or "softmax"
        decoders = make_decoders(args, layout, activation)
        network = inference.load_network(args.checkpoint, args.network_config)
        pre = inference.preprocessing(args.intensity_range, args.spacing, args.orientation)
        inferer = inference.sliding_window(args.roi_size, args.sw_batch_size, args.overlap)
        predictor = inference.Predictor(network, pre, inferer, args.device, activation)
        source = f"checkpoint {args.checkpoint} on {args.data}"
    else:
        raise ValueError("--data needs a network (--bundle DIR or --checkpoint FILE) or --probs DIR")
    return Job(inference.network_cases(files, predictor), decoders, layout, {"source": source, **config})


def run_distributed(cases: list[Case], run: Callable[[list[Case]], list[CaseResult]]) -> list[CaseResult] | None:
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


def _prepare(args: argparse.Namespace, rank: int, distributed: bool) -> tuple[Job | None, str | None]:
    """Every check before inference, on every rank; the first error of any rank, so that all ranks stop."""
    job, error = None, None
    try:
        check_device(args.device)
        job = plan_job(args, resolve(args), distributed)
        if rank == 0:  # one rank creates and probes the folder; the others would see its probe file
            inputs = {name: getattr(args, name) for name in ("data", "probs", "labels", "bundle")}
            if args.fit_plan is not None:
                check_plan_file(args.fit_plan, args.overwrite, inputs)
            prepare_out_dir(args.out, args.overwrite, inputs)
    except USAGE_ERRORS as err:
        error = error_message(err, typed=False)
    if distributed:
        import torch.distributed as dist

        errors: list[str | None] = [None] * dist.get_world_size()
        dist.all_gather_object(errors, error)
        error = next((e for e in errors if e), None)
    return job, error


def fit(args: argparse.Namespace, job: Job, results: list[CaseResult], report: dict[str, Any], progress: bool) -> int:
    """Fit the plan on the scored cases (second pass), write it and add the fit to ``report``; the exit status."""
    try:
        fitted = job.fitter.fit(job.cases, results, progress, job.config["source"])
    except ValueError as err:
        print(f"rankseg-eval: error: no plan written: {err}", file=sys.stderr)
        return 1
    fitted.plan.save(args.fit_plan)
    report["plan_fit"] = {"plan_file": str(args.fit_plan), **fitted.report}
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rankseg-eval`` and ``python -m rankseg_eval``."""
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed:
        import torch.distributed as dist

        use_cuda = args.device.startswith("cuda") and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            args.device = f"cuda:{torch.cuda.current_device()}"
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = torch.distributed.get_rank() if distributed else 0
    try:
        job, error = _prepare(args, rank, distributed)
        if error is not None:
            if rank == 0:
                print(f"rankseg-eval: error: {error}", file=sys.stderr)
            return 2
        progress = not args.no_progress and rank == 0 and sys.stderr.isatty()
        regions = job.layout.regions if job.layout else None
        observe = job.fitter.observe if job.fitter is not None else None

        def run(subset: list[Case]) -> list[CaseResult]:
            try:
                return evaluate(subset, job.decoders, regions, progress, observe)
            except RunError as err:  # reaches rank 0 as a result, so that no rank waits for this one
                return [CaseResult(subset[0].case_id, error=str(err), stats=err)]

        results = run_distributed(job.cases, run) if distributed else run(job.cases)
        if results is None:
            return 0
        stop = next((r.stats for r in results if isinstance(r.stats, RunError)), None)
        if stop is not None:
            print(f"rankseg-eval: error: {stop}", file=sys.stderr)
            return 2
        report = build_report(results, job.decoders, job.layout, job.config)
        status = 0 if report["cases"] else 1
        if job.fitter is not None:
            status = max(status, fit(args, job, results, report, progress))
        print(terminal_table(report))
        paths = write_reports(args.out, report, results)
        print(f"wrote {', '.join(str(p) for p in paths)} in {time.perf_counter() - start:.1f}s")
        return status
    finally:
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
