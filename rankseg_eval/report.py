"""Report files (JSON, CSV, Markdown, PNG figure), the terminal summary, and the output folder's checks.

A run never mixes with an earlier one: :func:`prepare_out_dir` refuses a folder that already holds files unless
``overwrite``, and :func:`write_reports` writes every file of :data:`REPORT_FILES` or removes a stale one (no
figure without a scored case, no reliability diagram without a plan fit). Other files in the folder are left alone.
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .decoding import METRICS, decision_text, options_text
from .scoring import CaseResult

REPORT_FILES = ("report.json", "cases.csv", "figure.png", "reliability.png", "report.md")


def prepare_out_dir(out: Path, overwrite: bool = False, inputs: Mapping[str, Path | None] | None = None) -> None:
    """Check ``out`` before any work and create it: outside every input folder, a writable folder, and empty
    unless ``overwrite``. Raise ``ValueError`` saying what to change."""
    resolved = out.resolve()
    for name, source in (inputs or {}).items():
        if source is not None and resolved.is_relative_to(source.resolve()):
            raise ValueError(f"--out {out} is inside --{name} {source}; inputs are never written to, pick another")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the reports")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise ValueError(f"--out {out} is not a writable folder ({err.strerror or err}); pick another") from err
    held = sorted(p.name for p in out.iterdir())
    if held and not overwrite:
        shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise ValueError(
            f"--out {out} already holds files ({shown}); pass --overwrite to replace rankseg-eval's report files "
            "there, or pick a new folder"
        )


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def summary_rows(report: dict[str, Any]) -> list[list[str]]:
    """Rows (with header) of the summary table shared by the terminal and Markdown output."""
    rows = [["region", "metric", "n", report["baseline"], report["compared"], "delta pp", "better",
             "same", "worse", "sign p", "Wilcoxon p"]]
    for region, per_metric in report["summary"].items():
        for metric, s in per_metric.items():
            rows.append([
                region, metric, str(s["n"]), f"{s['mean'][report['baseline']]:.4f}", f"{s['mean'][s['rankseg']]:.4f}",
                f"{s['delta_pp']:+.2f}", str(s["improved"]), str(s["stable"]), str(s["worsened"]),
                _p(s["sign_test_p"]), _p(s["wilcoxon_p"]),
            ])
    return rows


def decoding_lines(report: dict[str, Any]) -> list[str]:
    """Where the probabilities came from, the baseline, RankSEG's decoding and its options."""
    decoding = report["decoding"]
    return [
        f"source: {report['config'].get('source', 'not recorded')}",
        f"baseline ({report['baseline']}): {decoding['baseline']}",
        f"{decoding['rankseg']}; options: {options_text(decoding)}",
    ]


def _columns(rows: list[list[str]]) -> list[str]:
    """Rows as aligned text: the first two columns to the left, the others to the right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
            for row in rows]


def _interval(values: list[float]) -> str:
    return f"[{values[0]:+.2f}, {values[1]:+.2f}]"


def fit_rows(fit: dict[str, Any]) -> list[list[str]]:
    """Rows (with header) of the plan fit's table: per target and candidate, the decision, the held-out mean, the
    cross-validated gain over argmax with its interval, and the choice."""
    level = f"{fit['interval']['level']:.0%}"
    rows = [["target", "candidate", "decision", f"held-out {fit['metric']}", "gain pp", f"{level} interval",
             "chosen"]]
    for target, entry in fit["targets"].items():
        for name, c in entry["candidates"].items():
            rows.append([target, name, decision_text(c["decision"]), f"{c['mean']:.4f}",
                         f"{c['gain_pp']:+.2f}" if "gain_pp" in c else "", _interval(c["interval_pp"]) if
                         "interval_pp" in c else "", "<-" if name == entry["choice"] else ""])
    return rows


def fit_lines(fit: dict[str, Any]) -> list[str]:
    """How the plan was fitted, and per target its decision and why."""
    return [
        f"plan fitted on {fit['cases']} cases, {fit['folds']}-fold cross-validation, {fit['metric']} "
        f"{fit['convention']}; {fit['rule']}; {fit['context']}",
        *([f"caution: {fit['caution']}"] if "caution" in fit else []),
        *[f"{target}: {decision_text(entry['decision'])}, because {entry['reason']}"
          for target, entry in fit["targets"].items()],
        f"plan: {', '.join(f'{t}: {d}' for t, d in fit['decisions'].items())}",
    ]


def terminal_table(report: dict[str, Any]) -> str:
    """The decoding, the summary table, timings and skipped cases (and a plan fit) as plain text."""
    table = _columns(summary_rows(report))
    lines = decoding_lines(report) + [table[0], "-" * len(table[0])] + table[1:]
    if report["timing"]:
        lines.append("decoding time per case: " + ", ".join(
            f"{m} {t['mean_s'] * 1000:.1f} ms" for m, t in report["timing"].items()))
    lines.append(f"cases scored: {len(report['cases'])}, skipped: {len(report['skipped'])}")
    lines += [f"  skipped {s['case_id']}: {s['reason']}" for s in report["skipped"]]
    if "plan_fit" in report:
        fit = _columns(fit_rows(report["plan_fit"]))
        lines += ["", fit[0], "-" * len(fit[0]), *fit[1:], *fit_lines(report["plan_fit"]),
                  f"wrote the plan to {report['plan_fit']['plan_file']}"]
    return "\n".join(lines)


def _number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _delta(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def write_csv(path: Path, report: dict[str, Any]) -> None:
    """One row per case and region: every method's Dice and IoU, paired deltas, decoding seconds (empty: not
    scored)."""
    methods = report["methods"]
    fields = ["case_id", "region"] + [f"{x}_{m}" for x in METRICS for m in methods]
    fields += [f"delta_{x}_pp" for x in METRICS] + [f"seconds_{m}" for m in methods]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(fields)
        for case in report["cases"]:
            for region, d in case["delta_pp"].items():
                writer.writerow(
                    [case["case_id"], region]
                    + [_number(case["scores"][m][region][x], 6) for x in METRICS for m in methods]
                    + [_number(d[x], 4) for x in METRICS]
                    + [_number(case["decode_seconds"][m], 6) for m in methods]
                )


def _table(rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])] + ["| " + " | ".join(r) + " |"
                                                                             for r in rows[1:]]


def fit_markdown(fit: dict[str, Any], figure: str | None) -> list[str]:
    """The plan fit's section of the Markdown report."""
    out = ["", "## Plan fit", "", f"Plan file: `{fit['plan_file']}`.", ""]
    out += [f"- {line}" for line in fit_lines(fit)]
    out += ["", "Gains are over argmax, in percentage points, on held-out folds; the interval is a "
            f"{fit['interval']['level']:.0%} bootstrap percentile interval over cases ({fit['interval']['resamples']} "
            "resamples).", "", *_table(fit_rows(fit))]
    if figure:
        out += ["", f"![reliability before and after temperature scaling]({figure})"]
    return out


