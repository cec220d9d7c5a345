"""``rankseg-eval``: the baseline decoder (argmax, or nnU-Net's region thresholds) vs RankSEG on a model's
probabilities, scored per case and region, with paired statistics and reports.

The command line is :mod:`rankseg_eval.cli`. Other front ends reuse the pieces::

    from rankseg_eval import Case, CaseData, Decoders, build_report, evaluate, write_reports

    cases = [Case("case_00001", lambda: CaseData(probs, label, image, affine)), ...]
    decoders = Decoders(regions={"kidney": (1, 2), "tumour": (2,)})        # softmax input, RankSEG by region
    results = evaluate(cases, decoders, regions={"kidney": (1, 2), "tumour": (2,)})
    report = build_report(results, decoders, layout, {"source": "my predictions"})
    write_reports(out_dir, report, results)

Importing this package (or :mod:`rankseg_eval.layouts`, which the bundle configs import) loads torch and numpy
only; MONAI, nibabel, matplotlib, scipy and tqdm are imported where they are needed. Nothing in the
``rankseg_plugins`` core imports this package.
"""

from .cases import Case, CaseData, CaseError
from .decoding import Decoders
from .layouts import Layout
from .report import prepare_out_dir, terminal_table, write_reports
from .scoring import CaseResult, evaluate
from .summary import build_report

__all__ = [
    "Case",
    "CaseData",
    "CaseError",
    "CaseResult",
    "Decoders",
    "Layout",
    "build_report",
    "evaluate",
    "prepare_out_dir",
    "terminal_table",
    "write_reports",
]
