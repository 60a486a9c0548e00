"""Helpers the three controllers share: spec parsing, phase transitions, Job outcomes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..conditions import summarize
from ..kube import ApiError
from .base import Context, generation

M = TypeVar("M", bound=BaseModel)


MAX_ERROR_MESSAGE = 2000  # status messages must stay far below the CRD's 32 KiB limit


def format_validation_error(exc: ValidationError) -> str:
    """`spec.variants[0].weight: Input should be ...` — one line per problem, field first.

    Bounded: a hostile value (e.g. a 40 kB map key) must never make the status unwritable.
    """
    lines = []
    for err in exc.errors()[:10]:
        path = "spec"
        for part in err["loc"]:
            text = str(part)
            text = text if len(text) <= 64 else text[:61] + "..."
            path += f"[{text}]" if isinstance(part, int) else f".{text}"
        msg = str(err["msg"])
        lines.append(f"{path}: {msg if len(msg) <= 300 else msg[:297] + '...'}")
    out = "; ".join(lines)
    return out if len(out) <= MAX_ERROR_MESSAGE else out[: MAX_ERROR_MESSAGE - 3] + "..."


def status_section[M: BaseModel](model: type[M], body: dict[str, Any], key: str) -> M | None:
    """`status.<key>` as `model`, or None when absent or written by an older operator (start over)."""
    raw = (body.get("status") or {}).get(key)
    if not raw:
        return None
    try:
        return model.model_validate(raw)
    except ValueError:
        return None


def parse_spec[M: BaseModel](model: type[M], body: dict[str, Any]) -> tuple[M | None, str]:
    try:
        return model.model_validate(body.get("spec") or {}), ""
    except ValidationError as exc:
        return None, format_validation_error(exc)


def phase_status(body: dict[str, Any], *, phase: str, ready: bool | None, reason: str, message: str,
                 stalled: bool = False) -> dict[str, Any]:
    """The object's status with phase, observedGeneration, message and the kstatus conditions set."""
    status = dict(body.get("status") or {})
    gen = generation(body)
    status.update(
        phase=phase,
        observedGeneration=gen,
        message=message,
        conditions=summarize(status.get("conditions"), ready=ready, reason=reason, message=message,
                             generation=gen, stalled=stalled),
    )
    return status


def invalid_status(body: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
    """Status for a spec the operator refuses: Ready=False, Stalled, no children made."""
    return phase_status(body, phase="Invalid", ready=False, reason=reason, message=message, stalled=True)


async def announce_transition(ctx: Context, body: dict[str, Any], old: dict[str, Any] | None,
                              new: dict[str, Any]) -> None:
    """An Event for each phase change (Warning for failures) and for a new failure reason."""
    old = old or {}
    old_phase, new_phase = old.get("phase"), new.get("phase")
    old_reason = _ready_reason(old)
    new_reason = _ready_reason(new)
    if old_phase == new_phase and old_reason == new_reason:
        return
    warning = new_phase in ("Invalid", "Failed", "Rejected", "Degraded") or (
        new_reason is not None and new_reason.endswith(("NotFound", "Unavailable", "Unreachable", "Mismatch"))
    )
    if old_phase == new_phase and not warning:
        return  # progress inside a phase (e.g. run opened -> Job started) is in status, not Events
    reason = new_reason if new_reason and (warning or old_phase == new_phase) else (new_phase or "Unknown")
    message = new.get("message") or f"phase {old_phase or '-'} -> {new_phase}"
    await ctx.events.emit(body, "Warning" if warning else "Normal", reason, message)


def _ready_reason(status: dict[str, Any]) -> str | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("reason") or "") or None
    return None


@dataclass
class JobOutcome:
    """What a finished (or running) Job says."""

    finished: bool
    succeeded: bool = False
    reason: str = ""
    message: str = ""
    result: dict[str, Any] | None = None  # the JSON the container wrote to its termination log
    started: str | None = None
    completed: str | None = None

    @property
    def duration_seconds(self) -> float | None:
        if not self.started or not self.completed:
            return None
        return (_parse_time(self.completed) - _parse_time(self.started)).total_seconds()


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def engine_outcome(obj: dict[str, Any]) -> JobOutcome:
    """What a TrainJob (conditions Complete / Failed) or a RayJob (jobDeploymentStatus and
    jobStatus, with the engine's reason and message) says, in the training Job's terms."""
    status = obj.get("status") or {}
    if obj.get("kind") == "TrainJob":
        conds = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
        for kind, ok in (("Complete", True), ("Failed", False)):
            if kind in conds:
                cond = conds[kind]
                return JobOutcome(finished=True, succeeded=ok, reason=str(cond.get("reason") or f"TrainJob{kind}"),
                                  message=str(cond.get("message") or ""),
                                  completed=cond.get("lastTransitionTime"))
        return JobOutcome(finished=False)
    deployment, job = status.get("jobDeploymentStatus"), status.get("jobStatus")
    started, completed = status.get("startTime"), status.get("endTime")
    if deployment == "Complete" and job == "SUCCEEDED":
        return JobOutcome(finished=True, succeeded=True, reason="RayJobSucceeded", started=started, completed=completed)
    if deployment in ("Failed", "ValidationFailed") or job in ("FAILED", "STOPPED"):
        reason = str(status.get("reason") or deployment or "RayJobFailed")
        return JobOutcome(finished=True, succeeded=False, reason=reason, message=str(status.get("message") or ""),
                          started=started, completed=completed)
    return JobOutcome(finished=False, started=started)


