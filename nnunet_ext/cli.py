"""``rankseg-nnunet``: decode the probabilities nnU-Net saved (``nnUNetv2_predict --save_probabilities``) with
RankSEG instead of argmax, into a folder of segmentations that nnU-Net's own tools take as theirs.

Several input folders are averaged as nnUNetv2_ensemble averages them. Files are written with nnU-Net's own
writer and the case's properties, so geometry and dtype are nnU-Net's; dataset.json and plans.json are copied
along. With --labels, the paired report of rankseg-eval (nnU-Net's decoding vs RankSEG) is written to
OUTPUT/report; with --fit-plan also a plan (one decision per label or region, cross-validated on these cases) that
--plan decodes with.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pickle
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rankseg_eval import Case, CaseError, CaseResult, build_report, terminal_table, write_reports
from rankseg_eval.cases import error_message
from rankseg_eval.cli import (
    USAGE_ERRORS,
    ArgumentParser,
    HelpFormatter,
    add_plan_options,
    add_rankseg_options,
    check_plan_file,
    rankseg_options,
)
from rankseg_eval.decoding import PAIRED, Decoders
from rankseg_eval.layouts import Layout
from rankseg_eval.plans import PlanFitter
from rankseg_eval.scoring import evaluate_case
from rankseg_plugins import Plan
from rankseg_plugins.options import option_specs

from .decode import DECODERS, Decoder
from .evaluation import (
    NNUNET_METRICS,
    ReportDecoders,
    case_data,
    layout,
    markdown_section,
    nnunet_scores,
    nnunet_summary,
)
from .folders import Predictions, find_predictions
from .output import check_output, copy_dataset_files, write_segmentation
from .pickles import load_postprocessing

#: Workers decode cases in parallel threads (torch, NumPy's decompression and the writers release the GIL);
#: each holds one case's probabilities in memory.
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)
ERRORS = (*USAGE_ERRORS, pickle.UnpicklingError, EOFError)

EPILOG = """\
examples:
  rankseg-nnunet -i pred -o pred_rankseg                        # RankSEG (Dice), presence rule on
  rankseg-nnunet -i fold0 fold1 fold2 -o ens_rankseg --metric iou  # ensemble, then RankSEG (IoU)
  rankseg-nnunet -i pred -o pred_rankseg -pp postprocessing.pkl --labels labelsTr   # + postprocessing + report
  rankseg-nnunet -i pred -o pred_argmax --decoder argmax        # nnU-Net's own decoding, voxel for voxel
  rankseg-nnunet -i val -o val_rankseg --labels labelsTr --fit-plan plan.json   # fit a plan on validation cases
  rankseg-nnunet -i pred -o pred_plan --plan plan.json          # decode with it

