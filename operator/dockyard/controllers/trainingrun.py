"""TrainingRun controller: data ready -> MLflow run -> training Job -> gate -> register once.

Each step is idempotent and ordered so that a crash (SIGKILL) between any two of them is
recovered by re-reading, never by redoing:

1. the MLflow run is found by tags (TrainingRun uid + attempt) before one is created, and
   its id is written to status *before* the Job exists;
2. the Job name is deterministic per attempt (`<name>-train-<attempt>`); AlreadyExists = ours;
3. the model version is searched by run id before one is created;
4. the alias is set only when it points elsewhere.

Spec semantics: the recipe (datasetRef, modelName, trainer, resources) is immutable (CEL
`self == oldSelf`); the other fields may change and apply to the next attempt. A new
attempt starts only when `retrain.onDatasetChange` is set and the Dataset's version moves, or
when `retrain.onDrift` is set and the named ModelDeployment has drifted for `windows` windows in
a row (at most once per cooldown, and only once the previous attempt has ended).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from .. import metrics
from ..api.dataset import DatasetSpec
from ..api.trainingrun import TrainingRunSpec
from ..builders.distributed import build_engine_object, engine_object_name
from ..builders.training import build_training_job, training_job_name
from ..conditions import get_condition, now_rfc3339, set_condition, summarize
from ..kube import ApiError
from ..mlflow_client import MlflowError, MlflowNotFound, MlflowUnavailable
from ..registry_access import ForeignOwner, owner_tags
from ..rollout import parse_ts
from .base import Context, MlflowWaitError, Result, create_once, generation, set_finalizer, slim, write_status
from .common import (
    JobOutcome,
    announce_transition,
    engine_outcome,
    engine_progress,
    invalid_status,
    job_outcome,
    job_pods,
    parse_spec,
    stuck_reason,
)
from .sweep import advance_sweep

KIND = "TrainingRun"
TERMINAL = ("Succeeded", "Rejected", "Failed")

TAG_UID = "dockyard.trainingrun.uid"
TAG_ATTEMPT = "dockyard.attempt"
TAG_RUN = "dockyard.trainingrun"
TAG_DATASET = "dockyard.dataset.name"
TAG_DATASET_VERSION = "dockyard.dataset.version"
TAG_MODEL_URI = "dockyard.model_uri"
TAG_TRIGGER = "dockyard.trigger"  # datasetChange or drift; absent for a TrainingRun's first attempt
TAG_TRIGGER_DETAIL = "dockyard.trigger.detail"  # for drift: the deployment, windows and scores


# Held while an attempt's MLflow run may be open: a TrainingRun deleted mid-training ends its
# run as KILLED before it goes, instead of leaving it RUNNING in MLflow forever.
FINALIZER = "dockyard.dev/end-mlflow-run"


async def reconcile(ctx: Context, body: dict[str, Any]) -> Result:
    if body["metadata"].get("deletionTimestamp"):
        return await _finalize(ctx, body)
    spec, error = parse_spec(TrainingRunSpec, body)
    if spec is None:
        await _write(ctx, body, invalid_status(body, "InvalidSpec", error))
        return Result()
    try:
        return await _reconcile(ctx, body, spec)
    except ForeignOwner as exc:  # another namespace's experiment or model: waiting will not help
        status = dict(body.get("status") or {})
        return await _terminal(ctx, body, status, "Failed", exc.reason, exc.message, ok=False)
    except MlflowUnavailable as exc:
        await _mlflow_down(ctx, body, str(exc))
        raise MlflowWaitError(str(exc)) from exc


async def _reconcile(ctx: Context, body: dict[str, Any], spec: TrainingRunSpec) -> Result:
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    status = dict(body.get("status") or {})
    gen = generation(body)

    dataset_body = ctx.cache.get(("Dataset", ns, spec.dataset_ref.name))
    if status.get("phase") in TERMINAL:
        await set_finalizer(ctx, body, FINALIZER, present=False)  # a crash may have left it
        if _should_retrain(spec, status, dataset_body):
            version = str(((dataset_body or {}).get("status") or {}).get("version"))
            return await _start_new_attempt(ctx, body, status, dataset_body, "datasetChange",
                                            f"Dataset changed to {version[:19]}…")
        drift, wait = _drift_trigger(ctx, spec, status, dataset_body, ns)
        if drift is not None:
            status["lastDriftRetrain"] = now_rfc3339()
            return await _start_new_attempt(ctx, body, status, dataset_body, "drift", drift)
        if wait is not None:
            return Result(requeue_after=wait)
        if status.get("observedGeneration") != gen:
            status["observedGeneration"] = gen
            status["conditions"] = [{**c, "observedGeneration": gen} for c in status.get("conditions") or []]
            await _write(ctx, body, status)
        return Result()

    # 1. Data. An attempt is bound to the data version its MLflow run was opened for: once
    # bound, it never goes back to waiting, whatever happens to the Dataset meanwhile.
    attempt = int(status.get("attempt") or 1)
    if status.get("mlflowRunId") and status.get("datasetVersion"):
        data_version: str | None = str(status["datasetVersion"])
    else:
        data_version, waiting = _data_version(spec, dataset_body)
        if waiting:
            reason, message = waiting
            return await _progress(ctx, body, status, "WaitingForData", reason, message,
                                   data_ready=False, requeue=None)
    assert data_version is not None
    status.update(attempt=attempt, datasetVersion=data_version)

    # 2. The MLflow run, recorded in status before the Job exists (and the finalizer before both).
    if not status.get("mlflowRunId"):
        await set_finalizer(ctx, body, FINALIZER, present=True)
        # The default experiment is per TrainingRun and usually new: create it first (one call),
        # and a run cannot already exist in an experiment this call created.
        experiment = spec.experiment or f"dockyard/{ns}/{name}"
        found = await ctx.mlflow.ensure_experiment(experiment, likely_new=not spec.experiment, tags=owner_tags(ns))
        await ctx.registry.check_experiment(experiment, found.experiment_id, found.tags, ns)
        experiment_id, created = found.experiment_id, found.created
        identity = {TAG_UID: meta["uid"], TAG_ATTEMPT: str(attempt)}
        tags = {TAG_RUN: f"{ns}/{name}", TAG_DATASET: spec.dataset_ref.name, TAG_DATASET_VERSION: data_version,
                "mlflow.source.name": "dockyard", "dockyard.model_name": spec.model_name}
        if status.get("trigger"):  # lineage: why this attempt was trained
            tags |= {TAG_TRIGGER: str(status["trigger"]), TAG_TRIGGER_DETAIL: str(status.get("triggerMessage") or "")}
        run_id = (await ctx.mlflow.create_run(experiment_id, f"{name}-{attempt}", {**tags, **identity}) if created
                  else await ctx.mlflow.find_or_create_run(experiment_id, f"{name}-{attempt}", tags, identity))
        status.update(experimentId=experiment_id, mlflowRunId=run_id, startTime=now_rfc3339())
        status["conditions"] = set_condition(status.get("conditions"), "DataReady", "True", "DatasetReady",
                                             f"Dataset {spec.dataset_ref.name} version {data_version[:19]}…", gen)
        # The run id is in status before the Job exists; carry on in this same reconcile.
        await _progress(ctx, body, status, "Running", "RunOpened", f"MLflow run {run_id} opened",
                        data_ready=True, requeue=None)
        status = dict(body.get("status") or status)

    # 3. The training Job, a sweep's trial Jobs, or the engine's TrainJob / RayJob.
    if spec.sweep is not None:
        return await _sweep(ctx, body, spec, status, attempt=attempt, data_version=data_version,
                            dataset=dataset_body)
    if spec.backend_type() != "job":
        return await _engine(ctx, body, spec, status, attempt=attempt, data_version=data_version,
                             dataset=dataset_body)
    job_name = training_job_name(name, attempt)
    job = ctx.cache.get(("Job", ns, job_name))
    if job is None:  # create straight away: AlreadyExists means it is ours (create_once reads it then)
        if dataset_body is None:  # bound, but the Dataset went away before the Job existed
            message = f"Dataset {spec.dataset_ref.name!r} does not exist; the Job waits for it"
            return await _progress(ctx, body, status, "Running", "DatasetNotFound", message,
                                   data_ready=False, requeue=None)
        dataset_spec = DatasetSpec.model_validate(dataset_body["spec"])
        # The namespace's MLflow user may log into this experiment, and the Pod gets its Secret.
        await ctx.registry.grant_experiment(ns, str(status.get("experimentId") or ""))
        job = await create_once(ctx, build_training_job(
            body, spec, dataset_spec, attempt=attempt, run_id=status["mlflowRunId"],
            experiment_id=str(status.get("experimentId") or ""), dataset_version=data_version, cfg=ctx.cfg))
        ctx.cache.put(("Job", ns, job_name), slim(job, keep_spec=False))
    if status.get("jobName") != job_name:
        status["jobName"] = job_name
        status["conditions"] = set_condition(status.get("conditions"), "Trained", "Unknown", "Training",
                                             f"Job {job_name} is running", gen)
        return await _progress(ctx, body, status, "Running", "Training", f"training Job {job_name} started",
                               data_ready=True, requeue=None)
    outcome = await job_outcome(ctx, job)
    if not outcome.finished:
        return await _running(ctx, body, status, job)

    run_id = status["mlflowRunId"]
    if not outcome.succeeded:
        return await _training_failed(ctx, body, status, outcome, "the training Job failed")

    # 4. Metrics and the quality gate.
    status["conditions"] = set_condition(status.get("conditions"), "Trained", "True", "JobSucceeded",
                                         f"Job {job_name} succeeded", gen)
    return await _gate_and_register(ctx, body, spec, status, run_id, attempt=attempt, data_version=data_version,
                                    outcome=outcome)


async def _training_failed(ctx: Context, body: dict[str, Any], status: dict[str, Any], outcome: JobOutcome,
                           default: str) -> Result:
    """The trainer failed: the run ends FAILED, the TrainingRun too, with the trainer's (or the
    engine's) reason."""
    run_id = status["mlflowRunId"]
    reason = str((outcome.result or {}).get("reason") or outcome.reason or "TrainingFailed")
    message = str((outcome.result or {}).get("message") or outcome.message or default)
    run = await ctx.mlflow.get_run(run_id)
    if run.status not in ("FAILED", "KILLED"):
        await ctx.mlflow.set_run_status(run_id, "FAILED")
    _observe_duration(outcome, "failed")
    status["conditions"] = set_condition(status.get("conditions"), "Trained", "False", reason, message,
                                         generation(body))
    return await _terminal(ctx, body, status, "Failed", reason, message, ok=False)


