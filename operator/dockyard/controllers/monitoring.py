"""The I/O of a ModelDeployment's drift monitoring: once per window, each variant's served
version is compared with its reference profile over the window's traffic, summed over every
replica in Prometheus. The verdicts are `dockyard.monitoring.window`'s (pure); this module
fetches the profiles (MLflow), queries Prometheus, exports the scores, writes the drift report
to the version's run and wakes the TrainingRuns that retrain on this deployment's drift.

The cadence is kept in status (`lastEvaluation`), so a restarted operator neither evaluates a
window twice nor skips one.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from .. import metrics
from ..analysis import (
    AnalysisTarget,
    Prometheus,
    PrometheusQueryError,
    PrometheusUnavailable,
    serving_matchers,
)
from ..api.modeldeployment import ModelDeploymentSpec
from ..api.monitoring import MonitoringSpec, MonitoringStatus, VariantDrift
from ..conditions import now_rfc3339
from ..mlflow_client import MlflowError, MlflowUnavailable
from ..monitoring.live import DriftReport
from ..monitoring.reference import PROFILE_ARTIFACT, ReferenceProfile
from ..monitoring.window import WindowCounts, counts_from_series, variant_drift, window_queries
from ..rollout import parse_ts
from .base import Context
from .common import status_section
from .state import DeploymentState, ProfileEntry, Resolution

RATE_WINDOW_SCRAPES = 4  # as rollout analysis: increase() needs samples across the window
PROFILE_RETRY_SECONDS = 300.0  # a version without a profile is asked again after this
REPORT_DIR = "drift"
TAG_DRIFT = "dockyard.drift"
TAG_DRIFT_REPORT = "dockyard.drift.report"


def previous_status(body: dict[str, Any]) -> MonitoringStatus | None:
    return status_section(MonitoringStatus, body, "monitoring")


def window_seconds(ctx: Context, spec: MonitoringSpec) -> int:
    return max(spec.window_seconds(), RATE_WINDOW_SCRAPES * ctx.cfg.prometheus_scrape_interval_seconds)


async def reconcile_monitoring(ctx: Context, state: DeploymentState, body: dict[str, Any], spec: ModelDeploymentSpec,
                               resolution: Resolution) -> tuple[MonitoringStatus | None, float | None]:
    """The monitoring status to write and the seconds until the next evaluation (None, None
    without spec.monitoring)."""
    monitoring = spec.monitoring
    if monitoring is None:
        forget(body, state)
        return None, None
    window = window_seconds(ctx, monitoring)
    previous = previous_status(body)
    now = datetime.now(UTC)
    if previous is not None and previous.last_evaluation and previous.window_seconds == window:
        last = parse_ts(previous.last_evaluation)
        elapsed = (now - last).total_seconds() if last else float(window)
        if 0 <= elapsed < window:
            return previous, window - elapsed
    started = time.perf_counter()
    variants = [await _evaluate_variant(ctx, body, spec, monitoring, v.name, resolution.versions[v.name], window)
                for v in spec.variants if v.replicas > 0]
    metrics.DRIFT_EVALUATION_DURATION.observe(time.perf_counter() - started)
    status = _next_status(previous, variants, window, now)
    _export(state, body, variants)
    if status.consecutive_drift_windows != (previous.consecutive_drift_windows if previous else 0):
        _wake_trainingruns(ctx, body)
    return status, float(window)


def _next_status(previous: MonitoringStatus | None, variants: list[VariantDrift], window: int,
                 now: datetime) -> MonitoringStatus:
    """Consecutive drifted windows: a drifted window adds one, a calm one resets, an
    inconclusive one (no variant conclusive) leaves the count as it was."""
    count, since = (previous.consecutive_drift_windows, previous.drift_since) if previous else (0, None)
    if any(v.result == "Drift" for v in variants):
        count, since = count + 1, since or now.strftime("%Y-%m-%dT%H:%M:%SZ")
    elif any(v.result == "NoDrift" for v in variants):
        count, since = 0, None
    return MonitoringStatus(window_seconds=window, last_evaluation=now_rfc3339(), consecutive_drift_windows=count,
                            drift_since=since, variants=variants)


async def _evaluate_variant(ctx: Context, body: dict[str, Any], spec: ModelDeploymentSpec, monitoring: MonitoringSpec,
                            variant: str, version: str, window: int) -> VariantDrift:
    meta = body["metadata"]
    base = {"name": variant, "version": version}
    url = monitoring.prometheus_url or ctx.cfg.prometheus_url
    if not url:
        return VariantDrift(**base, result="Error", reason="PrometheusNotConfigured",
                            message="monitoring needs a Prometheus: set spec.monitoring.prometheusUrl or the "
                                    "operator's DOCKYARD_PROMETHEUS_URL (chart value prometheus.url)")
    if spec.runtime == "seldon" and spec.router.type == "seldon":
        # Seldon Core's operator labels its Pods itself: the PodMonitor's selector misses them.
        return VariantDrift(**base, result="Error", reason="MetricsUnavailable",
                            message="router.type seldon runs its own serving Pods, which Dockyard's PodMonitor does "
                                    "not scrape; monitor with the builtin, gateway or istio router")
    try:
        profile = await _profile(ctx, spec.model_name, version)
    except (MlflowUnavailable, MlflowError) as exc:
        return VariantDrift(**base, result="Error", reason="MlflowUnavailable",
                            message=f"could not read the reference profile: {exc}")
    if profile is None:
        return VariantDrift(**base, result="NoReference", reason="NoReferenceProfile",
                            message=f"version {version} has no reference profile ({PROFILE_ARTIFACT} in its run); "
                                    f"the built-in trainer logs one, other trainers call log_reference_profile")
    try:
        counts = await _window_counts(_prometheus(ctx, url), meta["namespace"], meta["name"], variant, version,
                                      window)
    except PrometheusQueryError as exc:
        return VariantDrift(**base, result="Error", reason="PrometheusQueryError", message=str(exc)[:1000])
    except PrometheusUnavailable as exc:
        return VariantDrift(**base, result="Error", reason="PrometheusUnavailable", message=str(exc)[:1000])
    verdict, report = variant_drift(variant, version, monitoring, profile, counts)
    metrics.DRIFT_EVALUATIONS.labels(meta["namespace"], meta["name"], verdict.result).inc()
    if verdict.result == "Drift" and monitoring.report and report is not None:
        verdict.report = await _attach_report(ctx, body, spec, verdict, profile, counts, report, window)
    return verdict


async def drift_share(ctx: Context, prom: Prometheus, spec: ModelDeploymentSpec, target: AnalysisTarget) -> float | None:
    """The rollout analysis's dataDrift: the share of watched features that drifted in the
    analysis window (None when inconclusive or the version has no reference profile)."""
    try:
        profile = await _profile(ctx, spec.model_name, target.version)
    except (MlflowUnavailable, MlflowError):
        return None  # no verdict without the reference: inconclusive, as an outage should be
    if profile is None:
        return None
    counts = await _window_counts(prom, target.namespace, target.name, target.variant, target.version,
                                  target.window_seconds)
    verdict, _ = variant_drift(target.variant, target.version, spec.monitoring or MonitoringSpec(), profile, counts)
    if verdict.result not in ("Drift", "NoDrift"):
        return None
    return verdict.drifted_features / max(1, verdict.watched_features)


def _prometheus(ctx: Context, url: str) -> Prometheus:
    client = ctx.state.prometheus.get(url)
    if client is None:
        client = ctx.state.prometheus[url] = Prometheus(url)
    return client


async def _window_counts(prom: Prometheus, namespace: str, name: str, variant: str, version: str,
                         window: int) -> WindowCounts:
    queries = window_queries(serving_matchers(namespace, name, variant, version), window)
    features, anomalies, predictions, requests = await asyncio.gather(
        prom.query_vector(queries.features), prom.query_vector(queries.anomalies),
        prom.query_vector(queries.predictions), prom.query_vector(queries.requests))
    return counts_from_series(features, anomalies, predictions, requests)


async def _profile(ctx: Context, model: str, version: str) -> ReferenceProfile | None:
    """The version's reference profile, read once from its run (a version is immutable). A
    missing one is asked for again after a while: a bring-your-own trainer may log it late."""
    key = (model, version)
    cached = ctx.state.profiles.get(key)
    if cached is not None and (cached.profile is not None or time.monotonic() - cached.at < PROFILE_RETRY_SECONDS):
        return cached.profile
    info = await ctx.mlflow.get_version(model, version)
    raw = await ctx.mlflow.read_artifact(info.run_id, PROFILE_ARTIFACT) if info and info.run_id else None
    profile = ReferenceProfile.model_validate_json(raw) if raw else None
    ctx.state.profiles[key] = ProfileEntry(profile, time.monotonic(), info.run_id if info else "")
    return profile


async def _attach_report(ctx: Context, body: dict[str, Any], spec: ModelDeploymentSpec, verdict: VariantDrift,
                         profile: ReferenceProfile, counts: WindowCounts, report: DriftReport,
                         window: int) -> str | None:
    """Render the drift report and store it in the version's run, tagged on the version, so it
    sits next to the model in the MLflow UI. A failure here is logged, never fatal."""
    from ..monitoring.report import render_report_html

    meta = body["metadata"]
    entry = ctx.state.profiles.get((spec.model_name, verdict.version))
    if entry is None or not entry.run_id:
        return None
    title = f"{spec.model_name} version {verdict.version}: {meta['namespace']}/{meta['name']} variant {verdict.name}"
    subtitle = (f"window {window}s up to {now_rfc3339()}, {verdict.requests} requests: "
                f"{verdict.drifted_features} of {verdict.watched_features} features drifted")
    try:
        page = render_report_html(profile, counts.features, counts.prediction, report, title=title,
                                  subtitle=subtitle)
        path = f"{REPORT_DIR}/{meta['namespace']}/{meta['name']}/{verdict.name}.html"
        uri = await ctx.mlflow.write_artifact(entry.run_id, path, page)
        await ctx.mlflow.set_version_tag(spec.model_name, verdict.version, TAG_DRIFT_REPORT, uri)
        await ctx.mlflow.set_version_tag(spec.model_name, verdict.version, TAG_DRIFT, (verdict.message or "")[:5000])
    except (MlflowUnavailable, MlflowError) as exc:
        await ctx.events.emit(body, "Warning", "DriftReportFailed",
                              f"could not store the drift report of variant {verdict.name}: {exc}"[:1000])
        return None
    return uri


def _wake_trainingruns(ctx: Context, body: dict[str, Any]) -> None:
    """TrainingRuns that retrain on this deployment's drift decide now, not at their next resync."""
    meta = body["metadata"]
    for tr in ctx.cache.by_kind("TrainingRun", meta["namespace"]):
        on_drift = (((tr.get("spec") or {}).get("retrain") or {}).get("onDrift") or {})
        if on_drift.get("modelDeployment") == meta["name"]:
            ctx.queue.add(("TrainingRun", meta["namespace"], tr["metadata"]["name"]))