docs/nnunet.md has the workflow, label- and region-based datasets, and how the report scores empty cases.
"""


def _regions(text: str) -> list[list[int]]:
    try:
        value = json.loads(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not JSON ({err}); write e.g. '[[1, 2], [2]]'") from err
    if not isinstance(value, list) or not all(isinstance(r, list) for r in value):
        raise argparse.ArgumentTypeError(f"expected a list of label lists such as '[[1, 2], [2]]', got {text}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return int(text)


def build_parser() -> ArgumentParser:
    """The command-line interface; the RankSEG options come from :func:`rankseg_plugins.options.option_specs`."""
    p = ArgumentParser(prog="rankseg-nnunet", description=__doc__.replace("``", ""), epilog=EPILOG,
                       formatter_class=HelpFormatter)
    io = p.add_argument_group("input and output")
    io.add_argument("-i", "--input", type=Path, nargs="+", required=True, metavar="FOLDER",
                    help="nnU-Net prediction folder(s) with <case>.npz and <case>.pkl (--save_probabilities); "
                    "several are averaged as nnUNetv2_ensemble does")
    io.add_argument("-o", "--output", type=Path, required=True, metavar="FOLDER",
                    help="folder for the segmentations, dataset.json, plans.json (and report/); new or empty unless "
                    "--overwrite, never inside an input folder")
    io.add_argument("--plans", type=Path, metavar="FILE",
                    help="plans.json to use instead of the first input folder's (nnUNetv2_ensemble writes none)")
    io.add_argument("--dataset-json", type=Path, metavar="FILE",
                    help="dataset.json to use instead of the first input folder's")
    io.add_argument("--overwrite", action="store_true",
                    help="write into a non-empty output folder, replacing the files rankseg-nnunet writes")
    dec = p.add_argument_group("decoding")
    dec.add_argument("--decoder", choices=DECODERS, default="rankseg",
                     help="rankseg, or argmax: nnU-Net's own decoding (argmax, or p > 0.5 per region in "
                     "regions_class_order), which reproduces nnU-Net's segmentation files")
    metric = option_specs()["metric"]
    dec.add_argument("--metric", choices=metric.choices, default=metric.default, help=metric.help)
    add_rankseg_options(dec)
    dec.add_argument("--regions", type=_regions, metavar="JSON",
                     help="label-based datasets only: decode these nested regions instead of each class, e.g. "
                     "'[[1, 2], [2]]' for liver {1, 2} and tumour {2} (region-based datasets use dataset.json's)")
    dec.add_argument("-pp", "--postprocessing", type=Path, metavar="PKL",
                     help="nnU-Net's postprocessing.pkl, applied after decoding as nnUNetv2_apply_postprocessing does")
    ev = p.add_argument_group("evaluation")
    ev.add_argument("--labels", type=Path, metavar="DIR",
                    help="ground truth named <case><file_ending> (nnU-Net's labelsTr): also write the paired report "
                    "(nnU-Net's decoding vs RankSEG) to OUTPUT/report")
    add_plan_options(p.add_argument_group("plans (one decision per label or region; --fit-plan needs --labels)"),
                     "decode with this RankSEG plan (from --fit-plan; not nnU-Net's plans.json): one decision per "
                     "label or region, with its own RankSEG options")
    run = p.add_argument_group("run")
    run.add_argument("-np", "--workers", type=_positive_int, default=DEFAULT_WORKERS,
                     help="cases decoded in parallel (threads; each holds one case's probabilities in memory)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@dataclass
class Job:
    """What a run does: the cases, how they are decoded and, with ``--labels``, evaluated."""

    predictions: Predictions
    decoder: Decoder
    out: Path
    labels: Path | None = None
    report: ReportDecoders | None = None
    layout: Layout | None = None
    #: The report's method whose label maps are the written ones (``None``: decode them separately).
    written: str | None = None
    #: With ``--fit-plan``: the fitter, which observes every scored case.
    fitter: PlanFitter | None = None


@dataclass
class Outcome:
    """One case: the file written, or the error; with ``--labels`` its scores (or why it was not scored)."""

    case_id: str
    error: str | None = None
    result: CaseResult | None = None
    nnunet: dict[str, Any] | None = None


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {"metric": args.metric, **rankseg_options(args), "regions": args.regions}


def _given(args: argparse.Namespace) -> list[str]:
    """The RankSEG option flags given with a value other than the default."""
    specs = option_specs()
    return [f"--{name.replace('_', '-')}" for name, v in _options(args).items() if v != specs[name].default]


def _check_argmax(args: argparse.Namespace) -> None:
    if _given(args):
        raise ValueError(f"--decoder argmax is nnU-Net's own decoding and takes no RankSEG options; drop "
                         f"{', '.join(_given(args))}")
    if args.plan is not None:
        raise ValueError("--plan decodes with the plan's decisions, --decoder argmax with nnU-Net's: give one of them")


def _plan(args: argparse.Namespace) -> Plan | None:
    """``--plan``'s plan; ``ValueError`` when the command line sets what the plan carries."""
    if args.plan is None:
        return None
    if args.fit_plan is not None:
        raise ValueError("--fit-plan fits a plan and --plan decodes with one: give one of them")
    if _given(args):
        raise ValueError(f"--plan carries its own RankSEG options; drop {', '.join(_given(args))}")
    return Plan.load(args.plan)


def _fitter(args: argparse.Namespace, job: Job) -> PlanFitter:
    """``--fit-plan``'s fitter: RankSEG's decoders as the plan will run them (sigmoid channels for a region-based
    dataset), with the command line's options; ``ValueError`` for what does not fit."""
    if job.labels is None:
        raise ValueError("--fit-plan scores every candidate on the cases: give their ground truth with --labels")
    if job.decoder.postprocessing is not None:
        raise ValueError("--fit-plan fits the decoding alone (nnU-Net chose postprocessing.pkl on its own decoding): "
                         "drop -pp here, then decode with --plan and -pp")
    if len(job.predictions.cases) < 2:
        raise ValueError("--fit-plan cross-validates over cases and needs at least 2; got "
                         f"{len(job.predictions.cases)}")
    sigmoid = job.predictions.dataset.label_manager.has_regions
    by_region = job.layout.regions if sigmoid or args.regions is not None else None
    decoders = Decoders(by_region, "sigmoid" if sigmoid else "softmax", **rankseg_options(args))
    return PlanFitter(decoders, job.layout, args.folds, args.aggregate, args.fit_metric)


