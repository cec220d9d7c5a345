"""Report files (JSON, CSV, Markdown, PNG figure), the terminal summary, and the output folder's checks.

A run never mixes with an earlier one: :func:`prepare_out_dir` refuses a folder that already holds files unless
``overwrite``, and :func:`write_reports` writes every file of :data:`REPORT_FILES` or removes a stale one (no
figure without a scored case). Other files in the folder are left alone.
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .decoding import METRICS, options_text
from .scoring import CaseResult

REPORT_FILES = ("report.json", "cases.csv", "figure.png", "report.md")


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
    rows = [["region", "metric", "n", report["baseline"], "RankSEG", "delta pp", "better", "same", "worse", "sign p",
             "Wilcoxon p"]]
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


def terminal_table(report: dict[str, Any]) -> str:
    """The decoding, the summary table, timings and skipped cases as plain text."""
    rows = summary_rows(report)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines = decoding_lines(report) + [table[0], "-" * len(table[0])] + table[1:]
    if report["timing"]:
        lines.append("decoding time per case: " + ", ".join(
            f"{m} {t['mean_s'] * 1000:.1f} ms" for m, t in report["timing"].items()))
    lines.append(f"cases scored: {len(report['cases'])}, skipped: {len(report['skipped'])}")
    lines += [f"  skipped {s['case_id']}: {s['reason']}" for s in report["skipped"]]
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


def markdown(report: dict[str, Any], figure: str | None) -> str:
    """The Markdown report."""
    rows = summary_rows(report)
    base = report["baseline"]
    lines = decoding_lines(report)
    out = [
        f"# rankseg-eval: {base} vs RankSEG",
        "",
        *[f"- {line[0].upper()}{line[1:]}" for line in lines],
        "",
        f"Averaging: {report['averaging']}. RankSEG is the Dice "
        "objective for the Dice rows and the IoU objective for the IoU rows. Better / same / worse: paired delta "
        f"above +{report['stable_within_pp']:g}, within +-{report['stable_within_pp']:g}, below "
        f"-{report['stable_within_pp']:g} percentage points. p: two-sided exact sign test and Wilcoxon signed-rank "
        "test over cases.",
        "",
        "## Summary",
        "",
        "| " + " | ".join(rows[0]) + " |",
        "|" + "---|" * len(rows[0]),
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    if report["timing"]:
        out += ["", "## Decoding time per case", "", "| method | mean (ms) | total (s) |", "|---|---|---|"]
        out += [f"| {m} | {t['mean_s'] * 1000:.1f} | {t['total_s']:.2f} |" for m, t in report["timing"].items()]
    out += ["", f"## Skipped cases ({len(report['skipped'])})", ""]
    out += [f"- `{s['case_id']}`: {s['reason']}" for s in report["skipped"]] or ["None."]
    out += ["", "## Per case (Dice: RankSEG-Dice; IoU: RankSEG-IoU)", "",
            f"| case | region | Dice {base} | Dice RankSEG | delta pp | IoU {base} | IoU RankSEG | delta pp |",
            "|---|---|---|---|---|---|---|---|"]
    for case in report["cases"]:
        s = case["scores"]
        for region, d in case["delta_pp"].items():
            cells = [_score(s[base][region]["dice"]), _score(s["rankseg_dice"][region]["dice"]), _delta(d["dice"]),
                     _score(s[base][region]["iou"]), _score(s["rankseg_iou"][region]["iou"]), _delta(d["iou"])]
            out.append(f"| {case['case_id']} | {region} | " + " | ".join(cells) + " |")
    if figure:
        out += ["", "## Figure", "", f"![{base} vs RankSEG]({figure})"]
    return "\n".join(out) + "\n"


def write_reports(out_dir: Path, report: dict[str, Any], results: list[CaseResult]) -> list[Path]:
    """Write ``report.json``, ``cases.csv``, ``figure.png`` (when a case was scored) and ``report.md``.

    Check ``out_dir`` first with :func:`prepare_out_dir`; a stale ``figure.png`` from an earlier run is removed.
    """
    from .figure import figure

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in REPORT_FILES}
    paths["report.json"].write_text(json.dumps(report, indent=2) + "\n")
    write_csv(paths["cases.csv"], report)
    if not figure(paths["figure.png"], report, results):
        paths.pop("figure.png").unlink(missing_ok=True)
    paths["report.md"].write_text(markdown(report, "figure.png" if "figure.png" in paths else None))
    return list(paths.values())
