"""The I/O of a ModelDeployment's rollout: observe, analyse, move aliases, tag versions.

The decisions are `dockyard.rollout`'s (pure); this module feeds them what the cluster,
MLflow and Prometheus say and carries out their actions. Order matters for restarts: an alias
is moved before the status that records the move is written, and the state machine treats
"the stable alias already points at the candidate" as a finished promotion, so a restart
between the two neither moves the alias twice nor loses the promotion.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from .. import metrics
from ..analysis import AnalysisTarget, Prometheus, PrometheusUnavailable, analyse
from ..api.modeldeployment import ModelDeploymentSpec
from ..api.rollout import MetricResult, RolloutSpec, RolloutStatus
from ..labels import COMPONENT_LABEL, MODEL_VERSION_LABEL, SPEC_HASH_ANNOTATION
from ..mlflow_client import MlflowNotFound, MlflowUnavailable
from ..registry_access import ForeignOwner
from ..rollout import (
    APPROVE_ANNOTATION,
    APPROVED_BY_ANNOTATION,
    RETRY_ANNOTATION,
    Action,
    Decision,
    Observed,
    decide,
    judge,
)
from ..routers.common import ROUTER_COMPONENT, variant_service_name
from .base import Context
from .common import status_section
from .monitoring import drift_share
from .state import DeploymentState, Resolution

# MLflow model version tags: the audit trail of rollouts, next to the version itself.
TAG_OUTCOME = "dockyard.rollout"
TAG_REASON = "dockyard.rollout.reason"
TAG_PREVIOUS = "dockyard.rollout.previous_version"
TAG_DEPLOYMENT = "dockyard.rollout.deployment"
TAG_APPROVED_BY = "dockyard.approved_by"
TAG_APPROVED_AT = "dockyard.approved_at"


def previous_status(body: dict[str, Any]) -> RolloutStatus | None:
    return status_section(RolloutStatus, body, "rollout")


async def reconcile_rollout(ctx: Context, state: DeploymentState, body: dict[str, Any], spec: ModelDeploymentSpec,
                            resolution: Resolution) -> RolloutStatus | None:
    """One step of the rollout; returns the status to write (None without spec.rollout)."""
    rollout = spec.rollout
    stable = spec.stable_variant()
    if rollout is None or stable is None:
        return None
    seen = _observe(ctx, body, spec, rollout, resolution, stable.name)
    if seen.blocked_reason is None:
        seen = await _check_model_owner(ctx, body, spec, seen)
    if seen.approve is not None and seen.approved_by is None:
        seen = await _with_approver(ctx, body, seen)
    previous = previous_status(body)
    decision = decide(rollout, previous, seen)
    if decision.analyse:
        results = await _analyse(ctx, state, body, spec, rollout, decision.status, seen, stable.name)
        later = judge(rollout, decision.status, results, seen)
        later.events[:0] = decision.events
        later.actions[:0] = decision.actions
        decision = later
        _export_analysis(body, results)
    await _carry_out(ctx, state, body, spec, rollout, resolution, decision, stable.name)
    for event in decision.events:
        await ctx.events.emit(body, event.type, event.reason, event.message)
    _export_phase(body, decision.status)
    return decision.status


async def _check_model_owner(ctx: Context, body: dict[str, Any], spec: ModelDeploymentSpec,
                             seen: Observed) -> Observed:
    """A rollout moves the model's aliases with the operator's MLflow rights: refuse it for a
    model another namespace's TrainingRuns registered (docs/security.md)."""
    try:
        await ctx.registry.check_model_use(ctx.state.registered_models, spec.model_name, body["metadata"]["namespace"])
    except ForeignOwner as exc:
        return replace(seen, blocked_reason=(exc.reason, exc.message))
    except MlflowNotFound:  # no such model: version resolution reports that
        pass
    return seen


def _observe(ctx: Context, body: dict[str, Any], spec: ModelDeploymentSpec, rollout: RolloutSpec,
             resolution: Resolution, stable: str) -> Observed:
    meta = body["metadata"]
    annotations = meta.get("annotations") or {}
    candidate = rollout.candidate
    version = resolution.versions[candidate]
    blocked = None
    if spec.runtime != "mlserver":
        blocked = ("MetricsUnavailable",
                   f"runtime {spec.runtime!r} does not export the serving metrics a rollout analyses; use mlserver")
    return Observed(
        now=datetime.now(UTC),
        candidate_version=version,
        stable_version=resolution.versions[stable],
        candidate_ready=_variant_ready(ctx, meta["namespace"], meta["name"], candidate, version,
                                       next(v.replicas for v in spec.variants if v.name == candidate)),
        prometheus_url=rollout.prometheus_url or ctx.cfg.prometheus_url or None,
        blocked_reason=blocked,
        approve=annotations.get(APPROVE_ANNOTATION),
        approved_by=annotations.get(APPROVED_BY_ANNOTATION),
        retry=annotations.get(RETRY_ANNOTATION),
        candidate_stuck=_deadline_exceeded(ctx, meta["namespace"], meta["name"], candidate, version),
    )