async def _engine(ctx: Context, body: dict[str, Any], spec: TrainingRunSpec, status: dict[str, Any], *,
                  attempt: int, data_version: str, dataset: dict[str, Any] | None) -> Result:
    """Step 3 on Kubeflow Trainer or KubeRay: make the engine's object once, follow its status
    (the engine is not watched: polled), then steps 4 and 5 as for a Job."""
    meta = body["metadata"]
    ns, gen = meta["namespace"], generation(body)
    if spec.backend_type() not in ctx.cfg.enabled_backends:
        message = (f"backend {spec.backend_type()!r} is disabled in this operator (DOCKYARD_ENABLED_BACKENDS; "
                   f"chart value trainingBackends.{spec.backend_type()})")
        status["conditions"] = set_condition(status.get("conditions"), "Trained", "False", "BackendUnavailable",
                                             message, gen)
        return await _progress(ctx, body, status, "Pending", "BackendUnavailable", message, data_ready=True,
                               requeue=None, stuck=True)
    api = spec.backend.api() if spec.backend else None
    assert api is not None
    api_version, kind = api
    name = engine_object_name(meta["name"], attempt, kind)
    try:
        obj = await ctx.kube.get(api_version, kind, ns, name)
        if obj is None:
            if dataset is None:
                message = f"Dataset {spec.dataset_ref.name!r} does not exist; the {kind} waits for it"
                return await _progress(ctx, body, status, "Running", "DatasetNotFound", message,
                                       data_ready=False, requeue=None)
            dataset_spec = DatasetSpec.model_validate(dataset["spec"])
            secret_ref = dataset_spec.source.credentials_secret_ref
            secret_keys: list[str] = []
            if secret_ref is not None and kind == "TrainJob":
                # Trainer takes env entries, not envFrom: the Secret's key names are needed.
                secret = await ctx.kube.get("v1", "Secret", ns, secret_ref.name)
                if secret is None:
                    message = f"the Dataset's credentials Secret {secret_ref.name!r} does not exist"
                    return await _progress(ctx, body, status, "Running", "SecretNotFound", message,
                                           data_ready=False, requeue=60.0)
                secret_keys = list((secret.get("data") or {}) | (secret.get("stringData") or {}))
            await ctx.registry.grant_experiment(ns, str(status.get("experimentId") or ""))
            obj = await create_once(ctx, build_engine_object(
                body, spec, dataset_spec, attempt=attempt,
                run_id=status["mlflowRunId"], experiment_id=str(status.get("experimentId") or ""),
                dataset_version=data_version, cfg=ctx.cfg, dataset_secret_keys=secret_keys))
    except ApiError as exc:
        if exc.status != 404:
            raise
        message = (f"backend {spec.backend_type()} needs {kind} ({api_version}), which this cluster does not "
                   f"serve: install {'Kubeflow Trainer v2' if kind == 'TrainJob' else 'KubeRay'} or use backend job")
        status["conditions"] = set_condition(status.get("conditions"), "Trained", "False", "BackendUnavailable",
                                             message, gen)
        return await _progress(ctx, body, status, "Pending", "BackendUnavailable", message, data_ready=True,
                               requeue=60.0, stuck=True)
    outcome = engine_outcome(obj)
    if not outcome.finished:
        message = f"{kind} {name} is running" + engine_progress(obj)
        if status.get("jobName") != name or status.get("message") != message:
            status["jobName"] = name
            status["conditions"] = set_condition(status.get("conditions"), "Trained", "Unknown", "Training",
                                                 message, gen)
            await _progress(ctx, body, status, "Running", "Training", message, data_ready=True, requeue=None)
        return Result(requeue_after=15.0)
    if not outcome.succeeded:
        return await _training_failed(ctx, body, status, outcome, f"the {kind} failed")
    status["conditions"] = set_condition(status.get("conditions"), "Trained", "True", outcome.reason,
                                         f"{kind} {name} succeeded", gen)
    return await _gate_and_register(ctx, body, spec, status, str(status["mlflowRunId"]), attempt=attempt,
                                    data_version=data_version, outcome=outcome)