def markdown(report: dict[str, Any], figure: str | None, reliability: str | None = None) -> str:
    """The Markdown report."""
    rows = summary_rows(report)
    base = report["baseline"]
    compared, paired = report["compared"], report["paired"]
    lines = decoding_lines(report)
    judged = ("The plan is judged on both metrics." if compared == "plan" else "RankSEG is the Dice objective for the "
              "Dice rows and the IoU objective for the IoU rows.")
    out = [
        f"# rankseg-eval: {base} vs {compared}",
        "",
        *[f"- {line[0].upper()}{line[1:]}" for line in lines],
        "",
        f"Averaging: {report['averaging']}. {judged} Better / same / worse: paired delta "
        f"above +{report['stable_within_pp']:g}, within +-{report['stable_within_pp']:g}, below "
        f"-{report['stable_within_pp']:g} percentage points. p: two-sided exact sign test and Wilcoxon signed-rank "
        "test over cases.",
        "",
        "## Summary",
        "",
        *_table(rows),
    ]
    if report["timing"]:
        out += ["", "## Decoding time per case", "", "| method | mean (ms) | total (s) |", "|---|---|---|"]
        out += [f"| {m} | {t['mean_s'] * 1000:.1f} | {t['total_s']:.2f} |" for m, t in report["timing"].items()]
    out += ["", f"## Skipped cases ({len(report['skipped'])})", ""]
    out += [f"- `{s['case_id']}`: {s['reason']}" for s in report["skipped"]] or ["None."]
    which = "the plan" if compared == "plan" else "Dice: RankSEG-Dice; IoU: RankSEG-IoU"
    out += ["", f"## Per case ({which})", "",
            f"| case | region | Dice {base} | Dice {compared} | delta pp | IoU {base} | IoU {compared} | delta pp |",
            "|---|---|---|---|---|---|---|---|"]
    for case in report["cases"]:
        s = case["scores"]
        for region, d in case["delta_pp"].items():
            cells = [_score(s[base][region]["dice"]), _score(s[paired["dice"]][region]["dice"]), _delta(d["dice"]),
                     _score(s[base][region]["iou"]), _score(s[paired["iou"]][region]["iou"]), _delta(d["iou"])]
            out.append(f"| {case['case_id']} | {region} | " + " | ".join(cells) + " |")
    if figure:
        out += ["", "## Figure", "", f"![{base} vs {compared}]({figure})"]
    if "plan_fit" in report:
        out += fit_markdown(report["plan_fit"], reliability)
    return "\n".join(out) + "\n"


def write_reports(out_dir: Path, report: dict[str, Any], results: list[CaseResult]) -> list[Path]:
    """Write ``report.json``, ``cases.csv``, ``figure.png`` (when a case was scored), ``reliability.png`` (with a
    plan fit, ``report["plan_fit"]``) and ``report.md``.

    Check ``out_dir`` first with :func:`prepare_out_dir`; a stale figure from an earlier run is removed.
    """
    from .figure import figure, reliability_figure

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in REPORT_FILES}
    paths["report.json"].write_text(json.dumps(report, indent=2) + "\n")
    write_csv(paths["cases.csv"], report)
    if not figure(paths["figure.png"], report, results):
        paths.pop("figure.png").unlink(missing_ok=True)
    if "plan_fit" not in report or not reliability_figure(paths["reliability.png"], report["plan_fit"]):
        paths.pop("reliability.png").unlink(missing_ok=True)
    paths["report.md"].write_text(markdown(report, "figure.png" if "figure.png" in paths else None,
                                           "reliability.png" if "reliability.png" in paths else None))
    return list(paths.values())
