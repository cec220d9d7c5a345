"""``rankseg-eval --fit-plan``: per class (or region), the decoding that cross-validation says beats argmax, or argmax.

Whether RankSEG helps depends on the model's calibration and on the structure. A rule that trusts the
probabilities cannot see that a model paints faint false blobs where a structure is absent; only a rule fitted on
data can. nnU-Net keeps a post-processing step only where cross-validated Dice improves; a plan does the same for
decoding, one decision per class or region (:mod:`rankseg_plugins.plan`).

**Candidates** per target (a foreground class, or a scored region when decoding by region): ``argmax`` (the plan's
fallback: the argmax class, or ``p > 0.5`` for a region or sigmoid channel); ``rankseg``, the default (presence
rule); ``rankseg`` with the reference's ``pruning_prob`` heuristic (:data:`PRUNING`; not with ``ignore_empty``,
where an empty mask can only lose); ``rankseg`` on ``p' = sigmoid(logit(p) / T + b)`` with ``T, b`` fitted by
likelihood (:mod:`rankseg_eval.calibration`); with ``aggregate="dataset"`` (the metric pooled over cases, as
mmseg's ``IoUMetric`` pools intersections and unions) also a fixed threshold ``p > t``, ``t`` on :data:`GRID`
maximising the fitting folds' pooled metric. Per case, RankSEG's own per-case threshold is the optimum under
calibration, and recalibration covers a miscalibrated model, so a fixed threshold is a candidate for the pooled
metric only.

**Context.** Decisions interact only through the multiclass rule (or the painting of regions). Each candidate is
decoded for its own target with every other target at ``argmax``: its gain is the effect of switching that one
target away from the fallback, the step a plan takes. A softmax background is not scored, so it is not fitted: it
follows the foreground, ``argmax`` when every class keeps ``argmax``, else the RankSEG default (so a plan of
``argmax`` everywhere is argmax, and one of ``rankseg`` everywhere is ``RankSEG()``); it is at the default while a
class is switched.

**Cross-validation.** Cases are split into ``folds`` folds (a seeded permutation). What a candidate fits (``T, b``;
``t``) is fitted on the other folds and scored on the held-out fold, so every case is scored by a decoder fitted
without it. Paired gain over ``argmax``: per case, ``metric(candidate) - metric(argmax)`` on the held-out
predictions, averaged over the cases where the target is scored (``ignore_empty``: cases with an empty truth are
not); with ``aggregate="dataset"`` the pooled metric over all held-out cases minus argmax's.

**Choosing.** A candidate replaces ``argmax`` only when the 95% bootstrap percentile interval of its gain
(:data:`RESAMPLES` resamples of the cases, seeded) lies above 0; among those, the largest mean gain wins (the
earlier candidate on a tie). A variant (pruning, recalibration, threshold) must also beat the default when the
default qualifies: unless the interval of its paired gain over the default lies above 0, the default is kept. The
final ``T, b`` and ``t`` are refitted on all cases.

**Memory and passes.** A case is never held whole beyond its own turn. The first pass (the evaluation's own load,
through :func:`~rankseg_eval.evaluate`'s ``observe`` hook) keeps per case and target: the overlap counts
``(|A∩Y|, |A|, |Y|)`` of every candidate that fits nothing, a histogram of ``logit(p)`` per truth value and the
counts of ``p > t`` on the grid (:class:`CaseStats`, tens of kilobytes). The fits of every fold come from those; the
second pass loads each case again to decode the fitted candidates with the fit of the folds that exclude it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rankseg_plugins import Decision, Plan, RankSEG
from rankseg_plugins.options import Options

from . import calibration
from .cases import Case, CaseData, CaseError, error_message
from .decoding import PAIRED, Decoders, decision_text, regions_text
from .layouts import Layout
from .scoring import CaseResult, from_counts, load_checked, masks, overlap, progress_bar, region_mask

PRUNING = (0.3, 0.5)
GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)
LEVEL = 0.95
RESAMPLES = 9999
AGGREGATES = ("case", "dataset")
FEW_CASES = 10  # below, the fit's report warns that the intervals are optimistic
ARGMAX, DEFAULT = Decision("argmax"), Decision("rankseg")
#: Candidates that fit nothing: decoded in the first pass.
FIXED = {"rankseg": DEFAULT, **{f"rankseg_pruning_{x:g}": Decision("rankseg", pruning_prob=x) for x in PRUNING}}
FITTED = ("rankseg_calibrated", "threshold")  # decoded in the second pass (threshold: aggregate="dataset" only)
CONTEXT = (
    "each candidate is decoded for its own target with every other target at argmax (a softmax background, which is "
    "not scored, at the RankSEG default while a class is switched, as in the plan)"
)


@dataclass(frozen=True)
class Target:
    """What a plan decides for: its name, the labels of its mask in a label map, the probability channels summed
    into its probability, and whether it is fitted (a softmax background is not: it is not scored)."""

    name: str
    labels: tuple[int, ...]
    channels: tuple[int, ...]
    fitted: bool = True


def plan_targets(decoders: Decoders, layout: Layout | None, channels: int) -> list[Target]:
    """The plan's targets for probabilities with ``channels`` channels: the regions the decoders decode, or every
    class (background first, named after ``layout``'s labels)."""
    if decoders.regions:
        sigmoid = decoders.activation == "sigmoid"
        return [Target(name, tuple(labels), (j,) if sigmoid else tuple(labels))
                for j, (name, labels) in enumerate(decoders.regions.items())]
    names = layout.labels if layout is not None else {}
    if channels == 1:
        return [Target(names.get(1, "class_1"), (1,), (0,))]
    return [Target("background", (0,), (0,), fitted=False)] + [
        Target(names.get(c, f"class_{c}"), (c,), (c,)) for c in range(1, channels)]


def target_probs(probs: torch.Tensor, target: Target) -> torch.Tensor:
    """The target's probability: its channel, or the sum of its classes' (clamped to 1, as the decoder does)."""
    q = probs[target.channels[0]].float()
    if len(target.channels) > 1:
        q = q.clone()
        for c in target.channels[1:]:
            q.add_(probs[c])
        q.clamp_(0.0, 1.0)
    return q


def grid_counts(p: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """``(len(GRID), 2)``: ``|{p > t}|`` and ``|{p > t} ∩ Y|`` for every grid threshold ``t`` (as the decoder
    compares: ``p > t`` in ``p``'s dtype)."""
    edges = torch.tensor(GRID, dtype=p.dtype)
    total = torch.zeros(len(GRID) + 1, dtype=torch.float64)
    positive = torch.zeros_like(total)
    for part, y in zip(p.reshape(-1).split(calibration.CHUNK), truth.reshape(-1).split(calibration.CHUNK)):
        index = torch.bucketize(part, edges)  # p > GRID[j] exactly when index > j
        total += torch.bincount(index, minlength=len(GRID) + 1).double()
        positive += torch.bincount(index, weights=y.double(), minlength=len(GRID) + 1)
    above = lambda counts: counts.flip(0).cumsum(0).flip(0)[1:]  # noqa: E731  (sum over index > j)
    return torch.stack([above(total), above(positive)], 1).numpy()


@dataclass
class CaseStats:
    """What the fit keeps of one case (first pass), per fitted target ``k``: ``counts[candidate][k]`` the overlap
    ``(|A∩Y|, |A|, |Y|)`` of its mask when it alone takes the candidate; ``hist[k]`` the ``logit(p)`` histogram per
    truth value; ``grid[k]`` the counts of ``p > t`` per grid threshold (:func:`grid_counts`)."""

    counts: dict[str, np.ndarray]
    hist: np.ndarray
    grid: np.ndarray


def bootstrap_interval(statistic: Any, n: int, seed: int) -> tuple[float, float]:
    """95% percentile interval of ``statistic(indices)`` over :data:`RESAMPLES` resamples of ``n`` cases
    (``scipy.stats.bootstrap``; ``statistic`` takes an ``(..., n)`` index array, reduces the last axis)."""
    from scipy.stats import bootstrap

    if n < 2:
        value = float(statistic(np.arange(n)))
        return value, value
    result = bootstrap((np.arange(n),), lambda i, axis=-1: statistic(i), vectorized=True, n_resamples=RESAMPLES,
                       batch=1000, method="percentile", confidence_level=LEVEL,
                       random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


class Scorer:
    """A target's metric over cases from counts: per case under the ``ignore_empty`` convention (then the mean), or
    pooled (``aggregate="dataset"``). ``truth``: the target's true size per case."""

    def __init__(self, metric: str, aggregate: str, ignore_empty: bool, truth: np.ndarray) -> None:
        self.metric, self.pooled, self.truth = metric, aggregate == "dataset", truth
        # ignore_empty: a case whose truth is empty is not scored (the pooled metric has no empty case to skip)
        self.scored = np.ones(len(truth), bool) if self.pooled or not ignore_empty else truth > 0

    def value(self, counts: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
        """The metric of masks with overlap counts ``(n, 3)`` over the scored cases, or over ``index`` ``(..., m)``
        into them (a bootstrap resample)."""
        counts = counts[self.scored]
        index = np.arange(len(counts)) if index is None else index
        if self.pooled:
            return from_counts(self.metric, *np.moveaxis(counts[index].sum(-2), -1, 0))
        return from_counts(self.metric, *counts.T)[index].mean(-1)

    def per_threshold(self, grid: np.ndarray, cases: np.ndarray) -> np.ndarray:
        """The metric of the masks ``p > t`` for every grid threshold, over the scored cases among ``cases``
        (bool ``(n,)``), from their counts ``(n, G, 2)`` (:func:`grid_counts`)."""
        keep = cases & self.scored
        pred, inter = grid[keep, :, 0], grid[keep, :, 1]
        truth = np.broadcast_to(self.truth[keep, None], pred.shape)
        if self.pooled:
            return from_counts(self.metric, inter.sum(0), pred.sum(0), truth.sum(0))
        return from_counts(self.metric, inter, pred, truth).mean(0)


def best_threshold(values: np.ndarray) -> float:
    """The grid threshold with the largest value (nearest 0.5 on a tie)."""
    best = np.flatnonzero(values >= values.max() - 1e-12)
    return float(GRID[best[np.argmin(np.abs(GRID[best] - 0.5))]])


@dataclass
class PlanFit:
    """The fitted plan and the fit's report (JSON-ready: the plan's evidence plus reliability diagrams)."""

    plan: Plan
    report: dict[str, Any]


class PlanFitter:
    """Fits a plan on cases decoded by ``decoders`` (RankSEG's options, by class or by region).

    Use :meth:`observe` as :func:`~rankseg_eval.evaluate`'s ``observe`` hook (first pass), then :meth:`fit` with the
    cases and their results (second pass, choice); :func:`fit_plan` does both without the evaluation.
    """

    def __init__(self, decoders: Decoders, layout: Layout | None = None, folds: int = 5, aggregate: str = "case",
                 metric: str = "dice", seed: int = 0) -> None:
        if decoders.plan is not None:
            raise ValueError("a plan is fitted on RankSEG's decoders, not evaluated with one: drop --plan")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}; got {aggregate!r}")
        if metric not in PAIRED:
            raise ValueError(f"the plan's metric must be one of {list(PAIRED)}; got {metric!r}")
        if folds < 2:
            raise ValueError(f"cross-validation needs at least 2 folds; got {folds}")
        options = decoders.rankseg[PAIRED[metric]].options
        if options.pruning_prob is not None:
            raise ValueError("--pruning-prob with --fit-plan: the fit tries pruning itself (as a candidate per class), "
                             "drop --pruning-prob")
        self.options: Options = options.replace(metric=metric)
        self.decoders, self.layout = decoders, layout
        self.folds, self.aggregate, self.metric, self.seed = folds, aggregate, metric, seed
        self.channels: int | None = None
        self.targets: list[Target] = []
        self.fixed = {name: d for name, d in FIXED.items() if d.pruning_prob is None or not options.ignore_empty}

    @property
    def fitted(self) -> list[int]:
        """Indices of the fitted targets."""
        return [j for j, t in enumerate(self.targets) if t.fitted]

    def plan(self, decisions: Sequence[Decision], evidence: dict[str, Any] | None = None) -> Plan:
        """A plan with these decisions for the fitted targets (a background follows them, see the module doc)."""
        assert self.channels is not None
        chosen = iter(decisions)
        fitted = [next(chosen) if t.fitted else None for t in self.targets]
        switched = any(d.decoder != "argmax" for d in fitted if d is not None)
        full = tuple(d if d is not None else DEFAULT if switched else ARGMAX for d in fitted)
        return Plan(self.options, self.channels, tuple(t.name for t in self.targets), full, self.aggregate,
                    evidence or {})

    def _alone(self, k: int, decision: Decision) -> Plan:
        """The plan where fitted target ``k`` takes ``decision`` and the others argmax."""
        return self.plan([decision if i == k else ARGMAX for i in range(len(self.fitted))])

    def _counts(self, probs: torch.Tensor, truth: torch.Tensor, plan: Plan, only: int | None = None) -> np.ndarray:
        """``(T, 3)`` overlap counts of the fitted targets' masks decoded by ``plan`` (zeros except ``only``)."""
        try:
            labels = RankSEG(plan=plan)(probs[None])[0]
        except (ValueError, TypeError) as err:
            raise CaseError(f"RankSEG rejected the probabilities: {err}") from err
        counts = np.zeros((len(self.fitted), 3), np.int64)
        for k, j in enumerate(self.fitted):
            if only is None or k == only:
                counts[k] = overlap(*masks(labels, truth, self.targets[j].labels))
        return counts

    def observe(self, data: CaseData) -> CaseStats:
        """First pass over one case: see :class:`CaseStats`."""
        channels = data.probs.shape[0]
        if self.channels is None:
            self.channels, self.targets = channels, plan_targets(self.decoders, self.layout, channels)
        elif channels != self.channels:
            raise CaseError(f"{channels} channels, but the plan is fitted for the first case's {self.channels}")
        probs, truth = data.probs, torch.from_numpy(np.asarray(data.label))
        counts = {"argmax": self._counts(probs, truth, self.plan([ARGMAX] * len(self.fitted)))}
        for name, decision in self.fixed.items():
            counts[name] = sum(self._counts(probs, truth, self._alone(k, decision), only=k)
                               for k in range(len(self.fitted)))
        hist, grid = [], []
        for j in self.fitted:
            p = target_probs(probs, self.targets[j])
            y = region_mask(truth, self.targets[j].labels)
            hist.append(calibration.logit_histogram(p, y))
            grid.append(grid_counts(p, y))
        return CaseStats(counts, np.stack(hist), np.stack(grid))

    def fit(self, cases: Sequence[Case], results: Sequence[CaseResult], progress: bool = False,
            source: str | None = None) -> PlanFit:
        """Cross-validate every candidate on the cases whose first pass succeeded, choose, and build the plan."""
        by_id = {c.case_id: c for c in cases}
        kept = [r for r in results if r.stats is not None and r.error is None]
        n = len(kept)
        if n < 2:
            raise ValueError(f"fitting a plan needs at least 2 scored cases; {n} were scored")
        k = min(self.folds, n)
        fold = np.empty(n, int)
        fold[np.random.default_rng(self.seed).permutation(n)] = np.arange(n) % k
        stats = [r.stats for r in kept]
        hist = np.stack([s.hist for s in stats])  # (n, T, 2, Z)
        grid = np.stack([s.grid for s in stats])  # (n, T, G, 2)
        counts = {name: np.stack([s.counts[name] for s in stats]) for name in stats[0].counts}  # (n, T, 3)
        truth = counts["argmax"][:, :, 2]
        scorers = [Scorer(self.metric, self.aggregate, self.options.ignore_empty, truth[:, t])
                   for t in range(len(self.fitted))]
        # per fold and target: T, b (None when a truth value is missing) and the threshold, fitted without the fold
        calib = [[calibration.fit_temperature(hist[fold != f, t].sum(0)) for t in range(len(self.fitted))]
                 for f in range(k)]
        thresholds = [[best_threshold(scorers[t].per_threshold(grid[:, t], fold != f)) for t in range(len(self.fitted))]
                      for f in range(k)] if self.aggregate == "dataset" else None
        counts.update(self._held_out(by_id, [r.case_id for r in kept], fold, calib, thresholds, progress))
        targets: dict[str, Any] = {}
        decisions = []
        for t, j in enumerate(self.fitted):
            final = self._candidates(t, scorers[t], calib, hist[:, t], grid[:, t])
            entry, decision = self._choose(t, final, counts, scorers[t], calib, thresholds)
            targets[self.targets[j].name] = {"labels": list(self.targets[j].labels), **entry}
            decisions.append(decision)
        evidence = {
            "fitted_by": "rankseg-eval --fit-plan",
            "source": source or "not recorded",
            "metric": self.metric,
            "decoded": f"by region: {regions_text(self.decoders.regions)}" if self.decoders.regions else "by class",
            "convention": self.convention(),
            "aggregate": self.aggregate,
            "cases": n,
            "folds": k,
            "fold_cases": [[r.case_id for r, f in zip(kept, fold) if f == i] for i in range(k)],
            "seed": self.seed,
            "interval": {"method": "bootstrap percentile over cases (scipy.stats.bootstrap)", "level": LEVEL,
                         "resamples": RESAMPLES},
            "rule": f"a candidate replaces argmax only when the {LEVEL:.0%} interval of its cross-validated paired "
                    "gain lies above 0; among those, the largest mean gain, but a variant of RankSEG must also beat "
                    "the default when the default qualifies (the interval of its gain over the default above 0)",
            "context": CONTEXT,
            "targets": targets,
        }
        if n < FEW_CASES:
            evidence["caution"] = (f"only {n} cases: a percentile interval over so few cases is too narrow, so a "
                                   "candidate that gains on every case qualifies however small its gain")
        plan = self.plan(decisions, evidence)
        chosen = {t: decision_text(d.as_dict()) for t, d in zip(plan.targets, plan.decisions)}
        report = {**evidence, "decisions": chosen, "reliability": self._reliability(hist, fold, calib, decisions)}
        return PlanFit(plan, report)

    def convention(self) -> str:
        if self.aggregate == "dataset":
            return "pooled over cases: intersections and sizes summed over the cases, then the metric (mmseg IoUMetric)"
        if self.options.ignore_empty:
            return "per case, then the mean; a case whose truth is empty is not scored"
        return "per case, then the mean; empty truth and empty prediction score 1"

    def _held_out(self, by_id: dict[str, Case], ids: list[str], fold: np.ndarray, calib: list,
                  thresholds: list | None, progress: bool) -> dict[str, np.ndarray]:
        """Second pass: each case's counts for the fitted candidates, fitted on the folds that exclude it."""
        out = {name: np.zeros((len(ids), len(self.fitted), 3), np.int64) for name in FITTED}
        bar = progress_bar(len(ids), progress, "plan fit")
        for i, case_id in enumerate(ids):
            try:
                data = load_checked(by_id[case_id], self.decoders)
            except Exception as err:
                raise ValueError(f"case {case_id} loaded in the first pass but not in the second: "
                                 f"{error_message(err)}") from err
            truth = torch.from_numpy(np.asarray(data.label))
            for t in range(len(self.fitted)):
                fitted = calib[fold[i]][t]
                if fitted is not None:
                    decision = Decision("rankseg", temperature=fitted[0], bias=fitted[1])
                    out["rankseg_calibrated"][i] += self._counts(data.probs, truth, self._alone(t, decision), only=t)
                if thresholds is not None:
                    decision = Decision("threshold", threshold=thresholds[fold[i]][t])
                    out["threshold"][i] += self._counts(data.probs, truth, self._alone(t, decision), only=t)
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        return out

    def _candidates(self, t: int, scorer: Scorer, calib: list, hist: np.ndarray,
                    grid: np.ndarray) -> dict[str, Decision]:
        """Fitted target ``t``'s candidates other than argmax, with what they fit refitted on all cases."""
        final = dict(self.fixed)
        fitted = calibration.fit_temperature(hist.sum(0))
        if fitted is not None and all(c[t] is not None for c in calib):
            final["rankseg_calibrated"] = Decision("rankseg", temperature=fitted[0], bias=fitted[1])
        if self.aggregate == "dataset":
            threshold = best_threshold(scorer.per_threshold(grid, np.ones(len(grid), bool)))
            final["threshold"] = Decision("threshold", threshold=threshold)
        return final

    def _choose(self, t: int, final: dict[str, Decision], counts: dict[str, np.ndarray], scorer: Scorer, calib: list,
                thresholds: list | None) -> tuple[dict[str, Any], Decision]:
        """Target ``t``'s candidates (held-out mean, gain over argmax and its interval, in pp) and its decision with
        the reason (the rule of the module docstring)."""
        n = int(scorer.scored.sum())
        if n < 2:
            reason = f"only {n} case(s) where it is scored: nothing to cross-validate"
            entry = {"n": n, "candidates": {}, "choice": "argmax", "decision": ARGMAX.as_dict(), "reason": reason}
            return entry, ARGMAX

        def gain(name: str, over: str = "argmax") -> Any:
            ours, theirs = counts[name][:, t], counts[over][:, t]
            return lambda index: 100.0 * (scorer.value(ours, index) - scorer.value(theirs, index))

        def interval(name: str, over: str = "argmax") -> dict[str, Any]:
            suffix = "" if over == "argmax" else f"_over_{over}"
            return {f"gain_pp{suffix}": float(gain(name, over)(np.arange(n))),
                    f"interval_pp{suffix}": list(bootstrap_interval(gain(name, over), n, self.seed))}

        base = float(scorer.value(counts["argmax"][:, t]))
        candidates: dict[str, Any] = {"argmax": {"decision": ARGMAX.as_dict(), "mean": base}}
        for name, decision in final.items():
            candidates[name] = {"decision": decision.as_dict(), "mean": float(scorer.value(counts[name][:, t])),
                                **interval(name)}
            if name == "rankseg_calibrated":
                candidates[name]["folds"] = [{"temperature": c[t][0], "bias": c[t][1]} for c in calib]
            elif name == "threshold":
                candidates[name]["folds"] = [{"threshold": th[t]} for th in thresholds]

        def shown(name: str, suffix: str = "") -> str:
            lo, hi = candidates[name]["interval_pp" + suffix]
            return f"{name} {candidates[name]['gain_pp' + suffix]:+.2f} pp [{lo:+.2f}, {hi:+.2f}]"

        adopted = [name for name in final if candidates[name]["interval_pp"][0] > 0]
        if not adopted:
            best = max(final, key=lambda name: candidates[name]["gain_pp"])
            choice, reason = "argmax", f"no candidate's {LEVEL:.0%} interval lies above 0 (best: {shown(best)})"
        else:
            choice = max(adopted, key=lambda name: candidates[name]["gain_pp"])
            reason = f"{shown(choice)}: its {LEVEL:.0%} interval lies above 0"
            if len(adopted) > 1:
                reason += f", the largest gain of the {len(adopted)} candidates whose interval does"
            if choice != "rankseg" and "rankseg" in adopted:  # a variant must beat the default too
                candidates[choice].update(interval(choice, "rankseg"))
                versus = f"{shown(choice, '_over_rankseg')} over it"
                if candidates[choice]["interval_pp_over_rankseg"][0] <= 0:
                    reason = (f"{shown('rankseg')}: its {LEVEL:.0%} interval lies above 0; {choice} gains more but "
                              f"not clearly more than the default ({versus})")
                    choice = "rankseg"
                else:
                    reason += f", and above the default's ({versus})"
        decision = ARGMAX if choice == "argmax" else final[choice]
        entry = {"n": n, "candidates": candidates, "choice": choice, "decision": decision.as_dict(), "reason": reason}
        return entry, decision

    def _reliability(self, hist: np.ndarray, fold: np.ndarray, calib: list, decisions: list[Decision]) -> dict:
        """Per fitted target: the reliability diagram before recalibration and after (each fold's cases with the
        ``T, b`` fitted without them), with the ``T, b`` fitted on all cases."""
        out = {}
        for t, j in enumerate(self.fitted):
            entry: dict[str, Any] = {"before": calibration.reliability([(hist[:, t].sum(0), 1.0, 0.0)])}
            if all(c[t] is not None for c in calib):
                entry["after"] = calibration.reliability(
                    [(hist[fold == f, t].sum(0), *calib[f][t]) for f in range(len(calib))])
                entry["temperature"], entry["bias"] = calibration.fit_temperature(hist[:, t].sum(0))
            out[self.targets[j].name] = entry
        return out


def fit_plan(cases: Sequence[Case], decoders: Decoders, layout: Layout | None = None, folds: int = 5,
             aggregate: str = "case", metric: str = "dice", seed: int = 0, progress: bool = False,
             source: str | None = None) -> PlanFit:
    """Fit a plan on ``cases`` (both passes, without the paired evaluation); cases that fail are left out."""
    fitter = PlanFitter(decoders, layout, folds, aggregate, metric, seed)
    results = []
    for case in cases:
        try:
            results.append(CaseResult(case.case_id, stats=fitter.observe(load_checked(case, decoders))))
        except Exception as err:  # a failing case is left out, as in the evaluation
            results.append(CaseResult(case.case_id, error=error_message(err)))
    return fitter.fit(cases, results, progress, source)
