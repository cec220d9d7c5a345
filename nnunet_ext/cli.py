"""``rankseg-nnunet``: decode the probabilities nnU-Net saved (``nnUNetv2_predict --save_probabilities``) with
RankSEG instead of argmax, into a folder of segmentations that nnU-Net's own tools take as theirs.

Several input folders are averaged as nnUNetv2_ensemble averages them. Files are written with nnU-Net's own
writer and the case's properties, so geometry and dtype are nnU-Net's; dataset.json and plans.json are copied
along. With --labels, the paired report of rankseg-eval (nnU-Net's decoding vs RankSEG) is written to OUTPUT/report.
"""

from __future__ import annotations

import argparse
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
from rankseg_eval.cli import USAGE_ERRORS, ArgumentParser, HelpFormatter, add_rankseg_options, rankseg_options
from rankseg_eval.decoding import PAIRED
from rankseg_eval.layouts import Layout
from rankseg_eval.scoring import evaluate_case
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


@dataclass
class Outcome:
    """One case: the file written, or the error; with ``--labels`` its scores (or why it was not scored)."""

    case_id: str
    error: str | None = None
    result: CaseResult | None = None
    nnunet: dict[str, Any] | None = None


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {"metric": args.metric, **rankseg_options(args), "regions": args.regions}


def _check_argmax(args: argparse.Namespace) -> None:
    specs = option_specs()
    given = [f"--{name.replace('_', '-')}" for name, v in _options(args).items() if v != specs[name].default]
    if given:
        raise ValueError(f"--decoder argmax is nnU-Net's own decoding and takes no RankSEG options; drop "
                         f"{', '.join(given)}")


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
    predictions = find_predictions(args.input, args.dataset_json, args.plans)
    pp = load_postprocessing(args.postprocessing) if args.postprocessing else None
    lm = predictions.dataset.label_manager
    options = _options(args) if args.decoder == "rankseg" else {}
    decoder = Decoder(lm, args.decoder, pp, **options)
    job = Job(predictions, decoder, args.output)
    if args.labels is not None:
        _check_labels(args.labels, predictions)
        job.labels, job.layout = args.labels, layout(predictions.dataset, args.regions)
        job.report = ReportDecoders(predictions.dataset, job.layout.regions, pp, regions=args.regions,
                                    **rankseg_options(args))
        job.written = job.report.baseline if args.decoder == "argmax" else PAIRED.get(args.metric)
    check_output(args.output, [*args.input, *([args.labels] if args.labels else [])], args.overwrite)
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
    dataset = job.predictions.dataset
    label_file = job.labels / f"{case}{dataset.file_ending}"
    loaded = []

    def load() -> Any:
        if not label_file.is_file():
            raise CaseError(f"no label file {label_file}")
        loaded.append(case_data(probs, dataset, label_file, properties))
        return loaded[0]

    decoders = job.report.for_case()
    outcome.result = evaluate_case(Case(case, load), decoders, job.layout.regions)
    if decoders.labels is None:
        return None
    lm = dataset.label_manager
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


def report(job: Job, outcomes: list[Outcome], args: argparse.Namespace) -> None:
    """Write OUTPUT/report with rankseg-eval's report, plus the means in nnU-Net's convention; print the tables."""
    results = [o.result or CaseResult(o.case_id, error=o.error) for o in outcomes]
    folders = ", ".join(map(str, job.predictions.folders))
    source = f"nnU-Net probabilities in {folders}" + (" (averaged)" if len(job.predictions.folders) > 1 else "")
    config = {"source": source, "labels": str(job.labels), "arguments": json.loads(json.dumps(vars(args), default=str))}
    built = build_report(results, job.report, job.layout, config)
    built["tool"] = "rankseg-nnunet"
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
    outcomes = run(job, args.workers, not args.no_progress and sys.stderr.isatty())
    failed = [o for o in outcomes if o.error]
    for o in failed:
        print(f"rankseg-nnunet: {o.case_id} not written: {o.error}", file=sys.stderr)
    if job.report is not None:
        report(job, outcomes, args)
    print(f"wrote {len(outcomes) - len(failed)} of {len(outcomes)} segmentations to {args.output} "
          f"({job.decoder.describe()}) in {time.perf_counter() - start:.1f}s")
    return 1 if failed else 0
