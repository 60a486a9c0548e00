"""The I/O of a TrainingRun's hyperparameter sweep: one child MLflow run and one Job per trial,
their outcomes, early stop, and the winner copied onto the sweep's parent run. The decisions
are `dockyard.sweep`'s (pure).

Exactly once, as for a single attempt: a trial's run is found again by its tags (TrainingRun
uid + attempt, trial index) before one is created, its id is in status before its Job exists,
and the Job's name is deterministic (`<name>-train-<attempt>-t<index>`), so a restart finds
both and never starts a trial twice.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..api.dataset import DatasetSpec
from ..api.sweep import SweepSpec, SweepStatus, Trial
from ..api.trainingrun import TrainingRunSpec
from ..builders.training import build_training_job, training_job_name
from ..mlflow_client import MlflowNotFound
from ..sweep import decide, plan, summarize
from .base import Context, Result, create_once, slim
from .common import job_outcome

TAG_SWEEP_OF = "dockyard.sweep.of"  # <TrainingRun uid>/<attempt> on every trial run
TAG_TRIAL = "dockyard.trial"
TAG_PARENT = "mlflow.parentRunId"  # nests the trial under the sweep's run in the MLflow UI
TAG_BEST_TRIAL = "dockyard.sweep.best_trial"
TAG_BEST_RUN = "dockyard.sweep.best_run"

Progress = Callable[[dict[str, Any], str, str], Awaitable[Result]]


@dataclass(frozen=True)
class SweepResult:
    """In progress (`wait`), or over: the winner, or why the sweep failed."""

    wait: Result | None = None
    best: Trial | None = None
    failure: tuple[str, str] | None = None


def previous_trials(status: dict[str, Any]) -> list[Trial]:
    raw = status.get("sweep")
    if not raw:
        return []
    try:
        return list(SweepStatus.model_validate(raw).trials or [])
    except ValueError:
        return []


async def advance_sweep(ctx: Context, body: dict[str, Any], spec: TrainingRunSpec, status: dict[str, Any], *,
                        attempt: int, data_version: str, dataset: dict[str, Any] | None,
                        progress: Progress) -> SweepResult:
    sweep = spec.sweep
    assert sweep is not None
    planned = plan(sweep)
    trials = {t.index: t for t in previous_trials(status)}
    for index, trial in list(trials.items()):
        if trial.phase == "Running":
            trials[index] = await _observe(ctx, body, spec, sweep, trial, attempt, data_version, dataset, status)
    decision = decide(sweep, len(planned), list(trials.values()))
    for index in decision.stop:
        trials[index] = await _stop(ctx, body, trials[index], decision.message)
    started = []
    for index in decision.start:
        if dataset is None:
            break  # the Dataset went away: the running trials go on, new ones wait for it
        trial = Trial(index=index, parameters=planned[index])
        trials[index] = await _open_run(ctx, body, spec, trial, attempt, status)
        status["sweep"] = summarize(sweep, len(planned), list(trials.values())).to_api()
        await progress(status, "Sweeping", f"trial {index} starting")  # the run id is in status first
        trials[index] = await _start_job(ctx, body, spec, trials[index], attempt, data_version, dataset, status)
        started.append(index)
    status["sweep"] = summarize(sweep, len(planned), list(trials.values())).to_api()
    if not decision.done or started:
        line = status["sweep"]["summary"]
        return SweepResult(wait=await progress(status, "Sweeping", f"sweep {line}: {decision.message}"))
    if decision.outcome != "Succeeded" or decision.best is None:
        return SweepResult(failure=(decision.outcome, decision.message))
    await _crown(ctx, status, decision.best)
    return SweepResult(best=decision.best)


async def _open_run(ctx: Context, body: dict[str, Any], spec: TrainingRunSpec, trial: Trial, attempt: int,
                    status: dict[str, Any]) -> Trial:
    meta = body["metadata"]
    parent = str(status["mlflowRunId"])
    identity = {TAG_SWEEP_OF: f"{meta['uid']}/{attempt}", TAG_TRIAL: str(trial.index)}
    tags = {TAG_PARENT: parent, "mlflow.source.name": "dockyard", "dockyard.model_name": spec.model_name,
            "dockyard.trainingrun": f"{meta['namespace']}/{meta['name']}"}
    run_id = await ctx.mlflow.find_or_create_run(str(status["experimentId"]),
                                                 f"{meta['name']}-{attempt}-t{trial.index}", tags, identity)
    job_name = training_job_name(meta["name"], attempt, trial.index)
    return trial.model_copy(update={"phase": "Running", "mlflow_run_id": run_id, "job_name": job_name})


async def _start_job(ctx: Context, body: dict[str, Any], spec: TrainingRunSpec, trial: Trial, attempt: int,
                     data_version: str, dataset: dict[str, Any] | None, status: dict[str, Any]) -> Trial:
    ns = body["metadata"]["namespace"]
    assert dataset is not None and trial.mlflow_run_id is not None
    job = await create_once(ctx, build_training_job(
        body, spec, DatasetSpec.model_validate(dataset["spec"]), attempt=attempt, run_id=trial.mlflow_run_id,
        experiment_id=str(status.get("experimentId") or ""), dataset_version=data_version, cfg=ctx.cfg, trial=trial))
    ctx.cache.put(("Job", ns, job["metadata"]["name"]), slim(job, keep_spec=False))
    return trial


async def _observe(ctx: Context, body: dict[str, Any], spec: TrainingRunSpec, sweep: SweepSpec, trial: Trial,
                   attempt: int, data_version: str, dataset: dict[str, Any] | None, status: dict[str, Any]) -> Trial:
    """A running trial's Job: still running, or its result read from the trial's run."""
    ns = body["metadata"]["namespace"]
    assert trial.job_name is not None and trial.mlflow_run_id is not None
    job = ctx.cache.get(("Job", ns, trial.job_name)) or await ctx.kube.get("batch/v1", "Job", ns, trial.job_name)
    if job is None:  # recorded, then the operator stopped before creating it (or it was deleted)
        if dataset is not None:
            await _start_job(ctx, body, spec, trial, attempt, data_version, dataset, status)
        return trial
    outcome = await job_outcome(ctx, job)
    if not outcome.finished:
        return trial
    run = await ctx.mlflow.get_run(trial.mlflow_run_id)
    if not outcome.succeeded:
        reason = str((outcome.result or {}).get("reason") or outcome.reason or "TrainingFailed")
        message = str((outcome.result or {}).get("message") or outcome.message or "the trial's Job failed")
        if run.status not in ("FAILED", "KILLED"):
            await ctx.mlflow.set_run_status(trial.mlflow_run_id, "FAILED")
        return trial.model_copy(update={"phase": "Failed", "message": f"{reason}: {message}"[:500]})
    if run.status == "RUNNING":
        await ctx.mlflow.set_run_status(trial.mlflow_run_id, "FINISHED")
    value = run.metrics.get(sweep.metric)
    if value is None or not math.isfinite(value):
        return trial.model_copy(update={"phase": "Failed",
                                        "message": f"MetricMissing: {sweep.metric!r} was not logged to the trial's run"})
    return trial.model_copy(update={"phase": "Succeeded", "value": value})


async def _stop(ctx: Context, body: dict[str, Any], trial: Trial, why: str) -> Trial:
    """Early stop: the trial's Job is deleted (its Pods with it) and its run ended as KILLED."""
    ns = body["metadata"]["namespace"]
    if trial.job_name:
        await ctx.kube.delete("batch/v1", "Job", ns, trial.job_name)
    if trial.mlflow_run_id:
        try:
            await ctx.mlflow.set_run_status(trial.mlflow_run_id, "KILLED")
        except MlflowNotFound:
            pass
    return trial.model_copy(update={"phase": "Stopped", "message": f"stopped early: {why}"[:500]})


async def _crown(ctx: Context, status: dict[str, Any], best: Trial) -> None:
    """The sweep's parent run carries the winner's parameters and metrics."""
    assert best.mlflow_run_id is not None
    parent = str(status["mlflowRunId"])
    run = await ctx.mlflow.get_run(best.mlflow_run_id)
    metrics = {k: v for k, v in sorted(run.metrics.items()) if math.isfinite(v)}
    await ctx.mlflow.log_batch(parent, dict(run.params), metrics,
                               {TAG_BEST_TRIAL: str(best.index), TAG_BEST_RUN: best.mlflow_run_id})