def _export(state: DeploymentState, body: dict[str, Any], variants: list[VariantDrift]) -> None:
    meta = body["metadata"]
    ns, name = meta["namespace"], meta["name"]
    forget(body, state)
    for v in variants:
        if v.result in ("Drift", "NoDrift"):
            metrics.DATASET_DRIFT.labels(ns, name, v.name, v.version).set(1 if v.result == "Drift" else 0)
            state.drift_series.append((metrics.DATASET_DRIFT, (ns, name, v.name, v.version)))
        for f in [*(v.features or []), *([v.prediction] if v.prediction else [])]:
            if f.score is None:
                continue
            score_labels = (ns, name, v.name, v.version, f.name, f.method)
            metrics.DRIFT_SCORE.labels(*score_labels).set(f.score)
            metrics.DRIFT_DETECTED.labels(ns, name, v.name, v.version, f.name).set(1 if f.drifted else 0)
            state.drift_series += [(metrics.DRIFT_SCORE, score_labels),
                                   (metrics.DRIFT_DETECTED, (ns, name, v.name, v.version, f.name))]


def forget(body: dict[str, Any], state: DeploymentState | None) -> None:
    """Drop the drift series this deployment exported (versions change, features go)."""
    if state is None:
        return
    for gauge, labels in state.drift_series:
        try:
            gauge.remove(*labels)
        except KeyError:
            pass
    state.drift_series = []

