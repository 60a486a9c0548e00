"""Sweep decisions (dockyard.sweep): the trials planned, which start, when the sweep is over."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from dockyard.api.sweep import SweepSpec, Trial
from dockyard.api.trainingrun import TrainingRunSpec
from dockyard.sweep import decide, plan, summarize


def grid(**extra: object) -> SweepSpec:
    return SweepSpec.model_validate({
        "metric": "accuracy", "parallelism": 3,
        "parameters": [{"name": "n_estimators", "values": [5, 10, 20]},
                       {"name": "max_depth", "min": 2, "max": 8, "type": "int", "steps": 3}],
        **extra})


def test_a_3x3_grid_plans_nine_distinct_trials_the_same_every_time() -> None:
    trials = plan(grid())
    assert len(trials) == 9 and plan(grid()) == trials
    assert {(t["n_estimators"], t["max_depth"]) for t in trials} == {
        (n, d) for n in (5, 10, 20) for d in (2, 5, 8)}


def test_random_draws_stay_in_range_on_their_scale_and_depend_only_on_seed_and_index() -> None:
    spec = SweepSpec.model_validate({
        "strategy": "random", "maxTrials": 50, "metric": "rmse", "direction": "minimize", "seed": 7,
        "parameters": [{"name": "alpha", "min": 1e-4, "max": 1.0, "scale": "log"},
                       {"name": "depth", "min": 1, "max": 4, "type": "int"},
                       {"name": "loss", "values": ["huber", "squared_error"]}]})
    trials = plan(spec)
    assert len(trials) == 50 and trials == plan(spec)
    assert all(1e-4 <= t["alpha"] <= 1.0 for t in trials)  # type: ignore[operator]
    assert {t["depth"] for t in trials} == {1, 2, 3, 4} and {t["loss"] for t in trials} == {"huber", "squared_error"}
    # Log scale: about as many draws below 0.01 as above (two decades each side).
    assert 10 <= sum(1 for t in trials if t["alpha"] < 0.01) <= 40  # type: ignore[operator]
    longer = plan(spec.model_copy(update={"max_trials": 60}))
    assert longer[:50] == trials  # trial i is the same whatever the budget
    assert plan(spec.model_copy(update={"seed": 8})) != trials


def running(index: int) -> Trial:
    return Trial(index=index, parameters={}, phase="Running", mlflow_run_id=f"r{index}", job_name=f"j{index}")


def done(index: int, value: float | None) -> Trial:
    phase = "Failed" if value is None else "Succeeded"
    return Trial(index=index, parameters={}, phase=phase, value=value, message="boom" if value is None else None)


def test_trials_start_up_to_the_parallelism_and_the_best_wins_at_the_end() -> None:
    spec = grid()
    first = decide(spec, 9, [])
    assert first.start == [0, 1, 2] and not first.done
    later = decide(spec, 9, [done(0, 0.9), running(1), running(2)])
    assert later.start == [3] and later.best is not None and later.best.index == 0
    end = decide(spec, 9, [done(i, 0.8 + i / 100) for i in range(8)] + [done(8, None)])
    assert end.done and end.outcome == "Succeeded" and end.best is not None and end.best.index == 7
    status = summarize(spec, 9, [done(i, 0.8 + i / 100) for i in range(8)] + [done(8, None)])
    assert (status.succeeded, status.failed, status.best_trial, status.summary) == (8, 1, 7, "9/9 best 0.87")


def test_minimize_picks_the_lowest() -> None:
    spec = grid(direction="minimize")
    end = decide(spec, 3, [done(0, 0.3), done(1, 0.1), done(2, 0.2)])
    assert end.best is not None and end.best.index == 1


def test_a_trial_reaching_the_target_stops_the_sweep_and_the_running_trials() -> None:
    decision = decide(grid(target=0.95), 9, [done(0, 0.97), running(1), running(2)])
    assert decision.done and decision.outcome == "Succeeded" and decision.start == [] and decision.stop == [1, 2]


def test_failures_fail_the_sweep_only_when_all_fail_or_beyond_the_declared_share() -> None:
    spec = grid()
    some = decide(spec, 3, [done(0, None), done(1, 0.5), done(2, None)])
    assert some.outcome == "Succeeded" and some.best is not None and some.best.index == 1
    everything = decide(spec, 2, [done(0, None), done(1, None)])
    assert everything.outcome == "AllTrialsFailed" and "trial 0: boom" in everything.message
    share = decide(grid(maxFailedShare=0.2), 9, [done(0, None), done(1, None), running(2)])
    assert share.done and share.outcome == "TooManyTrialsFailed" and share.stop == [2]


@pytest.mark.parametrize("bad, where", [
    ({"parameters": [{"name": "d", "min": 3, "max": 3}]}, "range is empty"),
    ({"parameters": [{"name": "d", "min": 1, "max": 3, "scale": "exp"}]}, "scale"),
    ({"strategy": "random", "maxTrials": 0, "parameters": [{"name": "d", "values": [1]}]}, "maxTrials"),
    ({"strategy": "random", "parameters": [{"name": "d", "values": [1]}]}, "needs maxTrials"),
    ({"parameters": [{"name": "d", "values": list(range(100))}, {"name": "e", "values": list(range(3))}]},
     "300 combinations"),
])
def test_invalid_search_spaces_are_refused(bad: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError, match=where):
        SweepSpec.model_validate({"metric": "accuracy", **bad})


def test_a_name_both_fixed_and_swept_is_refused() -> None:
    with pytest.raises(ValidationError, match="max_depth also fixed"):
        TrainingRunSpec.model_validate({
            "datasetRef": {"name": "iris"}, "modelName": "m",
            "trainer": {"estimator": {"class": "sklearn.tree.DecisionTreeClassifier",
                                      "hyperparameters": {"max_depth": 3}}},
            "sweep": {"metric": "accuracy", "parameters": [{"name": "max_depth", "values": [2, 4]}]}})


def test_log_grid_points_are_spread_evenly_on_the_log_scale() -> None:
    spec = SweepSpec.model_validate({"metric": "m", "parameters": [
        {"name": "c", "min": 0.01, "max": 100, "scale": "log", "steps": 5}]})
    points = [t["c"] for t in plan(spec)]
    assert [round(math.log10(p), 6) for p in points] == [-2, -1, 0, 1, 2]  # type: ignore[arg-type]
