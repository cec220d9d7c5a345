"""Option parsing for :class:`~rankseg_plugins.RankSEG`: normalised names, clear errors."""

from __future__ import annotations

from dataclasses import dataclass

METRICS = ("dice", "iou", "acc")
SOLVERS = ("rma", "exact")
OUTPUT_MODES = ("multiclass", "multilabel")
UNASSIGNED = ("max_score", "void")


def normalize_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """Return ``value`` lower-cased with spaces, dashes and underscores unified, or raise naming the choices."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {list(choices)}; got {type(value).__name__}.")
    key = value.strip().lower().replace("-", "_").replace(" ", "_")
    for choice in choices:
        if key == choice or key.replace("_", "") == choice.replace("_", ""):
            return choice
    raise ValueError(f"Unknown {name} {value!r}: expected one of {list(choices)}.")


@dataclass(frozen=True)
class Options:
    """Validated RankSEG options; see :class:`~rankseg_plugins.RankSEG` for their meaning."""

    metric: str = "dice"
    output_mode: str = "multiclass"
    solver: str = "rma"
    smooth: float = 0.0
    pruning_prob: float = 0.5
    unassigned: str = "max_score"
    void_index: int = 255

    @classmethod
    def create(
        cls,
        metric: str = "dice",
        output_mode: str = "multiclass",
        solver: str = "rma",
        smooth: float = 0.0,
        pruning_prob: float = 0.5,
        unassigned: str = "max_score",
        void_index: int = 255,
    ) -> Options:
        """Check and normalise every option; raise ``ValueError``/``TypeError`` saying what to change."""
        if isinstance(smooth, bool) or not isinstance(smooth, (int, float)):
            raise TypeError(f"smooth must be a number >= 0; got {type(smooth).__name__}.")
        if not smooth >= 0 or smooth == float("inf"):
            raise ValueError(f"smooth must be a finite number >= 0 (0 is the plain metric); got {smooth}.")
        if isinstance(pruning_prob, bool) or not isinstance(pruning_prob, (int, float)):
            raise TypeError(f"pruning_prob must be a number in [0, 1]; got {type(pruning_prob).__name__}.")
        if not 0.0 <= pruning_prob <= 1.0:
            raise ValueError(
                f"pruning_prob must lie in [0, 1]; got {pruning_prob}. Use 0 to never prune a class."
            )
        if isinstance(void_index, bool) or not isinstance(void_index, int):
            raise TypeError(f"void_index must be an int; got {type(void_index).__name__}.")
        return cls(
            metric=normalize_choice("metric", metric, METRICS),
            output_mode=normalize_choice("output_mode", output_mode, OUTPUT_MODES),
            solver=normalize_choice("solver", solver, SOLVERS),
            smooth=float(smooth),
            pruning_prob=float(pruning_prob),
            unassigned=normalize_choice("unassigned", unassigned, UNASSIGNED),
            void_index=void_index,
        )