def _check_plan_file(args: argparse.Namespace) -> None:
    """``check_plan_file`` for every input folder, and no name that rankseg-nnunet writes itself."""
    for folder in args.input:
        check_plan_file(args.fit_plan, args.overwrite, {"input": folder, "labels": args.labels})
    ours = [args.output / name for name in ("dataset.json", "plans.json", "report")]
    if any(args.fit_plan.resolve() == p.resolve() or args.fit_plan.resolve().is_relative_to(p.resolve())
           for p in ours):
        raise ValueError(f"--fit-plan {args.fit_plan}: rankseg-nnunet writes that file itself; name it e.g. "
                         f"{args.output / 'plan.json'}")


def _check_labels(labels: Path, predictions: Predictions) -> None:
    dataset = predictions.dataset
    if not labels.is_dir():
        raise ValueError(f"--labels {labels} is not a folder")
    if dataset.label_manager.has_ignore_label:
        raise ValueError(f"{dataset.dataset_json_file} has an ignore label; rankseg-eval's scores have no ignore "
                         "mask, so they would count ignored voxels as background: evaluate with "
                         "nnUNetv2_evaluate_folder instead")
    ending = dataset.file_ending
    if not any((labels / f"{case}{ending}").is_file() for case in predictions.cases):
        raise ValueError(f"--labels {labels} holds none of the {len(predictions.cases)} cases' label files (e.g. "
                         f"{predictions.cases[0]}{ending}); nnU-Net's labelsTr names them <case>{ending}")


def prepare(args: argparse.Namespace) -> Job:
    """Every check before any work, then the output folder; ``ValueError`` (and friends) for what does not fit."""
    if args.decoder == "argmax":
        _check_argmax(args)
    plan = _plan(args)
    predictions = find_predictions(args.input, args.dataset_json, args.plans)
    pp = load_postprocessing(args.postprocessing) if args.postprocessing else None
    lm = predictions.dataset.label_manager
    options = _options(args) if args.decoder == "rankseg" and plan is None else {}
    decoder = Decoder(lm, args.decoder, pp, plan=plan, **options)
    job = Job(predictions, decoder, args.output)
    regions = args.regions
    if plan is not None and not lm.has_regions and plan.options.regions is not None:
        regions = [list(r) for r in plan.options.regions]  # scored as the plan decodes
    if args.labels is not None:
        _check_labels(args.labels, predictions)
        job.labels, job.layout = args.labels, layout(predictions.dataset, regions)
        report_options = {"plan": plan} if plan is not None else {"regions": regions, **rankseg_options(args)}
        job.report = ReportDecoders(predictions.dataset, job.layout.regions, pp, **report_options)
        job.written = (job.report.baseline if args.decoder == "argmax" else
                       job.report.paired["dice"] if plan is not None else PAIRED.get(args.metric))
    if args.fit_plan is not None:
        job.fitter = _fitter(args, job)
    check_output(args.output, [*args.input, *([args.labels] if args.labels else [])], args.overwrite)
    if args.fit_plan is not None:
        _check_plan_file(args)
    copy_dataset_files(predictions.dataset, args.output)
    return job


def process(case: str, job: Job) -> Outcome:
    """Load, decode (and evaluate) and write one case; any failure becomes the outcome's error."""
    outcome = Outcome(case)
    try:
        probs, properties = job.predictions.load(case)
        seg = None
        if job.report is not None:
            seg = _evaluate(case, probs, properties, job, outcome)
        if seg is None:
            seg = job.decoder(probs)
        write_segmentation(seg, properties, job.predictions.dataset, job.out, case)
    except Exception as err:  # one broken case must not stop the others
        outcome.error = error_message(err)
    return outcome


def _evaluate(case: str, probs: Any, properties: dict[str, Any], job: Job, outcome: Outcome) -> Any:
    """Score the case into ``outcome``; the label map to write when the report decoded it."""
    loaded = []

    def load() -> Any:
        loaded.append(_case_data(job, case, probs, properties))
        return loaded[0]

    decoders = job.report.for_case()
    observe = job.fitter.observe if job.fitter is not None else None
    outcome.result = evaluate_case(Case(case, load), decoders, job.layout.regions, observe)
    if decoders.labels is None:
        return None
    lm = job.predictions.dataset.label_manager
    keys = lm.foreground_regions if lm.has_regions else lm.foreground_labels
    outcome.nnunet = nnunet_scores(decoders.labels, loaded[0].label, keys)
    return decoders.labels[job.written].numpy() if job.written else None


