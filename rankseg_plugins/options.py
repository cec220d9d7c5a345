"""Every RankSEG option, declared once: name, default, accepted values and meaning.

:class:`Options` is the single source. :class:`~rankseg_plugins.RankSEG`, :func:`~rankseg_plugins.rankseg`, the
MONAI and mmseg adapters and the command-line tools take the same keyword options and read their defaults,
choices and help text from here (:func:`option_specs`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, NamedTuple

Regions = tuple[tuple[int, ...], ...]


class OptionSpec(NamedTuple):
    """What a front end needs to offer one option: its default, its choices (or ``None``) and one line of help."""

    name: str
    default: Any
    choices: tuple[str, ...] | None
    help: str


def _option(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices})


#: Spellings accepted for compatibility with the reference package ``rankseg`` (ported code keeps running).
ALIASES = {
    "metric": {"accuracy": "acc", "jaccard": "iou"},
    "unassigned": {"maxscore": "max_score"},
}
#: The reference's solvers for ``metric="acc"``; they mean the same baseline as ours (argmax / threshold 0.5).
ACC_SOLVERS = ("argmax", "tr")
#: Keyword names of the reference package accepted as ours.
KEYWORD_ALIASES = {"unassigned_policy": "unassigned"}


@dataclass(frozen=True)
class Options:
    """Validated RankSEG options. Build with :meth:`create`, which checks and normalises every value."""

    metric: str = _option(
        "dice", "metric to maximise; 'acc' is the argmax / 0.5-threshold baseline", ("dice", "iou", "acc")
    )
    output_mode: str = _option(
        "multiclass",
        "'multiclass': softmax input, one label map; 'multilabel': sigmoid input, one mask per channel",
        ("multiclass", "multilabel"),
    )
    solver: str = _option(
        "rma", "'rma': reciprocal moment approximation, O(d); 'exact': the exact expected metric", ("rma", "exact")
    )
    smooth: float = _option(0.0, "smoothing s >= 0 of the metric, Dice = (2|A∩Y| + s) / (|A| + |Y| + s)")
    pruning_prob: float | None = _option(
        None,
        "None: keep a class only where its best mask beats the empty mask in expectation (presence rule); "
        "a number in [0, 1]: the reference's heuristic, an empty mask wherever max p <= pruning_prob",
    )
    ignore_empty: bool = _option(
        False,
        "False: a case whose truth is empty scores 1 for an empty prediction (0/0 := 1, per-case challenge Dice, "
        "MONAI DiceMetric(ignore_empty=False)); True: such cases are not scored (MONAI's default), so a structure "
        "is never predicted absent",
    )
    regions: Regions | None = _option(
        None,
        "nested label sets scored as regions, outermost first, e.g. [[1, 2], [2]]; each region is decoded as a "
        "binary problem and painted outer first, inner last",
    )
    unassigned: str = _option(
        "max_score",
        "multiclass pixels no class claims: to the best increment score ('max_score') or to void_index ('void')",
        ("max_score", "void"),
    )
    void_index: int = _option(255, "label of unclaimed pixels with unassigned='void'")

    @classmethod
    def create(cls, **options: Any) -> Options:
        """Check and normalise every option; raise ``TypeError``/``ValueError`` saying what to change."""
        options = {KEYWORD_ALIASES.get(name, name): value for name, value in options.items()}
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(
                f"Unknown RankSEG option(s) {unknown}; the options are {[f.name for f in fields(cls)]}."
            )
        values = {f.name: options.get(f.name, f.default) for f in fields(cls)}
        for name in ("metric", "output_mode", "unassigned"):
            values[name] = normalize_choice(name, values[name], _spec(name).choices)
        values["solver"] = _solver(values["solver"], values["metric"])
        values["smooth"] = _number("smooth", values["smooth"], 0.0, math.inf, "0 is the plain metric")
        if values["pruning_prob"] is not None:
            values["pruning_prob"] = _number(
                "pruning_prob", values["pruning_prob"], 0.0, 1.0, "None is the presence rule, 0 never prunes"
            )
        if not isinstance(values["ignore_empty"], bool):
            raise TypeError(f"ignore_empty must be True or False; got {values['ignore_empty']!r}.")
        if values["ignore_empty"] and values["pruning_prob"] is not None:
            raise ValueError(
                "pruning_prob empties classes, but ignore_empty=True scores only cases where the structure is "
                "present, where an empty mask can only lose: drop pruning_prob, or set ignore_empty=False."
            )
        if isinstance(values["void_index"], bool) or not isinstance(values["void_index"], int):
            raise TypeError(f"void_index must be an int; got {type(values['void_index']).__name__}.")
        values["regions"] = None if values["regions"] is None else check_regions(values["regions"])
        return cls(**values)

    def replace(self, **changes: Any) -> Options:
        """A validated copy with some options changed."""
        return Options.create(**{**self.as_dict(), **changes})

    def as_dict(self) -> dict[str, Any]:
        """The options as keyword arguments (regions as lists, as a user writes them)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if values["regions"] is not None:
            values["regions"] = [list(region) for region in values["regions"]]
        return values