async def _with_approver(ctx: Context, body: dict[str, Any], seen: Observed) -> Observed:
    """Without `dockyard.dev/approved-by`, the approver is the field manager that set the
    annotation (e.g. kubectl-annotate): the API server records it, the cache drops it."""
    meta = body["metadata"]
    full = await ctx.kube.get(body["apiVersion"], body["kind"], meta["namespace"], meta["name"])
    key = f"f:{APPROVE_ANNOTATION}"
    for entry in (full or {}).get("metadata", {}).get("managedFields") or []:
        annotations = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:annotations") or {}
        if key in annotations:
            return replace(seen, approved_by=f"field manager {entry.get('manager', 'unknown')}")
    return seen


def _variant_ready(ctx: Context, ns: str, md_name: str, variant: str, version: str, replicas: int) -> bool:
    """All of the variant's Pods run `version` and are available (no old Pods left)."""
    deployment = ctx.cache.get(("Deployment", ns, variant_service_name(md_name, variant)))
    if deployment is None:
        return False
    if (deployment["metadata"].get("labels") or {}).get(MODEL_VERSION_LABEL) != version:
        return False
    return _rolled_out(deployment, replicas)


def _deadline_exceeded(ctx: Context, ns: str, md_name: str, variant: str, version: str) -> str | None:
    """The Deployment controller's verdict that the variant's rollout to `version` is stuck
    (`Progressing=False, reason=ProgressDeadlineExceeded`, after progressDeadlineSeconds)."""
    deployment = ctx.cache.get(("Deployment", ns, variant_service_name(md_name, variant)))
    if deployment is None or (deployment["metadata"].get("labels") or {}).get(MODEL_VERSION_LABEL) != version:
        return None
    for cond in (deployment.get("status") or {}).get("conditions") or []:
        if (cond.get("type"), cond.get("status"), cond.get("reason")) == (
                "Progressing", "False", "ProgressDeadlineExceeded"):
            return str(cond.get("message") or "ProgressDeadlineExceeded")
    return None


def _rolled_out(deployment: dict[str, Any], replicas: int) -> bool:
    """The Deployment's current template runs on all its Pods, all available, no old Pod left
    (terminating ones included where the API server reports them)."""
    meta, status = deployment["metadata"], deployment.get("status") or {}
    if (status.get("observedGeneration") or 0) < meta.get("generation", 1):
        return False
    wanted = max(replicas, 1)
    updated = int(status.get("updatedReplicas") or 0)
    return (updated >= wanted and int(status.get("availableReplicas") or 0) >= wanted
            and int(status.get("replicas") or 0) == updated and not status.get("terminatingReplicas"))


def router_serving(ctx: Context, desired: list[dict[str, Any]]) -> bool:
    """The router serves the weights just applied. For the builtin router that means its
    Deployment is the one of this reconcile (the spec hash it was applied with; the config is
    in its template) and fully rolled out; the other routers' objects take effect when
    applied, as far as the operator can see."""
    for obj in desired:
        meta = obj["metadata"]
        if obj["kind"] != "Deployment" or (meta.get("labels") or {}).get(COMPONENT_LABEL) != ROUTER_COMPONENT:
            continue
        cached = ctx.cache.get(("Deployment", meta["namespace"], meta["name"]))
        if cached is None or _spec_hash(cached) != _spec_hash(obj):
            return False
        if not _rolled_out(cached, int(obj["spec"].get("replicas") or 1)):
            return False
    return True


