"""Dataset controller: profile the source in a Job, version it by content, re-check on a timer.

Job names are deterministic per (generation, refresh number), so a repeated or resumed
reconcile finds the Job it already started instead of starting another. A scheduled
refresh whose data is unchanged costs one Job and one status write (`lastChecked`,
`refreshCount`); we keep that write because "when was this data last verified" is what a
user asks first when a model looks stale, and it is one small patch per interval.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ..api.common import parse_duration
from ..api.dataset import DatasetSpec
from ..builders.training import build_profile_job, profile_job_name
from ..conditions import now_rfc3339
from ..labels import COMPONENT_LABEL, SOURCE_REVISION_ANNOTATION, owned_by
from .base import Context, Result, create_once, generation, write_status
from .common import announce_transition, invalid_status, job_outcome, parse_spec, phase_status

KIND = "Dataset"
TERMINAL = ("Ready", "Invalid", "Failed")
# Floor for refreshInterval: "0s" is valid syntax but would re-profile in a tight loop.
MIN_REFRESH_SECONDS = 10
# Finished profile Jobs kept per Dataset (with their Pods, for `kubectl logs`); older ones are
# deleted, or a 10 s refreshInterval would leave 8,640 Jobs a day.
PROFILE_JOBS_KEPT = 3


async def reconcile(ctx: Context, body: dict[str, Any]) -> Result:
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    old_status = body.get("status") or {}
    spec, error = parse_spec(DatasetSpec, body)
    if spec is None:
        return await _finish(ctx, body, invalid_status(body, "InvalidSpec", error))

    gen = generation(body)
    refresh = int(old_status.get("refreshCount") or 0)
    recorded = old_status.get("observedGeneration") == gen and old_status.get("phase") in TERMINAL
    revision = await _source_revision(ctx, ns, spec)
    if recorded and old_status.get("jobName") == profile_job_name(name, gen, refresh):
        edited = revision is not None and old_status.get("sourceRevision") not in (None, revision)
        due_in = 0.0 if edited else _refresh_due_in(spec, old_status)  # an edited ConfigMap: at once
        if due_in is None:
            return Result()
        if due_in > 0:
            return Result(requeue_after=due_in)
        refresh += 1  # time for the next check
    elif not recorded:
        refresh = refresh if old_status.get("observedGeneration") == gen else 0

    job_name = profile_job_name(name, gen, refresh)
    job = ctx.cache.get(("Job", ns, job_name)) or await ctx.kube.get("batch/v1", "Job", ns, job_name)
    if job is None:
        missing = await _missing_reference(ctx, ns, spec)
        if missing:
            reason, message = missing
            await _finish(ctx, body, phase_status(body, phase="Pending", ready=False, reason=reason, message=message))
            return Result(requeue_after=30.0)
        job = await create_once(ctx, build_profile_job(body, spec, job_name=job_name, cfg=ctx.cfg,
                                                       source_revision=revision))
    outcome = await job_outcome(ctx, job)
    if not outcome.finished:
        if recorded:  # a scheduled re-check: the current version stays Ready meanwhile
            return Result(requeue_after=30.0)
        status = phase_status(body, phase="Validating", ready=None, reason="Profiling",
                         message=f"profiling Job {job_name} is running")
        status["jobName"] = job_name
        status["refreshCount"] = refresh
        await _finish(ctx, body, status)
        return Result(requeue_after=30.0)  # the Job watch usually wakes us sooner

    status = _record_result(body, old_status, job_name, refresh, outcome.result, outcome)
    read = (job["metadata"].get("annotations") or {}).get(SOURCE_REVISION_ANNOTATION)
    if read is not None:
        status["sourceRevision"] = read
    await _finish(ctx, body, status)
    await _prune_profile_jobs(ctx, body)
    if status.get("version") and status.get("version") != old_status.get("version") and old_status.get("version"):
        await ctx.events.emit(body, "Normal", "NewVersion", f"data changed: {status['version'][:19]}…")
    due_in = _refresh_due_in(spec, status)
    return Result(requeue_after=due_in if due_in is not None else None)


def _record_result(body: dict[str, Any], old: dict[str, Any], job_name: str, refresh: int,
                   result: dict[str, Any] | None, outcome: Any) -> dict[str, Any]:
    now = now_rfc3339()
    if result is None:
        reason = outcome.reason or "ProfilingFailed"
        message = outcome.message or "the profiling Job ended without a result"
        status = phase_status(body, phase="Failed", ready=False, reason="ProfilingFailed",
                         message=f"{reason}: {message}", stalled=True)
    elif not result.get("ok"):
        errors = result.get("errors") or []
        reason = str(result.get("reason") or "ValidationFailed")
        message = "; ".join(str(e) for e in errors[:5]) or reason
        status = phase_status(body, phase="Invalid", ready=False, reason=reason, message=message, stalled=True)
    else:
        version = str(result.get("version"))
        status = phase_status(body, phase="Ready", ready=True, reason="Validated",
                         message=f"{result.get('rows')} rows, version {version[:19]}…")
        status.update(version=version, rows=result.get("rows"), columns=result.get("columns"),
                      profile=result.get("profile"))
        versions = list(old.get("versions") or [])
        if not versions or versions[-1].get("version") != version:
            versions.append({"version": version, "rows": result.get("rows"), "observedAt": now})
        status["versions"] = versions[-10:]
    status.update(jobName=job_name, refreshCount=refresh, lastChecked=now)
    return status


def _refresh_due_in(spec: DatasetSpec, status: dict[str, Any]) -> float | None:
    if not spec.refresh_interval or not status.get("lastChecked"):
        return None
    last = datetime.fromisoformat(str(status["lastChecked"]).replace("Z", "+00:00"))
    elapsed = (datetime.now(UTC) - last).total_seconds()
    interval = max(parse_duration(spec.refresh_interval), MIN_REFRESH_SECONDS)
    return max(interval - elapsed, 0.0)


async def _source_revision(ctx: Context, ns: str, spec: DatasetSpec) -> str | None:
    """The resourceVersion of the ConfigMap the Dataset reads, if any: from the cache (it is
    watched), else read (a ConfigMap created just before the Dataset may not be cached yet)."""
    volume = spec.source.volume
    if volume is None or volume.config_map is None:
        return None
    config_map = ctx.cache.get(("ConfigMap", ns, volume.config_map.name))
    if config_map is None:
        config_map = await ctx.kube.get("v1", "ConfigMap", ns, volume.config_map.name)
    return str(config_map["metadata"]["resourceVersion"]) if config_map else None


async def _prune_profile_jobs(ctx: Context, body: dict[str, Any]) -> None:
    """Delete this Dataset's finished profile Jobs beyond the newest PROFILE_JOBS_KEPT."""
    meta = body["metadata"]
    finished = [
        job for job in ctx.cache.by_kind("Job", meta["namespace"])
        if owned_by(job, body) and job["metadata"].get("labels", {}).get(COMPONENT_LABEL) == "profiler"
        and any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                for c in (job.get("status") or {}).get("conditions") or [])
    ]
    finished.sort(key=lambda j: (j["metadata"].get("creationTimestamp") or "", j["metadata"]["name"]))
    for job in finished[:-PROFILE_JOBS_KEPT]:
        await ctx.kube.delete("batch/v1", "Job", meta["namespace"], job["metadata"]["name"])
        ctx.cache.drop(("Job", meta["namespace"], job["metadata"]["name"]))


async def _missing_reference(ctx: Context, ns: str, spec: DatasetSpec) -> tuple[str, str] | None:
    secret = spec.source.credentials_secret_ref
    if secret is not None and await ctx.kube.get("v1", "Secret", ns, secret.name) is None:
        return "SecretNotFound", f"credentials Secret {secret.name!r} does not exist"
    volume = spec.source.volume
    if volume is not None and volume.config_map is not None:
        if await ctx.kube.get("v1", "ConfigMap", ns, volume.config_map.name) is None:
            return "ConfigMapNotFound", f"ConfigMap {volume.config_map.name!r} does not exist"
    return None


async def _finish(ctx: Context, body: dict[str, Any], status: dict[str, Any]) -> Result:
    old = body.get("status")
    await write_status(ctx, body, status)
    await announce_transition(ctx, body, old, status)
    return Result()