def option_specs() -> dict[str, OptionSpec]:
    """Name, default, choices and help of every option, in declaration order."""
    return {f.name: _spec(f.name) for f in fields(Options)}


def _spec(name: str) -> OptionSpec:
    f = next(f for f in fields(Options) if f.name == name)
    assert f.default is not MISSING
    return OptionSpec(name, f.default, f.metadata["choices"], f.metadata["help"])


def normalize_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` lower-cased with spaces, dashes and underscores unified, or raise naming the choices."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {list(choices)}; got {type(value).__name__}.")
    key = value.strip().lower().replace("-", "_").replace(" ", "_")
    key = ALIASES.get(name, {}).get(key.replace("_", ""), key)
    for choice in choices:
        if key.replace("_", "") == choice.replace("_", ""):
            return choice
    raise ValueError(f"Unknown {name} {value!r}: expected one of {list(choices)}.")


def _solver(value: object, metric: str) -> str:
    if isinstance(value, str) and value.strip().lower() in ACC_SOLVERS:
        if metric != "acc":
            raise ValueError(f"solver {value!r} is the reference's solver for metric='acc'; use 'rma' or 'exact'.")
        return "rma"  # metric='acc' has one rule, whatever the solver's name
    if isinstance(value, str) and value.strip().lower().replace(" ", "") in ("ba", "trna", "ba+trna"):
        raise ValueError(
            f"solver {value!r} (the reference's normal approximations) is not offered: 'rma' is faster and as "
            "accurate on images, and 'exact' maximises the expected metric itself."
        )
    return normalize_choice("solver", value, _spec("solver").choices)


def _number(name: str, value: object, lo: float, hi: float, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number; got {type(value).__name__}.")
    if not (lo <= value <= hi) or value == math.inf:
        where = f">= {lo:g}" if hi == math.inf else f"in [{lo:g}, {hi:g}]"
        raise ValueError(f"{name} must be a finite number {where} ({hint}); got {value}.")
    return float(value)


def check_regions(regions: object) -> Regions:
    """Normalise ``regions`` to sorted label tuples, or raise saying what is wrong.

    A region is a non-empty set of foreground labels (``>= 1``). Any two regions must be disjoint or nested
    (KiTS23: ``[[1, 2, 3], [2, 3], [2]]``; two organs with their lesions: ``[[1, 2], [2], [3, 4], [4]]``), and no
    region may be listed twice.
    """
    example = "e.g. [[1, 2], [2]] for LiTS (liver = labels 1 and 2, tumour = label 2)"
    if isinstance(regions, (str, bytes, Mapping)) or not isinstance(regions, Sequence) or not regions:
        raise ValueError(f"regions must be a non-empty list of label lists, {example}; got {regions!r}.")
    out: list[tuple[int, ...]] = []
    for region in regions:
        if isinstance(region, (str, bytes)) or not isinstance(region, Sequence) or not region:
            raise ValueError(f"each region must be a non-empty list of labels, {example}; got {region!r}.")
        if any(isinstance(label, bool) or not isinstance(label, int) or label < 1 for label in region):
            raise ValueError(
                f"region {list(region)} must hold integer foreground labels >= 1 (background 0 is in no region)."
            )
        if len(set(region)) != len(region):
            raise ValueError(f"region {list(region)} lists a label twice.")
        out.append(tuple(sorted(region)))
    for i, a in enumerate(out):
        for b in out[i + 1 :]:
            if a == b:
                raise ValueError(f"region {list(a)} is listed twice.")
            sa, sb = set(a), set(b)
            if sa & sb and not (sa < sb or sb < sa):
                raise ValueError(
                    f"regions {list(a)} and {list(b)} overlap without one containing the other; regions must be "
                    f"nested or disjoint, {example}."
                )
    return tuple(out)
