"""ModelDeployment controller: resolve versions, roll out variants, route traffic by weight.

Resolution costs MLflow calls, so it happens only when needed: on a spec change, when an
alias refresh is due, or right after this operator moved an alias (TrainingRun success).
Pinned versions resolved for the current generation are reused from status after a
restart, so a converged deployment with pinned versions makes no MLflow calls at all;
each alias costs one call per `aliasRefreshInterval` (MLflow has no watch API).

When MLflow is down, variants keep serving what they were resolved to; the outage shows as
`ModelsResolved=Unknown/MlflowUnavailable`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

from .. import metrics
from ..api.common import parse_duration
from ..api.modeldeployment import ModelDeploymentSpec, check_name
from ..api.monitoring import MonitoringStatus
from ..api.rollout import RolloutStatus
from ..builders.network import build_network_policy
from ..builders.serving import desired_serving_children, router_endpoint, router_kind_for, variant_endpoint
from ..conditions import get_condition, set_condition, summarize
from ..kube import ApiError
from ..labels import KIND_LABEL, OWNER_LABEL, owned_by
from ..mlflow_client import MlflowUnavailable
from ..monitoring.window import drift_condition
from ..rollout import effective_weights, requeue_after, traffic_serving
from ..routers import ROUTER_KINDS
from ..routers.common import router_name, variant_service_name
from .base import Context, MlflowWaitError, Result, ensure_child, generation, write_status
from .common import announce_transition, invalid_status, parse_spec, phase_status
from .monitoring import forget as forget_monitoring
from .monitoring import reconcile_monitoring
from .rollout import forget as forget_rollout
from .rollout import reconcile_rollout, router_serving
from .state import DeploymentState, Resolution

KIND = "ModelDeployment"
# NetworkPolicies are pruned even with DOCKYARD_NETWORK_POLICIES=false: turning the setting off
# must not leave old policies enforcing (the restarted operator prunes them on its first pass).
PRUNABLE = (("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap"), ("networking.k8s.io/v1", "NetworkPolicy"))


class Unresolvable(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


async def reconcile(ctx: Context, body: dict[str, Any]) -> Result:
    spec, error = parse_spec(ModelDeploymentSpec, body)
    name_problem = check_name(body["metadata"]["name"])
    if spec is None or name_problem:
        await _write(ctx, body, invalid_status(body, "InvalidSpec", name_problem or error))
        return Result()
    meta = body["metadata"]
    state = ctx.state.deployments(meta["uid"])
    gen = generation(body)
    if spec.router.type not in ctx.cfg.enabled_routers:
        message = f"router type {spec.router.type!r} is disabled in this operator (DOCKYARD_ENABLED_ROUTERS)"
        await _write(ctx, body, _status(body, spec, "Degraded", False, "RouterUnavailable", message, stalled=True))
        return Result()

    refresh = parse_duration(spec.alias_refresh_interval)
    has_alias = any(v.alias for v in spec.variants)
    requeue = float(max(refresh, ctx.cfg.alias_refresh_seconds_min)) if has_alias else None

    # 1. Resolve versions (only when needed).
    resolution, resolve_problem = await _resolution(ctx, state, body, spec, gen, refresh)
    if resolution is None:
        assert resolve_problem is not None
        reason, message = resolve_problem
        status = _status(body, spec, "Pending", False, reason, message)
        status["conditions"] = set_condition(status["conditions"], "ModelsResolved", "False", reason, message, gen)
        await _write(ctx, body, status)
        return Result(requeue_after=requeue or 30.0)

    # 2. Rollout: where the candidate is, which may run an analysis and move an alias.
    rollout_status = await reconcile_rollout(ctx, state, body, spec, resolution)
    served = with_weights(spec, effective_weights(spec, rollout_status))

    # 3. Children: apply what changed, prune what the spec no longer has.
    desired = desired_serving_children(body, served, resolution.versions, ctx.cfg, model_uris=resolution.sources)
    # The serving Pods' fetch-model loads the namespace's MLflow credential Secret: make it first.
    try:
        await ctx.registry.ensure(body["metadata"]["namespace"])
    except MlflowUnavailable as exc:
        raise MlflowWaitError(str(exc)) from exc
    policy = build_network_policy(body, served, ctx.cfg)
    if policy is not None:
        desired.insert(0, policy)  # first: the serving Pods never run unprotected
    try:
        applied = await _apply_children(ctx, state, desired)
    except ApiError as exc:
        needed = router_kind_for(spec)
        if exc.status == 404 and needed is not None:
            api_version, kind = needed
            message = (f"router {spec.router.type!r} needs {kind} ({api_version}) but that API is not "
                       f"installed in this cluster")
            status = _status(body, spec, "Degraded", False, "RouterUnavailable", message)
            status["conditions"] = set_condition(status["conditions"], "RouterReady", "False",
                                                 "RouterUnavailable", message, gen)
            await _write(ctx, body, status)
            return Result(requeue_after=60.0)
        raise
    if state.pruned_generation != gen:
        await _prune(ctx, body, {(o["kind"], o["metadata"]["name"]) for o in desired})
        state.pruned_generation = gen
    if spec.rollout is not None:
        rollout_status = traffic_serving(spec.rollout, rollout_status, router_serving(ctx, desired),
                                         datetime.now(UTC))

    # 4. Status.
    status = _observe(ctx, body, served, resolution, applied, resolve_problem)
    if rollout_status is not None:
        status["rollout"] = rollout_status.to_api()
        status["conditions"] = _rollout_condition(status["conditions"], rollout_status, gen)
    else:
        status.pop("rollout", None)
    # 5. Drift: once per monitoring window, each variant's traffic against its version's training data.
    monitoring, monitoring_wait = await reconcile_monitoring(ctx, state, body, spec, resolution)
    await _set_drift(ctx, body, status, monitoring, gen)
    await _announce_version_changes(ctx, body, spec, resolution)
    await _write(ctx, body, status)
    _export_weights(state, body, served, resolution)
    if status["phase"] != "Ready" and requeue is None:
        requeue = 30.0
    if monitoring_wait is not None:
        requeue = monitoring_wait if requeue is None else min(requeue, monitoring_wait)
    if spec.rollout is not None:
        wait = requeue_after(rollout_status, datetime.now(UTC), spec.rollout)
        if state.resolve_now:
            wait = 0.1  # an alias this reconcile moved: resolve it again right away
        if wait is not None:
            requeue = wait if requeue is None else min(requeue, wait)
    return Result(requeue_after=requeue)


async def _set_drift(ctx: Context, body: dict[str, Any], status: dict[str, Any], monitoring: MonitoringStatus | None,
                     gen: int) -> None:
    """status.monitoring and the `DataDrift` condition, with an Event when drift starts or ends."""
    if monitoring is None:
        status.pop("monitoring", None)
        status["conditions"] = [c for c in status["conditions"] if c.get("type") != "DataDrift"]
        return
    status["monitoring"] = monitoring.to_api()
    before = get_condition(status["conditions"], "DataDrift")
    value, reason, message = drift_condition(monitoring.variants or [])
    status["conditions"] = set_condition(status["conditions"], "DataDrift", value, reason, message[:4000], gen)
    was = (before or {}).get("status")
    if value == "True" and was != "True":
        await ctx.events.emit(body, "Warning", "DataDrift", message[:1000])
    elif value == "False" and was == "True":
        await ctx.events.emit(body, "Normal", "DataDriftResolved", message[:1000])
    elif value == "Unknown" and (before or {}).get("reason") != reason and reason not in ("TooFewSamples",):
        await ctx.events.emit(body, "Warning", "DriftNotEvaluated", f"{reason}: {message}"[:1000])


def with_weights(spec: ModelDeploymentSpec, weights: dict[str, int]) -> ModelDeploymentSpec:
    """The spec as the routers should see it: the effective weights in place of the declared ones."""
    if weights == spec.live_weights():
        return spec
    variants = [v.model_copy(update={"weight": weights[v.name]}) for v in spec.variants]
    return spec.model_copy(update={"variants": variants})


def _rollout_condition(conditions: list[dict[str, Any]], rollout: RolloutStatus, gen: int) -> list[dict[str, Any]]:
    """`RolledOut`: True once the candidate is promoted (or nothing is to roll out), False after a
    rollback or when blocked, Unknown while it is under way."""
    value: Literal["True", "False", "Unknown"] = (
        "True" if rollout.phase in ("Idle", "Promoted") else
        "False" if rollout.phase in ("RolledBack", "Blocked") else "Unknown")
    return set_condition(conditions, "RolledOut", value, rollout.reason or rollout.phase,
                         rollout.message or "", gen)


async def _resolution(ctx: Context, state: DeploymentState, body: dict[str, Any], spec: ModelDeploymentSpec,
                      gen: int, refresh: int) -> tuple[Resolution | None, tuple[str, str] | None]:
    current = state.resolution
    if current is None:
        current = state.resolution = _from_status(body, spec, gen)
    has_alias = any(v.alias for v in spec.variants)
    due = current is None or current.generation != gen or state.resolve_now or (
        has_alias and time.monotonic() - current.at >= refresh)
    if not due:
        return current, None
    state.resolve_now = False
    try:
        fresh = await _resolve(ctx, spec, gen)
    except MlflowUnavailable as exc:
        if current is not None and current.generation == gen:
            return current, ("MlflowUnavailable", f"serving the last resolved versions: {exc}")
        return None, ("MlflowUnavailable", str(exc))
    except Unresolvable as exc:
        return None, (exc.reason, exc.message)
    state.resolution = fresh
    return fresh, None


def _from_status(body: dict[str, Any], spec: ModelDeploymentSpec, gen: int) -> Resolution | None:
    """After a restart: pinned versions already resolved for this generation need no MLflow call."""
    status = body.get("status") or {}
    if status.get("observedGeneration") != gen:
        return None
    recorded = {v.get("name"): v for v in status.get("variants") or []}
    versions, sources = {}, {}
    for variant in spec.variants:
        entry = recorded.get(variant.name)
        if not entry or not entry.get("resolvedVersion"):
            return None
        versions[variant.name] = str(entry["resolvedVersion"])
        sources[variant.name] = str(entry.get("modelUri") or "")
    # Aliases are due for a check right away; pinned versions are not.
    stale_at = 0.0 if any(v.alias for v in spec.variants) else time.monotonic()
    return Resolution(generation=gen, at=stale_at, versions=versions, sources=sources)


async def _resolve(ctx: Context, spec: ModelDeploymentSpec, gen: int) -> Resolution:
    versions: dict[str, str] = {}
    sources: dict[str, str] = {}
    for variant in spec.variants:
        if variant.alias:
            version = await ctx.mlflow.get_alias(spec.model_name, variant.alias)
            if version is None:
                raise Unresolvable("AliasNotFound",
                                   f"variant {variant.name}: alias {variant.alias!r} of model "
                                   f"{spec.model_name!r} is not set")
        else:
            assert variant.version is not None
            version = variant.version
        info = await ctx.mlflow.get_version(spec.model_name, version)
        if info is None:
            raise Unresolvable("ModelVersionNotFound",
                               f"variant {variant.name}: model {spec.model_name!r} has no version {version}")
        versions[variant.name] = version
        sources[variant.name] = info.source
    return Resolution(generation=gen, at=time.monotonic(), versions=versions, sources=sources)


async def _apply_children(ctx: Context, state: DeploymentState,
                          desired: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    applied: dict[tuple[str, str], dict[str, Any]] = {}
    for obj in desired:
        meta = obj["metadata"]
        ns, name = meta["namespace"], meta["name"]
        # Deployments and ConfigMaps are watched: read from the cache; the others from the API.
        watched = obj["kind"] in ("Deployment", "ConfigMap") and obj["apiVersion"] in ("apps/v1", "v1")
        existing = ctx.cache.get((obj["kind"], ns, name)) if watched else None
        if existing is None:
            existing = await ctx.kube.get(obj["apiVersion"], obj["kind"], ns, name)
        applied[(obj["kind"], name)] = await ensure_child(ctx, obj, existing, state.applied_children)
    return applied


async def _prune(ctx: Context, body: dict[str, Any], keep: set[tuple[str, str]]) -> None:
    meta = body["metadata"]
    selector = f"{KIND_LABEL}=modeldeployment,{OWNER_LABEL}={meta['name']}"
    for api_version, kind in _prunable(ctx):
        try:
            found = await ctx.kube.list(api_version, kind, meta["namespace"], label_selector=selector)
        except ApiError as exc:
            if exc.status == 404:  # that router's API is not installed: nothing of ours to prune
                continue
            raise
        for obj in found:
            if owned_by(obj, body) and (kind, obj["metadata"]["name"]) not in keep:
                await ctx.kube.delete(api_version, kind, meta["namespace"], obj["metadata"]["name"])


def _prunable(ctx: Context) -> list[tuple[str, str]]:
    """Kinds a ModelDeployment may leave behind when its spec changes: the core children, and
    the objects of every enabled router (a router switch must not leave the old route live)."""
    routers = [kind for name, kind in ROUTER_KINDS.items() if kind is not None and name in ctx.cfg.enabled_routers]
    return [*PRUNABLE, *routers]


def _observe(ctx: Context, body: dict[str, Any], spec: ModelDeploymentSpec, resolution: Resolution,
             applied: dict[tuple[str, str], dict[str, Any]], problem: tuple[str, str] | None) -> dict[str, Any]:
    meta = body["metadata"]
    ns = meta["namespace"]
    gen = generation(body)
    variants = []
    not_ready = []
    live = spec.live_weights()
    for variant in spec.variants:
        deploy_name = variant_service_name(meta["name"], variant.name)
        entry: dict[str, Any] = {
            "name": variant.name,
            "resolvedVersion": resolution.versions[variant.name],
            "modelUri": f"models:/{spec.model_name}/{resolution.versions[variant.name]}",
            "weight": live[variant.name],
            "replicas": variant.replicas,
        }
        if spec.router.type == "seldon":
            ready = _seldon_ready(applied)
            entry["readyReplicas"] = variant.replicas if ready else 0
        else:
            deployment = ctx.cache.get(("Deployment", ns, deploy_name)) or applied.get(("Deployment", deploy_name))
            dstatus = (deployment or {}).get("status") or {}
            current = _deployment_current(deployment)
            entry["readyReplicas"] = int(dstatus.get("readyReplicas") or 0) if current else 0
            entry["endpoint"] = variant_endpoint(ns, meta["name"], variant.name, ctx.cfg, spec.runtime)
        if entry["readyReplicas"] < variant.replicas:
            not_ready.append(variant.name)
        variants.append(entry)

    router_ready, router_message = _router_ready(ctx, body, spec, applied)
    status = _status(body, spec, "Ready", True, "Ready", "all variants serving")
    conds = status["conditions"]
    if problem:
        conds = set_condition(conds, "ModelsResolved", "Unknown", problem[0], problem[1], gen)
    else:
        versions = ", ".join(f"{v}={resolution.versions[v]}" for v in resolution.versions)
        conds = set_condition(conds, "ModelsResolved", "True", "Resolved", versions, gen)
    if not_ready:
        conds = set_condition(conds, "VariantsReady", "False", "ReplicasNotReady",
                              f"waiting for variants: {', '.join(not_ready)}", gen)
    else:
        conds = set_condition(conds, "VariantsReady", "True", "ReplicasReady", "all variants ready", gen)
    conds = set_condition(conds, "RouterReady", "True" if router_ready else "False",
                          "RouterReady" if router_ready else "RouterProgressing", router_message, gen)
    if not_ready or not router_ready:
        message = (f"waiting for variants: {', '.join(not_ready)}" if not_ready else router_message)
        conds = summarize(conds, ready=None, reason="Progressing", message=message, generation=gen)
        status["phase"] = "Progressing"
        status["message"] = message
    status["conditions"] = conds
    status["variants"] = variants
    status["weights"] = _weights_summary(spec)
    endpoint = _endpoint(ctx, body, spec)
    if endpoint:
        status["endpoint"] = endpoint
    else:
        status.pop("endpoint", None)
    return status


def _weights_summary(spec: ModelDeploymentSpec) -> str:
    """`a=80,b=20` as declared; in percent (`a=90%,b=10%`) when a rollout drives the weights."""
    live = spec.live_weights()
    if spec.rollout is None:
        return ",".join(f"{name}={w}" for name, w in live.items())
    total = sum(live.values()) or 1
    return ",".join(f"{name}={round(100 * w / total, 1):g}%" for name, w in live.items())


def _deployment_current(deployment: dict[str, Any] | None) -> bool:
    if not deployment:
        return False
    observed = (deployment.get("status") or {}).get("observedGeneration")
    return observed is not None and observed >= deployment["metadata"].get("generation", 1)


def _router_ready(ctx: Context, body: dict[str, Any], spec: ModelDeploymentSpec,
                  applied: dict[tuple[str, str], dict[str, Any]]) -> tuple[bool, str]:
    meta = body["metadata"]
    if spec.router.type == "builtin":
        name = router_name(meta["name"])
        deployment = ctx.cache.get(("Deployment", meta["namespace"], name)) or applied.get(("Deployment", name))
        ready = _deployment_current(deployment) and int(
            ((deployment or {}).get("status") or {}).get("readyReplicas") or 0) >= 1
        return ready, "nginx router ready" if ready else "nginx router starting"
    if spec.router.type == "seldon":
        ready = _seldon_ready(applied)
        return ready, "SeldonDeployment available" if ready else "SeldonDeployment not available yet"
    kind = "HTTPRoute" if spec.router.type == "gateway" else "VirtualService"
    return True, f"{kind} applied"


def _seldon_ready(applied: dict[tuple[str, str], dict[str, Any]]) -> bool:
    for (kind, _), obj in applied.items():
        if kind == "SeldonDeployment":
            return ((obj.get("status") or {}).get("state") or "") == "Available"
    return False


def _endpoint(ctx: Context, body: dict[str, Any], spec: ModelDeploymentSpec) -> str | None:
    meta = body["metadata"]
    endpoint = router_endpoint(meta["namespace"], meta["name"], spec, ctx.cfg)
    if endpoint is None and spec.router.type == "gateway" and spec.router.gateway and spec.router.gateway.hostnames:
        return f"http://{spec.router.gateway.hostnames[0]}"
    return endpoint


def _status(body: dict[str, Any], spec: ModelDeploymentSpec, phase: str, ready: bool | None, reason: str,
            message: str, *, stalled: bool = False) -> dict[str, Any]:
    return phase_status(body, phase=phase, ready=ready, reason=reason, message=message, stalled=stalled)


async def _announce_version_changes(ctx: Context, body: dict[str, Any], spec: ModelDeploymentSpec,
                                    resolution: Resolution) -> None:
    before = {v.get("name"): v.get("resolvedVersion") for v in (body.get("status") or {}).get("variants") or []}
    for name, version in resolution.versions.items():
        old = before.get(name)
        if old is not None and old != version:
            await ctx.events.emit(body, "Normal", "VersionChanged",
                                  f"variant {name}: {spec.model_name} version {old} -> {version}")


def _export_weights(state: DeploymentState, body: dict[str, Any], spec: ModelDeploymentSpec,
                    resolution: Resolution) -> None:
    meta = body["metadata"]
    percentages = spec.weight_percentages()
    exported = state.exported_versions
    for variant in spec.variants:
        version = resolution.versions[variant.name]
        labels = (meta["namespace"], meta["name"], variant.name)
        old_version = exported.get(variant.name)
        if old_version is not None and old_version != version:
            metrics.VARIANT_WEIGHT.remove(*labels, old_version)
        metrics.VARIANT_WEIGHT.labels(*labels, version).set(percentages[variant.name])
        exported[variant.name] = version


async def _write(ctx: Context, body: dict[str, Any], status: dict[str, Any]) -> None:
    old = body.get("status")
    await write_status(ctx, body, status)
    await announce_transition(ctx, body, old, status)


def forget(ctx: Context, body: dict[str, Any]) -> None:
    """A ModelDeployment was deleted: drop its state and its exported series."""
    meta = body["metadata"]
    state = ctx.state.deployments.pop(meta["uid"])
    forget_rollout(body)
    forget_monitoring(body, state)
    for variant, version in (state.exported_versions if state else {}).items():
        metrics.VARIANT_WEIGHT.remove(meta["namespace"], meta["name"], variant, version)