async def _sweep(ctx: Context, body: dict[str, Any], spec: TrainingRunSpec, status: dict[str, Any], *,
                 attempt: int, data_version: str, dataset: dict[str, Any] | None) -> Result:
    """Step 3 for a sweep: trials until it is over, then the winner goes through steps 4 and 5."""
    gen = generation(body)

    async def progress(st: dict[str, Any], reason: str, message: str) -> Result:
        st["conditions"] = set_condition(st.get("conditions"), "Trained", "Unknown", reason, message, gen)
        return await _progress(ctx, body, st, "Running", reason, message, data_ready=True, requeue=None)

    result = await advance_sweep(ctx, body, spec, status, attempt=attempt, data_version=data_version,
                                 dataset=dataset, progress=progress)
    if result.wait is not None:
        return result.wait
    parent = str(status["mlflowRunId"])
    if result.failure is not None:
        reason, message = result.failure
        if (await ctx.mlflow.get_run(parent)).status not in ("FAILED", "KILLED"):
            await ctx.mlflow.set_run_status(parent, "FAILED")
        status["conditions"] = set_condition(status.get("conditions"), "Trained", "False", reason, message, gen)
        return await _terminal(ctx, body, status, "Failed", reason, message, ok=False)
    best = result.best
    assert best is not None and best.mlflow_run_id is not None and spec.sweep is not None
    if (await ctx.mlflow.get_run(parent)).status == "RUNNING":
        await ctx.mlflow.set_run_status(parent, "FINISHED")
    status["conditions"] = set_condition(status.get("conditions"), "Trained", "True", "SweepSucceeded",
                                         f"best trial {best.index}: {spec.sweep.metric}={best.value:g}", gen)
    return await _gate_and_register(ctx, body, spec, status, best.mlflow_run_id, attempt=attempt,
                                    data_version=data_version, outcome=None)


