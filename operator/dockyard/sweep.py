"""Hyperparameter sweeps, the decisions (pure): which trials a sweep runs, which to start now,
when it is over and which trial won. The I/O (child MLflow runs, trial Jobs) is
`dockyard.controllers.sweep`'s.

A trial's parameters are a function of the spec and the trial's index only, so a restarted
operator plans exactly the same trials and finds their runs and Jobs again by index.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any, Literal

from .api.common import HyperValue
from .api.sweep import SweepParameter, SweepSpec, SweepStatus, Trial

FINISHED = ("Succeeded", "Failed", "Stopped")


def _range_points(p: SweepParameter) -> list[HyperValue]:
    assert p.min is not None and p.max is not None
    n = p.steps or 3
    if p.scale == "log":
        lo, hi = math.log(p.min), math.log(p.max)
        points = [math.exp(lo + (hi - lo) * i / (n - 1)) for i in range(n)]
    else:
        points = [p.min + (p.max - p.min) * i / (n - 1) for i in range(n)]
    if p.type == "int":
        return list(dict.fromkeys(min(max(round(x), math.ceil(p.min)), math.floor(p.max)) for x in points))
    return [float(f"{x:.6g}") for x in points]


def _draw(p: SweepParameter, rng: random.Random) -> HyperValue:
    if p.values is not None:
        return p.values[rng.randrange(len(p.values))]
    assert p.min is not None and p.max is not None
    if p.scale == "log":
        x = math.exp(rng.uniform(math.log(p.min), math.log(p.max)))
    else:
        x = rng.uniform(p.min, p.max)
    if p.type == "int":
        return min(max(round(x), math.ceil(p.min)), math.floor(p.max))
    return float(f"{x:.6g}")


def plan(sweep: SweepSpec) -> list[dict[str, HyperValue]]:
    """Every trial's parameters, in trial order."""
    params = sweep.by_name()
    names = sorted(params)
    if sweep.strategy == "grid":
        axes = [params[n].values or _range_points(params[n]) for n in names]
        combos = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]
        return combos[: sweep.max_trials] if sweep.max_trials else combos
    assert sweep.max_trials is not None
    trials = []
    for index in range(sweep.max_trials):
        rng = random.Random(f"{sweep.seed}:{index}")  # per trial: independent of the others' order
        trials.append({n: _draw(params[n], rng) for n in names})
    return trials


@dataclass(frozen=True)
class SweepDecision:
    start: list[int]  # trial indexes to start now
    stop: list[int]  # running trials to stop (early stop)
    done: bool  # nothing runs and nothing will start
    outcome: Literal["Running", "Succeeded", "AllTrialsFailed", "TooManyTrialsFailed"]
    best: Trial | None
    message: str


def best_trial(sweep: SweepSpec, trials: list[Trial]) -> Trial | None:
    best = None
    for t in trials:
        if t.phase == "Succeeded" and t.value is not None and (best is None or sweep.better(t.value, best.value or 0.0)):
            best = t
    return best


def decide(sweep: SweepSpec, planned: int, trials: list[Trial]) -> SweepDecision:
    """What to do next, given every trial recorded so far (by index, those not yet started absent)."""
    by_index = {t.index: t for t in trials}
    running = [t.index for t in trials if t.phase == "Running"]
    failed = sum(1 for t in trials if t.phase == "Failed")
    best = best_trial(sweep, trials)
    reached = best is not None and best.value is not None and sweep.reached(best.value)
    too_many = sweep.max_failed_share is not None and failed > sweep.max_failed_share * planned
    if reached or too_many:
        outcome: Literal["Running", "Succeeded", "AllTrialsFailed", "TooManyTrialsFailed"] = (
            "TooManyTrialsFailed" if too_many and not reached else "Succeeded")
        message = (f"{failed} of {planned} trials failed, more than maxFailedShare {sweep.max_failed_share:g}"
                   if outcome == "TooManyTrialsFailed" else
                   f"trial {best.index} reached the target {sweep.metric}={best.value:g}" if best else "")
        return SweepDecision([], running, True, outcome, best, message)
    waiting = [i for i in range(planned) if by_index.get(i) is None or by_index[i].phase == "Pending"]
    free = max(0, sweep.parallelism - len(running))
    start = waiting[:free]
    if running or start:
        return SweepDecision(start, [], False, "Running", best, f"{len(running) + len(start)} trials running")
    if best is None:
        return SweepDecision([], [], True, "AllTrialsFailed", None,
                             f"all {planned} trials failed" + _first_failure(trials))
    return SweepDecision([], [], True, "Succeeded", best,
                         f"best of {planned} trials: {best.index} with {sweep.metric}={best.value:g}")


def _first_failure(trials: list[Trial]) -> str:
    first = next((t for t in trials if t.phase == "Failed" and t.message), None)
    return f"; trial {first.index}: {first.message}" if first else ""


def summarize(sweep: SweepSpec, planned: int, trials: list[Trial]) -> SweepStatus:
    """status.sweep from the trials, with the one-line summary kubectl shows."""
    best = best_trial(sweep, trials)
    done = sum(1 for t in trials if t.phase in FINISHED)
    line = f"{done}/{planned}"
    if best is not None and best.value is not None:
        line += f" best {best.value:.4g}"
    return SweepStatus(
        planned=planned,
        succeeded=sum(1 for t in trials if t.phase == "Succeeded"),
        failed=sum(1 for t in trials if t.phase == "Failed"),
        running=sum(1 for t in trials if t.phase == "Running"),
        best_trial=best.index if best else None,
        best_value=best.value if best else None,
        summary=line,
        trials=sorted(trials, key=lambda t: t.index),
    )


def trial_params(fixed: dict[str, Any] | None, searched: dict[str, HyperValue]) -> dict[str, Any]:
    """The hyperparameters a trial's trainer gets: the fixed ones and the trial's."""
    return {**(fixed or {}), **searched}
