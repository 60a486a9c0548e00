"""Status condition helpers shared by every controller (Kubernetes metav1.Condition rules)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]


def now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def set_condition(
    conditions: list[dict[str, Any]] | None,
    type_: str,
    status: Status,
    reason: str,
    message: str = "",
    observed_generation: int | None = None,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """Return a new conditions list with one condition set.

    `lastTransitionTime` moves only when `status` changes, as the convention requires;
    an unchanged condition is returned byte-identical so callers can tell "nothing to write".
    """
    out = [dict(c) for c in conditions or []]
    for cond in out:
        if cond.get("type") == type_:
            if cond.get("status") != status:
                cond["lastTransitionTime"] = now or now_rfc3339()
            cond["status"] = status
            cond["reason"] = reason
            cond["message"] = message
            if observed_generation is not None:
                cond["observedGeneration"] = observed_generation
            return out
    new: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now or now_rfc3339(),
    }
    if observed_generation is not None:
        new["observedGeneration"] = observed_generation
    out.append(new)
    return out


def get_condition(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    for cond in conditions or []:
        if cond.get("type") == type_:
            return cond
    return None


def summarize(
    conditions: list[dict[str, Any]] | None,
    *,
    ready: bool | None,
    reason: str,
    message: str,
    generation: int,
    stalled: bool = False,
) -> list[dict[str, Any]]:
    """Set `Ready` plus the kstatus "abnormal-true" pair so GitOps health checks agree.

    ready=True: done and healthy. ready=None: still working (Reconciling=True).
    ready=False and stalled: will not progress without a change (Stalled=True).
    ready=False and not stalled: waiting on something outside (Reconciling=True).
    """
    status: Status = "True" if ready else ("Unknown" if ready is None else "False")
    out = set_condition(conditions, "Ready", status, reason, message, generation)
    reconciling = ready is not True and not stalled
    out = _set_or_drop(out, "Reconciling", reconciling, reason, message, generation)
    out = _set_or_drop(out, "Stalled", stalled, reason, message, generation)
    return out


def _set_or_drop(
    conditions: list[dict[str, Any]], type_: str, on: bool, reason: str, message: str, generation: int
) -> list[dict[str, Any]]:
    if on:
        return set_condition(conditions, type_, "True", reason, message, generation)
    return [c for c in conditions if c.get("type") != type_]