async def _gate_and_register(ctx: Context, body: dict[str, Any], spec: TrainingRunSpec, status: dict[str, Any],
                             run_id: str, *, attempt: int, data_version: str, outcome: Any) -> Result:
    """Steps 4 and 5 for the run holding the model (the attempt's, or a sweep's best trial)."""
    ns = body["metadata"]["namespace"]
    gen = generation(body)
    run = await ctx.mlflow.get_run(run_id)
    metrics_now = {k: v for k, v in sorted(run.metrics.items()) if math.isfinite(v)}
    status["metrics"] = metrics_now
    if run.status == "RUNNING":  # custom trainers may not end their run; the Job did succeed
        await ctx.mlflow.set_run_status(run_id, "FINISHED")
    gate = spec.quality_gate
    if gate is not None:
        value = metrics_now.get(gate.metric)
        if value is None:
            _observe_duration(outcome, "rejected")
            msg = f"metric {gate.metric!r} was not logged to run {run_id}"
            return await _terminal(ctx, body, status, "Rejected", "MetricMissing", msg, ok=False)
        if not gate.passes(value):
            _observe_duration(outcome, "rejected")
            op = ">=" if gate.direction == "maximize" else "<="
            msg = f"quality gate failed: {gate.metric}={value:.4g}, required {op} {gate.threshold:g}"
            return await _terminal(ctx, body, status, "Rejected", "QualityGateFailed", msg, ok=False)

    # 5. Register exactly once, then alias. (Crash-safe without a status write first: the
    # version is found again by run id.) Phase Registering shows only while MLflow blocks it.
    try:
        version = await _register(ctx, body, spec, run_id, run.tags, data_version, attempt)
        if spec.alias:
            current = await ctx.mlflow.get_alias(spec.model_name, spec.alias)
            if current != version:
                await ctx.mlflow.set_alias(spec.model_name, spec.alias, version)
    except MlflowUnavailable as exc:
        status["conditions"] = set_condition(status.get("conditions"), "MlflowReachable", "False",
                                             "MlflowUnavailable", str(exc)[:500], gen)
        status.update(phase="Registering", message=f"registering {spec.model_name} from run {run_id}")
        await _write(ctx, body, status)
        raise MlflowWaitError(str(exc)) from exc
    _observe_duration(outcome, "succeeded")
    status.update(modelVersion=version, modelUri=f"models:/{spec.model_name}/{version}")
    alias_note = f", alias {spec.alias}" if spec.alias else ""
    status["conditions"] = set_condition(status.get("conditions"), "Registered", "True", "ModelRegistered",
                                         f"{spec.model_name} version {version}{alias_note}", gen)
    result = await _terminal(ctx, body, status, "Succeeded", "ModelRegistered",
                             f"registered {spec.model_name} version {version}{alias_note}", ok=True)
    if spec.alias:
        _notify_deployments(ctx, ns, spec.model_name)
    return result