def run(job: Job, workers: int, progress: bool) -> list[Outcome]:
    """Process every case on ``workers`` threads; outcomes in case order. Only the report's largest-disagreement
    preview is kept, so memory stays flat."""
    from tqdm import tqdm

    cases = job.predictions.cases
    threads = max(1, torch.get_num_threads() // workers)  # torch's thread count is per calling thread
    order = {case: i for i, case in enumerate(cases)}
    outcomes: dict[str, Outcome] = {}
    shown: CaseResult | None = None

    def rank(r: CaseResult) -> tuple[int, int]:  # the first case (in case order) wins a tie, as in rankseg-eval
        return r.preview.disagreement, -order[r.case_id]

    with ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(threads,)) as pool, \
            tqdm(total=len(cases), unit="case", desc="rankseg-nnunet", disable=not progress) as bar:
        for future in as_completed([pool.submit(process, case, job) for case in cases]):
            outcome = future.result()
            outcomes[outcome.case_id] = outcome
            result = outcome.result
            if result is not None and result.preview is not None:
                if shown is None or rank(result) > rank(shown):
                    shown, result = result, shown
                if result is not None:
                    result.preview = None
            bar.update()
    return [outcomes[case] for case in cases]


def _case_data(job: Job, case: str, probs: Any = None, properties: dict[str, Any] | None = None) -> Any:
    """rankseg-eval's data of ``case``: its probabilities (loaded unless given) and its label file."""
    label_file = job.labels / f"{case}{job.predictions.dataset.file_ending}"
    if not label_file.is_file():
        raise CaseError(f"no label file {label_file}")
    if probs is None:
        probs, properties = job.predictions.load(case)
    return case_data(probs, job.predictions.dataset, label_file, properties)


def _source(job: Job) -> str:
    folders = ", ".join(map(str, job.predictions.folders))
    return f"nnU-Net probabilities in {folders}" + (" (averaged)" if len(job.predictions.folders) > 1 else "")


def fit(job: Job, outcomes: list[Outcome], args: argparse.Namespace, progress: bool) -> dict[str, Any] | None:
    """``--fit-plan``'s second pass (each scored case loaded again), the choice, the plan file written; the fit's
    report, or ``None`` when no plan could be fitted (said on stderr)."""
    cases = [Case(case, functools.partial(_case_data, job, case)) for case in job.predictions.cases]
    results = [o.result or CaseResult(o.case_id, error=o.error) for o in outcomes]
    try:
        fitted = job.fitter.fit(cases, results, progress, _source(job))
    except ValueError as err:
        print(f"rankseg-nnunet: error: no plan written: {err}", file=sys.stderr)
        return None
    fitted.plan.save(args.fit_plan)
    return {"plan_file": str(args.fit_plan), **fitted.report}


def report(job: Job, outcomes: list[Outcome], args: argparse.Namespace, plan_fit: dict[str, Any] | None) -> None:
    """Write OUTPUT/report with rankseg-eval's report (and the plan fit), plus the means in nnU-Net's convention;
    print the tables."""
    results = [o.result or CaseResult(o.case_id, error=o.error) for o in outcomes]
    config = {"source": _source(job), "labels": str(job.labels),
              "arguments": json.loads(json.dumps(vars(args), default=str))}
    built = build_report(results, job.report, job.layout, config)
    built["tool"] = "rankseg-nnunet"
    if plan_fit is not None:
        built["plan_fit"] = plan_fit
    summary = nnunet_summary([o.nnunet for o in outcomes if o.nnunet], job.predictions.dataset,
                             list(job.report.methods))
    built["nnunet_convention"] = summary
    paths = write_reports(job.out / "report", built, results)
    markdown = job.out / "report" / "report.md"
    markdown.write_text(markdown.read_text() + markdown_section(summary))
    print(terminal_table(built))
    for metric in NNUNET_METRICS:
        means = ", ".join(f"{m} {'n/a' if v[metric] is None else format(v[metric], '.4f')}"
                          for m, v in summary["foreground_mean"].items())
        print(f"nnU-Net's convention (summary.json: empty truth and prediction left out), foreground mean {metric}: "
              f"{means}")
    print(f"report: {', '.join(map(str, paths))}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``rankseg-nnunet`` and ``python -m nnunet_ext``."""
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        job = prepare(args)
    except ERRORS as err:
        print(f"rankseg-nnunet: error: {error_message(err, typed=False)}", file=sys.stderr)
        return 2
    progress = not args.no_progress and sys.stderr.isatty()
    outcomes = run(job, args.workers, progress)
    failed = [o for o in outcomes if o.error]
    for o in failed:
        print(f"rankseg-nnunet: {o.case_id} not written: {o.error}", file=sys.stderr)
    plan_fit = fit(job, outcomes, args, progress) if job.fitter is not None else None
    if job.report is not None:
        report(job, outcomes, args, plan_fit)
    print(f"wrote {len(outcomes) - len(failed)} of {len(outcomes)} segmentations to {args.output} "
          f"({job.decoder.describe()}) in {time.perf_counter() - start:.1f}s")
    return 1 if failed or (job.fitter is not None and plan_fit is None) else 0
