"""Plans: one decision per class (or region), fitted on validation cases, deployed by every adapter.

A plan is a versioned JSON file (``rankseg-eval --fit-plan`` writes one)::

    {"format": "rankseg-plan", "version": 1,
     "options": {"metric": "dice", "ignore_empty": false, "regions": [[1, 2], [2]], ...},   # RankSEG options
     "aggregate": "case",                       # how it was scored: per case ("case") or pooled ("dataset")
     "channels": 3,                             # input channels it was fitted for
     "targets": ["liver", "tumour"],            # one name per class (or per region)
     "decisions": [{"decoder": "rankseg"},
                   {"decoder": "rankseg", "pruning_prob": 0.5},
                   {"decoder": "rankseg", "temperature": 1.3, "bias": -0.2},
                   {"decoder": "argmax"},
                   {"decoder": "threshold", "threshold": 0.42}],
     "evidence": {...}}                         # cases, folds, gains with intervals (kept as written)

Decisions, for class (or region) ``c`` with probability ``p`` (softmax class, sigmoid channel, or summed region):

* ``argmax``: the baseline: pixels where ``c`` is the argmax class (softmax classes; for a region, where the
  argmax class is in it), else ``p > 0.5``;
* ``rankseg``: RankSEG's mask under the plan's options (presence rule), or the reference's pruning heuristic with
  ``pruning_prob``; with ``temperature``/``bias`` it is chosen on the recalibrated ``p' = sigmoid(logit(p) / T + b)``,
  a monotone map, so it is still a threshold on ``p``;
* ``threshold``: ``p > threshold``.

The masks then go through the multiclass rule as usual (a class whose mask is empty never wins a pixel) or are
painted as regions. A plan of ``argmax`` everywhere gives argmax; one of plain ``rankseg`` everywhere gives
``RankSEG(**options)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .options import Options

FORMAT, VERSION = "rankseg-plan", 1
DECODERS = ("argmax", "rankseg", "threshold")


@dataclass(frozen=True)
class Decision:
    """How one class (or region) is decoded; see the module docstring."""

    decoder: str = "rankseg"
    pruning_prob: float | None = None
    temperature: float = 1.0
    bias: float = 0.0
    threshold: float | None = None

    @property
    def calibrated(self) -> bool:
        return self.temperature != 1.0 or self.bias != 0.0

    def as_dict(self) -> dict[str, Any]:
        """The decision as written in a plan (defaults left out)."""
        out: dict[str, Any] = {"decoder": self.decoder}
        if self.pruning_prob is not None:
            out["pruning_prob"] = self.pruning_prob
        if self.calibrated:
            out.update(temperature=self.temperature, bias=self.bias)
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return out


@dataclass(frozen=True)
class Plan:
    """A validated plan: RankSEG options, the input it was fitted for and one :class:`Decision` per target."""

    options: Options
    channels: int
    targets: tuple[str, ...]
    decisions: tuple[Decision, ...]
    aggregate: str = "case"
    evidence: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, source: str | Path | dict[str, Any]) -> Plan:
        """Read a plan file (or its parsed dict), or raise ``ValueError`` naming what is wrong in it."""
        where = "plan" if isinstance(source, dict) else f"plan {source}"
        if isinstance(source, dict):
            data = source
        else:
            try:
                data = json.loads(Path(source).read_text())
            except OSError as err:
                raise ValueError(f"cannot read {where}: {err}") from err
            except json.JSONDecodeError as err:
                raise ValueError(f"{where} is not JSON: {err}") from err
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"{where} is not a RankSEG plan (no \"format\": \"{FORMAT}\"); make one with "
                             "rankseg-eval --fit-plan")
        if data.get("version") != VERSION:
            raise ValueError(f"{where} has version {data.get('version')!r}; this rankseg-plugins reads version "
                             f"{VERSION}: refit it with this version's rankseg-eval --fit-plan")
        try:
            options = Options.create(**data.get("options", {}))
            decisions = tuple(_decision(d) for d in data["decisions"])
            targets = tuple(str(t) for t in data.get("targets", [f"class_{c}" for c in range(len(decisions))]))
            channels = int(data["channels"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{where} is malformed: {err}") from err
        if options.metric == "acc":
            raise ValueError(f"{where}: metric 'acc' has nothing to decide; use metric 'dice' or 'iou'")
        if options.pruning_prob is not None:
            raise ValueError(f"{where}: pruning_prob belongs to a class's decision, not to the plan's options")
        if options.ignore_empty and any(d.pruning_prob is not None for d in decisions):
            raise ValueError(f"{where}: a decision prunes (pruning_prob) while ignore_empty=True says an empty mask can "
                             "only lose: refit the plan")
        expected = len(options.regions) if options.regions is not None else channels
        if len(decisions) != expected or len(targets) != expected:
            raise ValueError(f"{where} has {len(decisions)} decisions and {len(targets)} targets for {expected} "
                             f"{'regions' if options.regions is not None else 'classes'}")
        aggregate = data.get("aggregate", "case")
        if aggregate not in ("case", "dataset"):
            raise ValueError(f"{where}: aggregate must be 'case' or 'dataset', not {aggregate!r}")
        return cls(options, channels, targets, decisions, aggregate, data.get("evidence") or {})

    def as_dict(self) -> dict[str, Any]:
        """The plan as written to a file."""
        return {
            "format": FORMAT, "version": VERSION, "options": self.options.as_dict(), "aggregate": self.aggregate,
            "channels": self.channels, "targets": list(self.targets),
            "decisions": [d.as_dict() for d in self.decisions], "evidence": self.evidence,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=2) + "\n")

    def check_input(self, channels: int) -> None:
        """Raise ``ValueError`` unless the input has the channel count the plan was fitted for."""
        if channels != self.channels:
            raise ValueError(
                f"the plan was fitted for {self.channels} input channels ({', '.join(self.targets)}), but the input "
                f"has {channels}: use the plan fitted for this model, or fit one with rankseg-eval --fit-plan"
            )


def _decision(data: Any) -> Decision:
    if not isinstance(data, dict):
        raise TypeError(f"a decision must be an object, got {data!r}")
    unknown = set(data) - {"decoder", "pruning_prob", "temperature", "bias", "threshold"}
    if unknown:
        raise ValueError(f"unknown decision field(s) {sorted(unknown)} in {data}")
    decision = Decision(**data)
    if decision.decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decision.decoder!r}: expected one of {list(DECODERS)}")
    if decision.decoder == "threshold" and not (decision.threshold is not None and 0.0 <= decision.threshold <= 1.0):
        raise ValueError(f"a threshold decision needs a threshold in [0, 1]: {data}")
    if decision.decoder != "threshold" and decision.threshold is not None:
        raise ValueError(f"only a threshold decision takes a threshold: {data}")
    if decision.pruning_prob is not None and not (decision.decoder == "rankseg" and 0.0 <= decision.pruning_prob <= 1.0):
        raise ValueError(f"pruning_prob (in [0, 1]) belongs to a rankseg decision: {data}")
    if not (math.isfinite(decision.temperature) and decision.temperature > 0 and math.isfinite(decision.bias)):
        raise ValueError(f"temperature must be positive and finite, bias finite: {data}")
    if decision.calibrated and decision.decoder != "rankseg":
        raise ValueError(f"temperature and bias belong to a rankseg decision: {data}")
    return decision