def _spec_hash(obj: dict[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(SPEC_HASH_ANNOTATION)


async def _analyse(ctx: Context, state: DeploymentState, body: dict[str, Any], spec: ModelDeploymentSpec,
                   rollout: RolloutSpec, status: RolloutStatus, seen: Observed, stable: str) -> list[MetricResult]:
    meta = body["metadata"]
    # In the bake window the promoted version serves as the stable variant.
    variant = stable if status.phase == "Baking" else rollout.candidate
    target = AnalysisTarget(namespace=meta["namespace"], name=meta["name"], model=spec.model_name, variant=variant,
                            version=status.candidate_version or seen.candidate_version,
                            interval_seconds=rollout.interval_seconds(),
                            scrape_interval_seconds=ctx.cfg.prometheus_scrape_interval_seconds)
    url = seen.prometheus_url
    assert url is not None
    client = ctx.state.prometheus.get(url)
    if client is None:
        client = ctx.state.prometheus[url] = Prometheus(url)
    try:
        return await analyse(client, rollout.analysed_metrics(), target, rollout.min_requests,
                             drift_share=lambda t: drift_share(ctx, client, spec, t))
    except PrometheusUnavailable as exc:
        # An outage proves nothing about the model: no step forward, no failure counted.
        return [MetricResult(name=m.name, min=m.min, max=m.max, result="Inconclusive",
                             message=f"Prometheus unavailable: {exc}") for m in rollout.analysed_metrics()]


async def _carry_out(ctx: Context, state: DeploymentState, body: dict[str, Any], spec: ModelDeploymentSpec,
                     rollout: RolloutSpec, resolution: Resolution, decision: Decision, stable: str) -> None:
    meta = body["metadata"]
    where = f"{meta['namespace']}/{meta['name']}"
    for action in decision.actions:
        try:
            await _act(ctx, spec.model_name, action, where)
        except MlflowUnavailable:
            if action.kind == "move-alias":
                raise  # nothing is written: the next reconcile decides again
            # Tags are the audit trail, not the decision: the status and Events already say it.
            continue
        if action.kind == "move-alias":
            # Serve the alias's new version in this very reconcile, and re-check it soon.
            info = await ctx.mlflow.get_version(spec.model_name, action.version)
            for variant in spec.variants:
                if variant.alias == action.detail:
                    resolution.versions[variant.name] = action.version
                    if info is not None:
                        resolution.sources[variant.name] = info.source
            state.resolve_now = True
        elif action.kind == "consume-annotation":
            await ctx.kube.merge_patch(body["apiVersion"], body["kind"], meta["namespace"], meta["name"],
                                       {"metadata": {"annotations": {action.detail: None, **(
                                           {APPROVED_BY_ANNOTATION: None} if action.detail == APPROVE_ANNOTATION
                                           else {})}}})


async def _act(ctx: Context, model: str, action: Action, where: str) -> None:
    mlflow = ctx.mlflow
    if action.kind == "move-alias":
        if await mlflow.get_alias(model, action.detail) != action.version:
            await mlflow.set_alias(model, action.detail, action.version)
    elif action.kind == "tag-promoted":
        await mlflow.set_version_tag(model, action.version, TAG_OUTCOME, "promoted")
        await mlflow.set_version_tag(model, action.version, TAG_DEPLOYMENT, where)
        if action.detail:
            await mlflow.set_version_tag(model, action.version, TAG_PREVIOUS, action.detail)
    elif action.kind == "tag-failed":
        await mlflow.set_version_tag(model, action.version, TAG_OUTCOME, "failed")
        await mlflow.set_version_tag(model, action.version, TAG_REASON, action.detail[:5000])
        await mlflow.set_version_tag(model, action.version, TAG_DEPLOYMENT, where)
    elif action.kind == "tag-approved":
        who, _, when = action.detail.partition("|")
        await mlflow.set_version_tag(model, action.version, TAG_APPROVED_BY, who)
        await mlflow.set_version_tag(model, action.version, TAG_APPROVED_AT, when)


def _export_phase(body: dict[str, Any], status: RolloutStatus) -> None:
    meta = body["metadata"]
    metrics.ROLLOUT_STEP.labels(meta["namespace"], meta["name"]).set(status.step)
    metrics.ROLLOUT_CANDIDATE_WEIGHT.labels(meta["namespace"], meta["name"]).set(status.candidate_weight)
    for phase in metrics.ROLLOUT_PHASES:
        metrics.ROLLOUT_PHASE.labels(meta["namespace"], meta["name"], phase).set(1 if phase == status.phase else 0)


def _export_analysis(body: dict[str, Any], results: list[MetricResult]) -> None:
    meta = body["metadata"]
    for result in results:
        metrics.ROLLOUT_ANALYSIS.labels(meta["namespace"], meta["name"], result.name, result.result).inc()


def forget(body: dict[str, Any]) -> None:
    """Drop a deleted ModelDeployment's rollout series."""
    meta = body["metadata"]
    labels = (meta["namespace"], meta["name"])
    for gauge in (metrics.ROLLOUT_STEP, metrics.ROLLOUT_CANDIDATE_WEIGHT):
        try:
            gauge.remove(*labels)
        except KeyError:
            pass
    for phase in metrics.ROLLOUT_PHASES:
        try:
            metrics.ROLLOUT_PHASE.remove(*labels, phase)
        except KeyError:
            pass
