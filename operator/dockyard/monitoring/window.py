"""One drift evaluation: the PromQL that sums a window of the serving Pods' monitoring counters
over every replica, the counts it returns, and the verdict in the ModelDeployment's status
form. Pure: the controller (dockyard.controllers.monitoring) does the querying.

Counters only grow, so `sum by (...) (increase(counter[window]))` is the window's traffic over
all replicas of the variant's version; replicas merge exactly. `increase()` extrapolates to the
window's edges, so counts are approximate by a fraction of a scrape interval's traffic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from ..api.monitoring import PREDICTION, FeatureDrift, MonitoringSpec, VariantDrift
from ..runtime import monitor_counts as counted
from .live import ColumnCounts, ColumnDrift, DriftReport, evaluate
from .reference import ReferenceProfile

# The serving Pods' counters, as Prometheus stores them (a counter's samples end in _total).
FEATURE_VALUES = f"{counted.FEATURE_VALUES.name}_total"
FEATURE_ANOMALIES = f"{counted.FEATURE_ANOMALIES.name}_total"
PREDICTIONS = f"{counted.PREDICTIONS.name}_total"
REQUESTS = f"{counted.REQUESTS.name}_total"
STATUS_FEATURES = 20  # features listed per variant in status (the most drifted first)
ANOMALY_KINDS = ("missing", "out_of_range", "unseen", "invalid")

Series = list[tuple[dict[str, str], float]]


@dataclass(frozen=True)
class WindowQueries:
    features: str
    anomalies: str
    predictions: str
    requests: str


def window_queries(matchers: list[str], window_seconds: int) -> WindowQueries:
    """The four queries of one variant+version's window; `matchers` select its series."""
    sel, rng = "{" + ", ".join(matchers) + "}", f"[{window_seconds}s]"
    return WindowQueries(
        features=f"sum by (feature, bucket) (increase({FEATURE_VALUES}{sel}{rng}))",
        anomalies=f"sum by (feature, kind) (increase({FEATURE_ANOMALIES}{sel}{rng}))",
        predictions=f"sum by (bucket) (increase({PREDICTIONS}{sel}{rng}))",
        requests=f"sum by (outcome) (increase({REQUESTS}{sel}{rng}))",
    )


@dataclass
class WindowCounts:
    features: dict[str, ColumnCounts] = field(default_factory=dict)
    prediction: ColumnCounts = field(default_factory=ColumnCounts)
    requests: int = 0  # counted
    mismatched: int = 0  # payloads that did not carry the profile's features


def counts_from_series(features: Series, anomalies: Series, predictions: Series, requests: Series) -> WindowCounts:
    """The window's counts from the four queries' results (rounded: increase() extrapolates)."""
    out = WindowCounts()
    for labels, value in features:
        name, label = labels.get("feature"), labels.get("bucket")
        if name is not None and label is not None and round(value) > 0:
            out.features.setdefault(name, ColumnCounts()).buckets[label] += round(value)
    for labels, value in anomalies:
        name, kind = labels.get("feature"), labels.get("kind")
        if name is not None and kind in ANOMALY_KINDS:
            counts = out.features.setdefault(name, ColumnCounts())
            setattr(counts, kind, getattr(counts, kind) + round(value))
    out.prediction = ColumnCounts(buckets=Counter({
        labels["bucket"]: round(value) for labels, value in predictions if "bucket" in labels and round(value) > 0}))
    for labels, value in requests:
        if labels.get("outcome") == "counted":
            out.requests += round(value)
        elif labels.get("outcome") == "mismatch":
            out.mismatched += round(value)
    return out


def watched(spec: MonitoringSpec, profile: ReferenceProfile) -> tuple[list[str], list[str]]:
    """(features to watch, named features the profile does not have)."""
    names = list(spec.features) if spec.features else sorted(profile.features)
    return [n for n in names if n in profile.features], [n for n in names if n not in profile.features]


def drift_report(spec: MonitoringSpec, profile: ReferenceProfile, counts: WindowCounts) -> DriftReport:
    names, _ = watched(spec, profile)
    return evaluate(profile, counts.features, counts.prediction, watch=names, share=spec.drift_share,
                    psi_threshold=spec.psi_threshold, js_threshold=spec.js_threshold, min_samples=spec.min_samples)