async def _running(ctx: Context, body: dict[str, Any], status: dict[str, Any], job: dict[str, Any]) -> Result:
    """The Job has not finished: say so in status when its Pod is stuck (unschedulable, an image
    that cannot be pulled), which no Job condition reports and no deadline may ever end."""
    gen = generation(body)
    job_name = job["metadata"]["name"]
    stuck = stuck_reason(job, await job_pods(ctx, job))
    trained: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Trained"), {})
    if stuck is not None:
        reason, detail = stuck
        message = f"training Job {job_name} is stuck: {detail}"
        status["conditions"] = set_condition(status.get("conditions"), "Trained", "Unknown", reason, message, gen)
        await _progress(ctx, body, status, "Running", reason, message, data_ready=True, requeue=None, stuck=True)
        await_pod = 15.0
    else:
        if trained.get("reason") != "Training":  # no longer stuck
            status["conditions"] = set_condition(status.get("conditions"), "Trained", "Unknown", "Training",
                                                 f"Job {job_name} is running", gen)
            await _progress(ctx, body, status, "Running", "Training", f"training Job {job_name} started",
                            data_ready=True, requeue=None)
        # Pod changes do not wake us (no Pod watch): look again soon while the Pod is not running.
        await_pod = 15.0 if not (job.get("status") or {}).get("ready") else 60.0
    return Result(requeue_after=await_pod)


async def _register(ctx: Context, body: dict[str, Any], spec: TrainingRunSpec, run_id: str,
                    run_tags: dict[str, str], data_version: str, attempt: int) -> str:
    existing = await ctx.mlflow.find_version_by_run(spec.model_name, run_id)
    if existing is not None:
        return existing.version
    known = ctx.state.registered_models
    # One call per model per operator process, not per run.
    await ctx.registry.check_model_use(known, spec.model_name, body["metadata"]["namespace"], create=True)
    source = run_tags.get(TAG_MODEL_URI) or f"runs:/{run_id}/model"
    model_id = source[len("models:/"):] if source.startswith("models:/m-") else None
    meta = body["metadata"]
    tags = {
        TAG_RUN: f"{meta['namespace']}/{meta['name']}",
        TAG_UID: meta["uid"],
        TAG_ATTEMPT: str(attempt),
        TAG_DATASET: spec.dataset_ref.name,
        TAG_DATASET_VERSION: data_version,
        "dockyard.mlflow_run_id": run_id,
    }
    try:
        created = await ctx.mlflow.create_version(spec.model_name, source, run_id, tags, model_id=model_id)
    except MlflowError:
        # A lost response to an earlier create may have registered it after all.
        again = await ctx.mlflow.find_version_by_run(spec.model_name, run_id)
        if again is None:
            known.pop(spec.model_name, None)  # e.g. the model was deleted: create it again next time
            raise
        return again.version
    metrics.MODEL_VERSIONS_REGISTERED.labels(model=spec.model_name).inc()
    await ctx.events.emit(body, "Normal", "ModelRegistered",
                          f"registered {spec.model_name} version {created.version}")
    return created.version


