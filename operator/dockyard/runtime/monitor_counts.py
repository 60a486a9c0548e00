"""Counting live traffic into the buckets of a version's reference profile (issue 13), for any
serving runtime: the series every runtime exports, and :class:`Monitor`, which counts one
request's named inputs and outputs into a :class:`Sink`.

The MLServer runtime (:mod:`dockyard.runtime.monitored`) counts into prometheus_client counters
(:class:`PrometheusCounters`); the seldon-core model (:mod:`dockyard.runtime.seldon_model`)
counts into increments it hands to seldon-core's own metrics. Either way the series are
``dockyard_monitor_{feature_values,feature_anomalies,predictions,requests}_total`` labelled
``model``, ``version``, ``variant`` and the extra labels below.

Imports nothing of MLServer or seldon-core.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter

from ..monitoring.live import OTHER, bucket
from ..monitoring.reference import CategoricalProfile, NumericProfile, ReferenceProfile

PROFILE_FILE = "reference-profile.json"  # written next to the model by fetch-model
INFO_FILE = "dockyard.json"
LABELS = ("model", "version", "variant")
NUMERIC_ANOMALIES = ("missing", "out_of_range", "invalid")
OUTCOMES = ("counted", "mismatch")


@dataclass(frozen=True)
class Metric:
    name: str  # without the `_total` a counter's samples get
    documentation: str
    labels: tuple[str, ...]


FEATURE_VALUES = Metric("dockyard_monitor_feature_values", "Live feature values per reference bucket.",
                        (*LABELS, "feature", "bucket"))
FEATURE_ANOMALIES = Metric("dockyard_monitor_feature_anomalies",
                           "Live feature values that are missing, out of the reference's range, of a category "
                           "it never saw, or of the wrong type.", (*LABELS, "feature", "kind"))
PREDICTIONS = Metric("dockyard_monitor_predictions", "Predictions per reference bucket.", (*LABELS, "bucket"))
REQUESTS = Metric("dockyard_monitor_requests",
                  "Inference requests seen by monitoring: counted, or not matching the profile's features.",
                  (*LABELS, "outcome"))
METRICS = (FEATURE_VALUES, FEATURE_ANOMALIES, PREDICTIONS, REQUESTS)

Series = tuple[Metric, tuple[str, ...]]  # a metric and its label values, in Metric.labels order


class Sink(Protocol):
    def inc(self, metric: Metric, labels: tuple[str, ...], amount: float = 1) -> None: ...


class PrometheusCounters:
    """The process's prometheus_client counters, registered once per registry: MLServer imports
    a runtime's module more than once (and may load a model again), while Prometheus refuses to
    register one name twice."""

    _lock = threading.Lock()

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.counters: dict[str, Counter] = {}
        with self._lock:
            for metric in METRICS:
                # prometheus_client has no public lookup of a registered collector
                existing = registry._names_to_collectors.get(f"{metric.name}_total")
                self.counters[metric.name] = existing if isinstance(existing, Counter) else Counter(
                    metric.name, metric.documentation, list(metric.labels), registry=registry)

    def inc(self, metric: Metric, labels: tuple[str, ...], amount: float = 1) -> None:
        self.counters[metric.name].labels(*labels).inc(amount)


class Increments:
    """Increments since the last :meth:`take`, for a runtime that reports deltas (seldon-core's
    custom COUNTER metrics). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[Series, float] = {}

    def inc(self, metric: Metric, labels: tuple[str, ...], amount: float = 1) -> None:
        if amount:  # a series at 0 is the runtime's to report (seldon_model does, per seldon method)
            series = (metric, labels)
            with self._lock:
                self._pending[series] = self._pending.get(series, 0) + amount

    def take(self) -> dict[Series, float]:
        with self._lock:
            pending, self._pending = self._pending, {}
        return pending