def engine_progress(obj: dict[str, Any]) -> str:
    """What the engine reports while it runs, for the status message: `: 1/2 nodes ready` or
    `: Running, job RUNNING`."""
    status = obj.get("status") or {}
    if obj.get("kind") == "TrainJob":
        jobs = status.get("jobsStatus") or []
        ready = sum(int(j.get("ready") or 0) for j in jobs)
        active = sum(int(j.get("active") or 0) for j in jobs)
        return f": {ready} ready, {active} active" if jobs else ""
    parts = [str(status[k]) for k in ("jobDeploymentStatus", "jobStatus") if status.get(k)]
    return f": {', '.join(parts)}" if parts else ""


async def job_outcome(ctx: Context, job: dict[str, Any]) -> JobOutcome:
    """Read a Job's conditions and, once finished, its Pod's termination message."""
    status = job.get("status") or {}
    conds = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    # Only the terminal conditions count. The Job controller first sets SuccessCriteriaMet /
    # FailureTarget and adds Complete / Failed (with completionTime) once every Pod has
    # terminated; reading the outcome before that misses completionTime and may miss the last
    # Pod's termination message.
    if "Complete" in conds:
        outcome = JobOutcome(finished=True, succeeded=True, reason="Completed")
    elif "Failed" in conds:
        cond = conds["Failed"]
        outcome = JobOutcome(finished=True, succeeded=False, reason=cond.get("reason") or "JobFailed",
                             message=cond.get("message") or "")
    else:
        return JobOutcome(finished=False, started=status.get("startTime"))
    outcome.started = status.get("startTime")
    outcome.completed = status.get("completionTime") or (conds.get("Failed") or {}).get("lastTransitionTime")
    exit_code, message = last_termination(await job_pods(ctx, job))
    if message:
        try:
            parsed = json.loads(message)
            if isinstance(parsed, dict):
                outcome.result = parsed
        except ValueError:
            pass
    if outcome.result is None and not outcome.succeeded and exit_code is not None:
        # A container that wrote no result (a custom trainer, a crash): its exit code and last
        # words (termination message, or the log tail under FallbackToLogsOnError) say why.
        words = f": {message.strip()[-500:]}" if message.strip() else ""
        outcome.message = f"container exited with code {exit_code}{words}"
    return outcome


async def job_pods(ctx: Context, job: dict[str, Any]) -> list[dict[str, Any]]:
    """The Job's Pods, oldest first, by the Job's uid: a Job re-created under the same name must
    not read the old one's Pods (the job-name label is shared)."""
    meta = job["metadata"]
    try:
        pods = await ctx.kube.list("v1", "Pod", meta["namespace"],
                                   label_selector=f"batch.kubernetes.io/controller-uid={meta['uid']}")
    except ApiError:
        return []
    return sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")


def last_termination(pods: list[dict[str, Any]]) -> tuple[int | None, str]:
    """(exit code, termination message) of the newest terminated container."""
    for pod in reversed(pods):  # the newest attempt speaks for the Job
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if term:
                return term.get("exitCode"), str(term.get("message") or "")
    return None, ""


# Container waiting reasons that do not resolve by waiting a little longer.
STUCK_WAITING = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError",
                           "CreateContainerError", "RunContainerError"})


# A Job with no Pod this long after its creation is not starting: the Job controller's Pod
# creates are being refused (quota, Pod Security admission, a missing ServiceAccount).
NO_POD_GRACE_SECONDS = 30.0


def stuck_reason(job: dict[str, Any], pods: list[dict[str, Any]], now: datetime | None = None) -> tuple[str, str] | None:
    """Why a running Job's newest Pod is not running, when it is stuck rather than starting:
    no Pod created, unschedulable, or a container that cannot start (bad image, missing Secret key)."""
    if not pods:
        created = job["metadata"].get("creationTimestamp")
        age = ((now or datetime.now(UTC)) - _parse_time(created)).total_seconds() if created else 0.0
        if age < NO_POD_GRACE_SECONDS:
            return None
        name = job["metadata"]["name"]
        return "PodsNotCreated", (f"no Pod created in {age:.0f}s; `kubectl describe job {name}` shows the "
                                  f"FailedCreate events (quota, Pod Security admission, ServiceAccount)")
    pod = pods[-1]
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False" and cond.get("reason"):
            return str(cond["reason"]), f"Pod {name}: {cond.get('message') or cond['reason']}"
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_WAITING:
            return str(waiting["reason"]), f"Pod {name}, container {cs.get('name')}: {waiting.get('message') or waiting['reason']}"
    return None