def _data_version(spec: TrainingRunSpec, dataset: dict[str, Any] | None) -> tuple[str | None, tuple[str, str] | None]:
    ref = spec.dataset_ref
    if dataset is None:
        return None, ("DatasetNotFound", f"Dataset {ref.name!r} does not exist")
    ds_status = dataset.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in ds_status.get("conditions") or [])
    if not ready or not ds_status.get("version"):
        return None, ("DatasetNotReady", f"Dataset {ref.name!r} is {ds_status.get('phase') or 'not ready'}")
    current = str(ds_status["version"])
    if ref.version and ref.version != current:
        return None, ("DatasetVersionMismatch",
                      f"pinned version {ref.version[:19]}… is not the Dataset's current data ({current[:19]}…)")
    return current, None


def _should_retrain(spec: TrainingRunSpec, status: dict[str, Any], dataset: dict[str, Any] | None) -> bool:
    if not (spec.retrain and spec.retrain.on_dataset_change) or spec.dataset_ref.version:
        return False
    version, waiting = _data_version(spec, dataset)
    return waiting is None and version is not None and version != status.get("datasetVersion")


def _drift_trigger(ctx: Context, spec: TrainingRunSpec, status: dict[str, Any], dataset: dict[str, Any] | None,
                   ns: str) -> tuple[str | None, float | None]:
    """(why to retrain now, or None; seconds until the cooldown ends, when it holds a retrain back).
    Sustained drift is the watched ModelDeployment's count of drifted windows in a row."""
    on_drift = spec.retrain.on_drift if spec.retrain else None
    if on_drift is None:
        return None, None
    md = ctx.cache.get(("ModelDeployment", ns, on_drift.model_deployment))
    monitoring = ((md or {}).get("status") or {}).get("monitoring") or {}
    windows = int(monitoring.get("consecutiveDriftWindows") or 0)
    if windows < on_drift.windows:
        return None, None
    last = parse_ts(status.get("lastDriftRetrain"))
    if last is not None:
        left = on_drift.cooldown_seconds() - (datetime.now(UTC) - last).total_seconds()
        if left > 0:
            return None, left
    _, waiting = _data_version(spec, dataset)
    if waiting is not None:
        return None, None  # the Dataset's event wakes this run again
    drift = get_condition(((md or {}).get("status") or {}).get("conditions"), "DataDrift") or {}
    return (f"ModelDeployment {on_drift.model_deployment} drifted for {windows} windows in a row: "
            f"{drift.get('message') or 'no detail'}")[:4000], None


async def _start_new_attempt(ctx: Context, body: dict[str, Any], status: dict[str, Any],
                             dataset: dict[str, Any] | None, trigger: str, why: str) -> Result:
    attempt = int(status.get("attempt") or 1) + 1
    new_version = str(((dataset or {}).get("status") or {}).get("version"))
    for key in ("mlflowRunId", "jobName", "metrics", "modelVersion", "modelUri", "startTime", "completionTime",
                "experimentId", "sweep"):
        status.pop(key, None)
    status.update(attempt=attempt, datasetVersion=new_version, trigger=trigger, triggerMessage=why)
    status["conditions"] = [c for c in status.get("conditions") or []
                            if c.get("type") not in ("Trained", "Registered")]
    await ctx.events.emit(body, "Normal", "Retraining", f"{why[:900]}: starting attempt {attempt}")
    reason = "DriftDetected" if trigger == "drift" else "DatasetChanged"
    return await _progress(ctx, body, status, "Pending", reason,
                           f"attempt {attempt} ({trigger}) for dataset version {new_version[:19]}…", data_ready=True,
                           requeue=0.0)