def _feature(name: str, drift: ColumnDrift, counts: ColumnCounts | None) -> FeatureDrift:
    score = None if drift.score is None else round(drift.score, 4)
    odd = {kind: getattr(counts, kind) for kind in ANOMALY_KINDS if counts is not None and getattr(counts, kind)}
    return FeatureDrift(name=name, method=drift.method, score=score, threshold=drift.threshold,
                        drifted=drift.drifted, samples=drift.samples, anomalies=odd or None)


def _severity(item: FeatureDrift) -> float:
    return -1.0 if item.score is None else item.score / item.threshold


def variant_drift(variant: str, version: str, spec: MonitoringSpec, profile: ReferenceProfile,
                  counts: WindowCounts) -> tuple[VariantDrift, DriftReport | None]:
    """One variant's verdict for the window (and the report behind it, None on a config error)."""
    names, unknown = watched(spec, profile)
    base = {"name": variant, "version": version, "requests": counts.requests}
    if unknown:
        known = ", ".join(sorted(profile.features))
        return VariantDrift(**base, result="Error", reason="UnknownFeatures", watched_features=len(names),
                            message=f"monitoring.features names {', '.join(unknown)}, not in version {version}'s "
                                    f"reference profile (features: {known})"), None
    report = drift_report(spec, profile, counts)
    features = sorted((_feature(n, d, counts.features.get(n)) for n, d in report.features.items()),
                      key=lambda f: (-_severity(f), f.name))
    prediction = _feature(PREDICTION, report.prediction, None) if report.prediction is not None else None
    drifted = [f for f in features if f.drifted]
    verdict = report.dataset_drift
    result: Literal["Drift", "NoDrift", "Inconclusive"]
    if verdict is None:
        few = min((f.samples for f in features), default=0)
        result, reason = "Inconclusive", "TooFewSamples"
        message = f"{few} values in the window for some feature < minSamples {spec.min_samples}"
    elif verdict:
        result, reason = "Drift", "DriftDetected"
        message = f"{len(drifted)} of {len(features)} features drifted: {describe(drifted)}"
    else:
        result, reason = "NoDrift", "NoDrift"
        message = (f"{len(drifted)} of {len(features)} features drifted (dataset drift needs a share of "
                   f"{spec.drift_share:g})" + (f": {describe(drifted)}" if drifted else ""))
    if prediction is not None and prediction.drifted:
        message += f"; predictions drifted ({prediction.method} {prediction.score:g})"
    if counts.mismatched:
        message += f"; {counts.mismatched} requests did not carry the model's features"
    return VariantDrift(**base, result=result, reason=reason, drifted_features=len(drifted),
                        watched_features=len(features), features=features[:STATUS_FEATURES],
                        prediction=prediction, message=message), report


def describe(features: Iterable[FeatureDrift], limit: int = 3) -> str:
    """`sepal_width psi 4.21, sepal_length psi 1.3`: the first `limit` features and their scores."""
    items = list(features)
    text = ", ".join(f"{f.name} {f.method} {f.score:g}" for f in items[:limit] if f.score is not None)
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


def drift_condition(variants: list[VariantDrift]) -> tuple[Literal["True", "False", "Unknown"], str, str]:
    """`DataDrift`: True when a variant's traffic drifted, False when every conclusive variant's
    did not, Unknown when nothing was conclusive (too little traffic, no reference, an error)."""
    drifted = [v for v in variants if v.result == "Drift"]
    if drifted:
        return "True", "DriftDetected", "; ".join(
            f"variant {v.name} (version {v.version}): {describe([f for f in v.features or [] if f.drifted])}"
            f" ({v.drifted_features} of {v.watched_features} features)" for v in drifted)
    calm = [v for v in variants if v.result == "NoDrift"]
    if calm:
        return "False", "NoDrift", "; ".join(
            f"variant {v.name} (version {v.version}): no drift over {v.requests} requests" for v in calm)
    if not variants:
        return "Unknown", "NoTraffic", "no variant serves traffic"
    first = variants[0]
    return "Unknown", first.reason or first.result, "; ".join(f"variant {v.name}: {v.message}" for v in variants)