def bucket_labels(column: NumericProfile | CategoricalProfile) -> list[str]:
    """Every bucket label :func:`dockyard.monitoring.live.bucket` can give a value of `column`."""
    if isinstance(column, NumericProfile):
        return [str(i) for i in range(len(column.fractions))]  # bin_index: 0 .. len(cuts)
    return [*column.categories, OTHER]


def anomaly_kinds(column: NumericProfile | CategoricalProfile) -> tuple[str, ...]:
    """Every anomaly :func:`dockyard.monitoring.live.bucket` can report for a value of `column`."""
    if isinstance(column, NumericProfile):
        return NUMERIC_ANOMALIES
    # A category beyond the kept ones is "unseen" only when the reference had no "other" share.
    return ("missing", "unseen") if column.other == 0 else ("missing",)


def flatten(data: Any) -> list[Any]:
    if isinstance(data, list | tuple):
        return [x for item in data for x in flatten(item)]
    return [data]


def load_profile(folder: Path) -> ReferenceProfile | None:
    path = folder / PROFILE_FILE
    return ReferenceProfile.model_validate_json(path.read_text()) if path.is_file() else None


class Monitor:
    """Counts one request's inputs and outputs into `sink` (by default the process's
    prometheus_client counters); knows nothing of any serving runtime."""

    def __init__(self, profile: ReferenceProfile, model: str, version: str, variant: str,
                 sink: Sink | None = None) -> None:
        self.profile = profile
        self.labels = (model, version, variant)
        self.sink: Sink = sink if sink is not None else PrometheusCounters()
        # Every series exists, at 0, before the first request: Prometheus's increase() cannot see
        # the first increments of a series that appears in the middle of a window, so a bucket
        # that only appears once traffic shifts (a far-out bin, `unseen`) would be under-counted
        # exactly when drift starts.
        for metric, labels in self.series():
            self.sink.inc(metric, labels, 0)

    @classmethod
    def from_dir(cls, folder: Path, sink: Sink | None = None) -> Monitor | None:
        """From what fetch-model wrote: the profile and dockyard.json's model, version, variant."""
        profile, info_path = load_profile(folder), folder / INFO_FILE
        if profile is None or not info_path.is_file():
            return None
        info = json.loads(info_path.read_text())
        return cls(profile, str(info.get("model", "")), str(info.get("version", "")), str(info.get("variant", "")),
                   sink)

    def series(self) -> Iterator[Series]:
        """Every series this monitor can count into."""
        for name, column in self.profile.features.items():
            for label in bucket_labels(column):
                yield FEATURE_VALUES, (*self.labels, name, label)
            for kind in anomaly_kinds(column):
                yield FEATURE_ANOMALIES, (*self.labels, name, kind)
        if self.profile.prediction is not None:
            for label in bucket_labels(self.profile.prediction):
                yield PREDICTIONS, (*self.labels, label)
        for outcome in OUTCOMES:
            yield REQUESTS, (*self.labels, outcome)

    def mismatch(self) -> None:
        """A request that could not be counted (or that the model refused)."""
        self.sink.inc(REQUESTS, (*self.labels, "mismatch"))

    def observe(self, inputs: Mapping[str, list[Any]], outputs: list[Any] | None) -> bool:
        """Count named input columns (and the first output); False, counted as a mismatch, when
        the request's inputs do not name the profile's features."""
        features = self.profile.features
        if not set(features) <= set(inputs):
            self.mismatch()
            return False
        sink = self.sink
        for name, column in features.items():
            for value in inputs[name]:
                label, odd = bucket(column, value)
                if label is not None:
                    sink.inc(FEATURE_VALUES, (*self.labels, name, label))
                if odd is not None:
                    sink.inc(FEATURE_ANOMALIES, (*self.labels, name, odd))
        if outputs is not None and self.profile.prediction is not None:
            for value in outputs:
                label, _ = bucket(self.profile.prediction, value)
                if label is not None:
                    sink.inc(PREDICTIONS, (*self.labels, label))
        sink.inc(REQUESTS, (*self.labels, "counted"))
        return True
