"""Plans on synthetic softmax maps: fit on 40 cases (``rankseg-eval --fit-plan``'s fit), score on 20 held out.

    python benchmarks/plan_demo.py                     # both scenarios, 40 + 20 cases of 64x64
    python benchmarks/plan_demo.py --scenario blobs --fit 40 --test 20 --json rows.json

Each case is a 64x64 softmax map over background, ``organ`` and ``lesion``, with labels drawn from the
probabilities themselves (calibrated by construction), except where a scenario says otherwise:

* ``organ``: a soft disc (peak probability U[0.6, 0.9], Gaussian fall-off): uncertain enough that argmax
  under-segments it, so RankSEG gains;
* ``lesion``: present in every other case as a confident disc (0.9 inside); absent in the others, where the model
  paints nothing (``calibrated``) or a faint false blob (``blobs``: peak U[0.3, 0.45], a few tens of expected
  voxels, no label). No rule that trusts the probabilities returns an empty mask there.

Decoders compared on the held-out cases, per class, by mean Dice per case (empty truth and empty prediction score
1): argmax, the RankSEG default (``RankSEG()``) and the plan fitted on the fitting cases.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from rankseg_plugins import RankSEG
from rankseg_eval import Case, CaseData, Decoders
from rankseg_eval.layouts import Layout
from rankseg_eval.plans import fit_plan
from rankseg_eval.scoring import dice

SIZE = 64
LAYOUT = Layout("synthetic", {1: "organ", 2: "lesion"}, {"organ": (1,), "lesion": (2,)})
SCENARIOS = ("calibrated", "blobs")


def bump(rng: np.random.Generator, peak: float, sigma: float, flat: float = 0.0) -> np.ndarray:
    """``peak * exp(-max(r - flat, 0)^2 / (2 sigma^2))`` around a random centre: a disc of radius ``flat`` at
    ``peak`` with a Gaussian rim."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cy, cx = rng.uniform(SIZE * 0.3, SIZE * 0.7, 2)
    r = np.hypot(yy - cy, xx - cx)
    return peak * np.exp(-np.maximum(r - flat, 0.0) ** 2 / (2 * sigma**2))


def case(seed: int, scenario: str) -> CaseData:
    """One synthetic case (see the module docstring); the lesion is present when ``seed`` is even."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}")
    rng = np.random.default_rng(seed)
    organ = bump(rng, rng.uniform(0.6, 0.9), rng.uniform(4.0, 7.0))
    present = seed % 2 == 0
    if present:
        lesion = bump(rng, 0.9, 1.5, flat=rng.uniform(3.0, 6.0))
    elif scenario == "blobs":
        lesion = bump(rng, rng.uniform(0.3, 0.45), rng.uniform(3.0, 5.0))
    else:
        lesion = np.zeros((SIZE, SIZE))
    lesion = np.minimum(lesion, 1.0 - organ) * 0.999 + 1e-6  # room for the background; never exactly 0
    probs = np.stack([1.0 - organ - lesion, organ, lesion])
    drawn = probs if present else np.stack([probs[0] + probs[2], probs[1], np.zeros_like(lesion)])
    u = rng.uniform(size=(SIZE, SIZE))
    label = (u > drawn[0]).astype(np.int64) + (u > drawn[0] + drawn[1])
    return CaseData(torch.from_numpy(probs).float(), label)


def cases(seeds: range, scenario: str) -> list[Case]:
    return [Case(f"{scenario}_{s:03d}", lambda s=s: case(s, scenario)) for s in seeds]


def held_out_scores(test: list[Case], decoders: dict[str, RankSEG | None]) -> dict[str, dict[str, float]]:
    """Mean Dice per case and class of each decoder (``None``: argmax) on the held-out cases."""
    scores: dict[str, dict[str, list[float]]] = {name: {c: [] for c in LAYOUT.regions} for name in decoders}
    for item in test:
        data = item.load()
        truth = torch.from_numpy(data.label)
        for name, decoder in decoders.items():
            labels = data.probs.argmax(0) if decoder is None else decoder(data.probs[None])[0]
            for c, (value,) in LAYOUT.regions.items():
                scores[name][c].append(dice(labels == value, truth == value))
    return {name: {c: float(np.mean(v)) for c, v in per.items()} for name, per in scores.items()}


def run(scenario: str, fit: int, test: int) -> dict:
    """Fit a plan on ``fit`` cases, score argmax, the default and the plan on the next ``test`` cases."""
    fitted = fit_plan(cases(range(fit), scenario), Decoders(), LAYOUT, source=f"plan_demo.py {scenario}")
    scores = held_out_scores(cases(range(fit, fit + test), scenario),
                             {"argmax": None, "RankSEG()": RankSEG(), "plan": RankSEG.from_plan(fitted.plan)})
    return {"scenario": scenario, "fit": fit, "test": test, "decisions": fitted.report["decisions"],
            "reasons": {t: e["reason"] for t, e in fitted.report["targets"].items()}, "dice": scores}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", choices=SCENARIOS, nargs="+", default=list(SCENARIOS))
    p.add_argument("--fit", type=int, default=40, help="fitting cases")
    p.add_argument("--test", type=int, default=20, help="held-out cases (the ones after the fitting cases)")
    p.add_argument("--json", type=Path, help="also write the rows here")
    args = p.parse_args(argv)
    rows = [run(s, args.fit, args.test) for s in args.scenario]
    for row in rows:
        print(f"{row['scenario']}: plan fitted on {row['fit']} cases; mean Dice on {row['test']} held-out cases")
        print(f"  {'class':8s} {'argmax':>8s} {'RankSEG()':>10s} {'plan':>8s}  plan's decision")
        d = row["dice"]
        for c in LAYOUT.regions:
            scores = f"{d['argmax'][c]:8.4f} {d['RankSEG()'][c]:10.4f} {d['plan'][c]:8.4f}"
            print(f"  {c:8s} {scores}  {row['decisions'][c]}")
        for c in LAYOUT.regions:
            print(f"  {c}: {row['reasons'][c]}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
