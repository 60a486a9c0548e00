"""The canary state machine: pure functions from (spec, last status, what was observed) to the
next status and the side effects the controller must carry out.

The controller (controllers/modeldeployment.py) does the I/O: it resolves versions, runs the
analysis when `Decision.analyse` says so, moves MLflow aliases and writes tags for
`Decision.actions`, and builds the router from `effective_weights`. Everything that must
survive a restart is in `status.rollout` (RolloutStatus), so a restarted operator resumes at
the same step.

Phases (status.rollout.phase):
    Idle              the candidate serves the stable version: nothing to roll out
    Waiting           a new candidate version, its Pods not ready yet (0 % traffic)
    Progressing       at step k, candidate traffic steps[k-1] %, analysed every interval
    AwaitingApproval  every step passed; waiting for `dockyard.dev/approve=<version>`
    Baking            promoted (alias moved); still analysed for `bakeWindow`
    Promoted          the candidate's version is the stable alias's version
    RolledBack        failureLimit checks failed, or the candidate's Deployment exceeded its
                      progress deadline: candidate at 0 % until a new version or a retry
    Blocked           the rollout cannot be analysed (no Prometheus, ...): candidate at 0 %
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from .api.modeldeployment import ModelDeploymentSpec
from .api.rollout import MetricResult, RolloutSpec, RolloutStatus

APPROVE_ANNOTATION = "dockyard.dev/approve"
APPROVED_BY_ANNOTATION = "dockyard.dev/approved-by"
RETRY_ANNOTATION = "dockyard.dev/retry"

# Phases in which the candidate gets its step's weight, or none at all.
STEPPING = ("Progressing", "AwaitingApproval")
HELD_AT_ZERO = ("Waiting", "RolledBack", "Blocked")
# Phases that run an analysis every interval.
ANALYSED = ("Progressing", "AwaitingApproval", "Baking")
# Weights are relative integers; a step's percentage is expressed in tenths of a percent.
WEIGHT_SCALE = 1000


@dataclass(frozen=True)
class Observed:
    """What the controller saw this reconcile."""

    now: datetime
    candidate_version: str
    stable_version: str  # the version the stable alias resolves to now
    candidate_ready: bool
    prometheus_url: str | None
    blocked_reason: tuple[str, str] | None = None  # (reason, message) when analysis is impossible
    approve: str | None = None  # dockyard.dev/approve annotation
    approved_by: str | None = None  # who (the annotation, or its field manager)
    retry: str | None = None  # dockyard.dev/retry annotation
    candidate_stuck: str | None = None  # why the candidate's Pods will not become ready (ProgressDeadlineExceeded)


@dataclass(frozen=True)
class Action:
    """A side effect on MLflow or on the ModelDeployment's own annotations."""

    kind: Literal["move-alias", "tag-promoted", "tag-failed", "tag-approved", "consume-annotation"]
    version: str = ""
    detail: str = ""  # alias target for move-alias; reason for tag-failed; annotation key to consume


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Decision:
    status: RolloutStatus
    analyse: bool = False  # run the analysis now, then call `judge`
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_ts(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _summary(status: RolloutStatus) -> str:
    if status.phase in STEPPING:
        return f"{status.step}/{status.steps} {status.candidate_weight}%"
    return status.phase


def _with(status: RolloutStatus, **changes: object) -> RolloutStatus:
    updated = status.model_copy(update=changes)
    updated.summary = _summary(updated)
    return updated


def _start(rollout: RolloutSpec, seen: Observed, *, retry: bool = False) -> Decision:
    status = _with(
        RolloutStatus(phase="Waiting", candidate_version=seen.candidate_version, stable_version=seen.stable_version,
                      steps=len(rollout.steps)),
        reason="Retrying" if retry else "NewVersion",
        message=f"version {seen.candidate_version} waits for its Pods before taking traffic",
    )
    verb = "retrying" if retry else "starting"
    event = Event("Normal", "RolloutStarted",
                  f"{verb} the rollout of version {seen.candidate_version} (stable {seen.stable_version})")
    return Decision(status, events=[event])


def _enter_step(rollout: RolloutSpec, status: RolloutStatus, step: int, now: datetime) -> RolloutStatus:
    # No check is due until the router serves the new weights (`traffic_serving`): an interval
    # that began while the old router Pods still answered would judge the previous step.
    weight = rollout.steps[step - 1]
    return _with(status, phase="Progressing", step=step, candidate_weight=weight, step_started_at=_ts(now),
                 traffic_since=None, next_check_at=None,
                 reason="StepStarted", message=f"step {step}/{len(rollout.steps)}: candidate at {weight}%")


def traffic_serving(rollout: RolloutSpec, status: RolloutStatus | None, router_settled: bool,
                    now: datetime) -> RolloutStatus | None:
    """After the children are applied: once the router serves the step's weights, the step's
    analysis interval starts."""
    if status is None or status.phase != "Progressing" or status.traffic_since is not None or not router_settled:
        return status
    return _with(status, traffic_since=_ts(now),
                 next_check_at=_ts(now + timedelta(seconds=rollout.interval_seconds())))


def decide(rollout: RolloutSpec, previous: RolloutStatus | None, seen: Observed) -> Decision:
    """Everything that happens before (and without) an analysis."""
    status = previous
    if status is None or status.candidate_version != seen.candidate_version:
        if seen.candidate_version == seen.stable_version:
            idle = RolloutStatus(phase="Idle", candidate_version=seen.candidate_version,
                                 stable_version=seen.stable_version, steps=len(rollout.steps),
                                 reason="SameAsStable",
                                 message=f"the candidate serves the stable version {seen.stable_version}")
            return Decision(_with(idle))
        decision = _start(rollout, seen)
        if status is not None and status.phase in (*STEPPING, "Waiting"):
            decision.events.insert(0, Event("Normal", "RolloutRestarted",
                                            f"version {status.candidate_version} superseded by "
                                            f"{seen.candidate_version} before it finished"))
        status = decision.status
        events = decision.events
    else:
        events = []

    decision = _advance(rollout, status, seen)
    decision.events[:0] = events
    return decision


def _advance(rollout: RolloutSpec, status: RolloutStatus, seen: Observed) -> Decision:
    phase = status.phase
    version = status.candidate_version or seen.candidate_version

    # Someone (this operator before a restart, or a person) moved the stable alias.
    if phase in (*STEPPING, "Waiting") and seen.stable_version == version:
        return _promoted(rollout, status, seen, moved_by_us=False)
    if phase == "Baking" and seen.stable_version != version:
        failed = _with(status, phase="RolledBack", candidate_weight=0, next_check_at=None, reason="AliasMoved",
                       message=f"the stable alias left version {version} during the bake window "
                               f"(now {seen.stable_version})")
        return Decision(failed, events=[Event("Warning", "RolledBack", failed.message or "")])

    if phase == "RolledBack":
        if seen.retry == version:
            started = _start(rollout, seen, retry=True)
            decision = _advance(rollout, started.status, seen)
            decision.events[:0] = started.events
            decision.actions.insert(0, Action("consume-annotation", detail=RETRY_ANNOTATION))
            return decision
        return Decision(status)
    if phase in ("Idle", "Promoted"):
        return Decision(status)

    if seen.blocked_reason is not None or not seen.prometheus_url:
        reason, message = seen.blocked_reason or (
            "PrometheusNotConfigured",
            "the rollout needs a Prometheus to analyse: set spec.rollout.prometheusUrl or the operator's "
            "DOCKYARD_PROMETHEUS_URL")
        if phase == "Baking":  # already promoted: keep serving, say why nothing is analysed
            return Decision(_with(status, reason=reason, message=message))
        if phase == "Blocked" and status.reason == reason:
            return Decision(status)
        blocked = _with(status, phase="Blocked", candidate_weight=0, next_check_at=None, reason=reason,
                        message=message)
        return Decision(blocked, events=[Event("Warning", "RolloutBlocked", message)])
    if phase == "Blocked":  # the cause is gone: start over from the first step
        status = _with(status, phase="Waiting", step=0, reason="Unblocked", message="analysis is possible again")
        phase = "Waiting"

    if phase == "Waiting":
        if seen.candidate_stuck is not None:
            message = f"version {version} never became ready: {seen.candidate_stuck}"
            failed = _with(status, phase="RolledBack", candidate_weight=0, next_check_at=None,
                           reason="CandidateNotReady", message=message)
            return Decision(failed, actions=[Action("tag-failed", version=version, detail=message)],
                            events=[Event("Warning", "RolledBack", message)])
        if not seen.candidate_ready:
            return Decision(status)
        stepped = _enter_step(rollout, status, 1, seen.now)
        return Decision(stepped, events=[Event("Normal", "RolloutStep", stepped.message or "")])

    if phase == "AwaitingApproval" and seen.approve is not None:
        if seen.approve != version:
            message = (f"approval refused: {APPROVE_ANNOTATION}={seen.approve!r} but version {version} "
                       "is the one waiting")
            refused = _with(status, reason="ApprovalRefused", message=message)
            events = [] if status.reason == "ApprovalRefused" and status.message == message else [
                Event("Warning", "ApprovalRefused", message)]
            decision = Decision(refused, events=events)
        else:
            approved = _with(status, approved_by=seen.approved_by or "unknown", approved_at=_ts(seen.now))
            decision = _promoted(rollout, approved, seen, moved_by_us=True)
            decision.events.insert(0, Event("Normal", "Approved",
                                            f"version {version} approved by {approved.approved_by}"))
            decision.actions.insert(0, Action("tag-approved", version=version,
                                              detail=f"{approved.approved_by}|{approved.approved_at}"))
            decision.actions.append(Action("consume-annotation", detail=APPROVE_ANNOTATION))
            return decision
        due = _due(status, seen.now)
        decision.analyse = due
        return decision

    if phase == "Baking":
        baking_since = parse_ts(status.step_started_at) or seen.now
        if seen.now >= baking_since + timedelta(seconds=rollout.bake_seconds()):
            done = _with(status, phase="Promoted", next_check_at=None, reason="Baked",
                         message=f"version {version} passed its bake window")
            return Decision(done, events=[Event("Normal", "Baked", done.message or "")])

    return Decision(status, analyse=phase in ANALYSED and _due(status, seen.now))


def _due(status: RolloutStatus, now: datetime) -> bool:
    if status.phase == "Progressing" and status.traffic_since is None:
        return False  # the router does not serve this step's weights yet
    at = parse_ts(status.next_check_at)
    return at is None or now >= at


def _promoted(rollout: RolloutSpec, status: RolloutStatus, seen: Observed, *, moved_by_us: bool) -> Decision:
    version = status.candidate_version or seen.candidate_version
    previous = status.stable_version
    bake = rollout.bake_seconds()
    phase: Literal["Baking", "Promoted"] = "Baking" if bake > 0 else "Promoted"
    how = "promoted" if moved_by_us else "found the stable alias on it"
    message = (f"version {version} {how}: alias {rollout.alias!r} {previous} -> {version}"
               + (f"; baking for {rollout.bake_window}" if bake else ""))
    done = _with(status, phase=phase, previous_version=previous, candidate_weight=0, failed_checks=0,
                 step_started_at=_ts(seen.now),
                 next_check_at=_ts(seen.now + timedelta(seconds=rollout.interval_seconds())) if bake else None,
                 reason="Promoted", message=message)
    actions = [Action("move-alias", version=version, detail=rollout.alias)] if moved_by_us else []
    actions.append(Action("tag-promoted", version=version, detail=previous or ""))
    return Decision(done, actions=actions, events=[Event("Normal", "Promoted", message)])


def judge(rollout: RolloutSpec, status: RolloutStatus, results: list[MetricResult], seen: Observed) -> Decision:
    """The outcome of one analysis: advance, count a failure, roll back, or promote."""
    now = seen.now
    version = status.candidate_version or seen.candidate_version
    next_check = _ts(now + timedelta(seconds=rollout.interval_seconds()))
    failed = [r for r in results if r.result in ("Failed", "Error")]
    inconclusive = [r for r in results if r.result == "Inconclusive"]
    status = _with(status, analysis=results, next_check_at=next_check)

    if failed:
        count = status.failed_checks + 1
        what = "; ".join(r.message or f"{r.name} failed" for r in failed)
        if count >= rollout.failure_limit:
            baking = status.phase == "Baking"
            message = (f"{'bake window: ' if baking else ''}{count} failed check(s) (failureLimit "
                       f"{rollout.failure_limit}): {what}")
            rolled = _with(status, phase="RolledBack", failed_checks=count, candidate_weight=0, next_check_at=None,
                           reason="AnalysisFailed", message=message)
            actions = [Action("tag-failed", version=version, detail=message)]
            if baking and status.previous_version:
                actions.insert(0, Action("move-alias", version=status.previous_version, detail=rollout.alias))
            return Decision(rolled, actions=actions, events=[Event("Warning", "RolledBack", message)])
        counted = _with(status, failed_checks=count, reason="CheckFailed",
                        message=f"check failed ({count}/{rollout.failure_limit}): {what}")
        return Decision(counted, events=[Event("Warning", "CheckFailed", counted.message or "")])

    if inconclusive:
        why = "; ".join(r.message or f"{r.name}: no data" for r in inconclusive)
        return Decision(_with(status, reason="Inconclusive", message=f"check inconclusive: {why}"))

    if status.phase == "Baking":
        return Decision(_with(status, reason="BakePassed", message=f"bake check passed for version {version}"))
    if status.phase == "AwaitingApproval":
        return Decision(status)
    if status.step < len(rollout.steps):
        stepped = _enter_step(rollout, status, status.step + 1, now)
        return Decision(stepped, events=[Event("Normal", "RolloutStep", stepped.message or "")])
    if rollout.manual_approval:
        message = (f"every step passed; waiting for approval: dockyard approve <name> --version {version} "
                   f"(or the annotation {APPROVE_ANNOTATION}={version})")
        waiting = _with(status, phase="AwaitingApproval", reason="AwaitingApproval", message=message)
        return Decision(waiting, events=[Event("Normal", "AwaitingApproval", message)])
    return _promoted(rollout, status, seen, moved_by_us=True)


def effective_weights(spec: ModelDeploymentSpec, status: RolloutStatus | None) -> dict[str, int]:
    """The live weights the router gets: declared, except that during a rollout the candidate
    has its step's share (or none), and the other variants split the rest by declared weight."""
    declared = spec.live_weights()
    rollout = spec.rollout
    if rollout is None or status is None or status.phase not in (*STEPPING, *HELD_AT_ZERO):
        return declared
    share = status.candidate_weight if status.phase in STEPPING else 0
    candidate = rollout.candidate
    others = {name: w for name, w in declared.items() if name != candidate}
    rest = WEIGHT_SCALE * (100 - share) // 100
    out = {name: 0 for name in declared}
    out[candidate] = WEIGHT_SCALE - rest
    total = sum(others.values())
    if total == 0:  # only the candidate had traffic declared: the stable variant takes the rest
        stable = spec.stable_variant()
        if stable is not None:
            out[stable.name] = rest
        return out
    # Largest remainder, so the weights add up to WEIGHT_SCALE exactly.
    exact = {name: rest * w / total for name, w in others.items()}
    floors = {name: int(v) for name, v in exact.items()}
    left = rest - sum(floors.values())
    for name in sorted(exact, key=lambda n: exact[n] - floors[n], reverse=True)[:left]:
        floors[name] += 1
    out.update(floors)
    return out


def requeue_after(status: RolloutStatus | None, now: datetime, rollout: RolloutSpec) -> float | None:
    """Seconds until the rollout needs the controller again (next check or end of bake)."""
    if status is None:
        return None
    moments = [parse_ts(status.next_check_at)] if status.phase in ANALYSED else []
    if status.phase == "Baking":
        started = parse_ts(status.step_started_at)
        if started is not None:
            moments.append(started + timedelta(seconds=rollout.bake_seconds()))
    if status.phase == "Waiting" or (status.phase == "Progressing" and status.traffic_since is None):
        return 2.0  # readiness of the candidate and the router comes from the Deployment watch; a backstop
    if status.phase == "Blocked":
        return 60.0
    waits = [(m - now).total_seconds() for m in moments if m is not None]
    return max(0.2, min(waits)) if waits else None