async def _progress(ctx: Context, body: dict[str, Any], status: dict[str, Any], phase: str, reason: str,
                    message: str, *, data_ready: bool, requeue: float | None, stuck: bool = False) -> Result:
    gen = generation(body)
    status = _clear_mlflow_outage(status, gen)
    if not data_ready:
        status["conditions"] = set_condition(status.get("conditions"), "DataReady", "False", reason, message, gen)
    status.update(phase=phase, observedGeneration=gen, message=message)
    status["conditions"] = summarize(status.get("conditions"), ready=None if data_ready and not stuck else False,
                                     reason=reason, message=message, generation=gen)
    await _write(ctx, body, status)
    return Result(requeue_after=requeue)


async def _terminal(ctx: Context, body: dict[str, Any], status: dict[str, Any], phase: str, reason: str,
                    message: str, *, ok: bool) -> Result:
    gen = generation(body)
    status = _clear_mlflow_outage(status, gen)
    now = now_rfc3339()
    status.update(phase=phase, observedGeneration=gen, message=message, completionTime=now)
    status["conditions"] = summarize(status.get("conditions"), ready=ok, reason=reason, message=message,
                                     generation=gen, stalled=not ok)
    history = list(status.get("history") or [])
    attempt = int(status.get("attempt") or 1)
    if not any(h.get("attempt") == attempt for h in history):
        entry = {"attempt": attempt, "datasetVersion": status.get("datasetVersion"),
                 "mlflowRunId": status.get("mlflowRunId"), "jobName": status.get("jobName"), "result": phase,
                 "modelVersion": status.get("modelVersion"), "completionTime": now, "trigger": status.get("trigger")}
        history.append({k: v for k, v in entry.items() if v is not None})
    status["history"] = history[-ctx.cfg.history_limit:]
    await _write(ctx, body, status)
    await set_finalizer(ctx, body, FINALIZER, present=False)  # the run has ended: nothing to clean up
    return Result()


async def _finalize(ctx: Context, body: dict[str, Any]) -> Result:
    """Deleted: end the attempt's MLflow run as KILLED if it is still open, then let the object go."""
    if FINALIZER not in (body["metadata"].get("finalizers") or []):
        return Result()
    run_id = (body.get("status") or {}).get("mlflowRunId")
    if run_id:
        try:
            run = await ctx.mlflow.get_run(str(run_id))
            if run.status in ("RUNNING", "SCHEDULED"):
                await ctx.mlflow.set_run_status(str(run_id), "KILLED")
        except MlflowNotFound:
            pass  # deleted in MLflow already
        except MlflowUnavailable as exc:  # the object stays Terminating until MLflow answers
            raise MlflowWaitError(str(exc)) from exc
    await set_finalizer(ctx, body, FINALIZER, present=False)
    return Result()


def _clear_mlflow_outage(status: dict[str, Any], gen: int) -> dict[str, Any]:
    conds = status.get("conditions") or []
    if any(c.get("type") == "MlflowReachable" and c.get("status") != "True" for c in conds):
        status["conditions"] = set_condition(conds, "MlflowReachable", "True", "MlflowReachable",
                                             "MLflow answered again", gen)
    return status


async def _mlflow_down(ctx: Context, body: dict[str, Any], message: str) -> None:
    status = dict(body.get("status") or {})
    gen = generation(body)
    status["conditions"] = set_condition(status.get("conditions"), "MlflowReachable", "False",
                                         "MlflowUnavailable", message[:500], gen)
    await _write(ctx, body, status)


async def _write(ctx: Context, body: dict[str, Any], status: dict[str, Any]) -> None:
    old = body.get("status")
    updated = await write_status(ctx, body, status)
    body.update(updated)
    await announce_transition(ctx, body, old, status)


def _observe_duration(outcome: Any, result: str) -> None:
    if outcome is None:  # a sweep: its trials ran as several Jobs
        return
    seconds = outcome.duration_seconds
    if seconds is not None:
        metrics.TRAINING_DURATION.labels(result=result).observe(seconds)


def _notify_deployments(ctx: Context, namespace: str, model_name: str) -> None:
    """The alias we just moved may be served: let those ModelDeployments re-resolve now."""
    for md in ctx.cache.by_kind("ModelDeployment", namespace):
        if (md.get("spec") or {}).get("modelName") == model_name:
            ctx.state.deployments(md["metadata"]["uid"]).resolve_now = True
            ctx.queue.add(("ModelDeployment", namespace, md["metadata"]["name"]))
