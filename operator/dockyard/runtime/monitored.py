"""MLServer runtime that serves an MLflow model and counts its live traffic into the buckets
of the version's reference profile (issue 13), as Prometheus counters on MLServer's metrics
port. Counters only grow and carry model, version and variant, so the operator sums them over
every replica for any window; no per-Pod window has to be merged.

fetch-model selects it (model-settings.json) when the version has a reference profile. The
request path does one dictionary lookup and one counter increment per feature value; a
payload that does not fit the profile is counted as such and served (or refused) exactly as
the plain MLflow runtime would.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri
from mlserver_mlflow import MLflowRuntime
from prometheus_client import REGISTRY, Counter

from ..monitoring.live import bucket
from ..monitoring.reference import ReferenceProfile

log = logging.getLogger(__name__)

IMPLEMENTATION = "dockyard.runtime.monitored.MonitoredMLflowRuntime"
PROFILE_FILE = "reference-profile.json"
INFO_FILE = "dockyard.json"
LABELS = ("model", "version", "variant")

def _counter(name: str, documentation: str, labels: list[str]) -> Counter:
    """The process's counter `name`: MLServer imports a runtime's module more than once (and may
    load a model again), while Prometheus refuses to register one name twice."""
    existing = REGISTRY._names_to_collectors.get(f"{name}_total")  # prometheus_client has no public lookup
    if isinstance(existing, Counter):
        return existing
    return Counter(name, documentation, labels)


FEATURE_VALUES = _counter("dockyard_monitor_feature_values", "Live feature values per reference bucket.",
                          [*LABELS, "feature", "bucket"])
FEATURE_ANOMALIES = _counter("dockyard_monitor_feature_anomalies",
                            "Live feature values that are missing, out of the reference's range, of a category "
                            "it never saw, or of the wrong type.", [*LABELS, "feature", "kind"])
PREDICTIONS = _counter("dockyard_monitor_predictions", "Predictions per reference bucket.", [*LABELS, "bucket"])
REQUESTS = _counter("dockyard_monitor_requests",
                   "Inference requests seen by monitoring: counted, or not matching the profile's features.",
                   [*LABELS, "outcome"])


def flatten(data: Any) -> list[Any]:
    if isinstance(data, list | tuple):
        return [x for item in data for x in flatten(item)]
    return [data]


class Monitor:
    """Counts one request's inputs and outputs; knows nothing of MLServer."""

    def __init__(self, profile: ReferenceProfile, model: str, version: str, variant: str) -> None:
        self.profile = profile
        self.labels = (model, version, variant)

    @classmethod
    def from_dir(cls, folder: Path) -> Monitor | None:
        profile_path, info_path = folder / PROFILE_FILE, folder / INFO_FILE
        if not profile_path.is_file() or not info_path.is_file():
            return None
        info = json.loads(info_path.read_text())
        profile = ReferenceProfile.model_validate_json(profile_path.read_text())
        return cls(profile, str(info.get("model", "")), str(info.get("version", "")), str(info.get("variant", "")))

    def observe(self, inputs: dict[str, list[Any]], outputs: list[Any] | None) -> bool:
        """Count named input columns (and the first output); False when the request's inputs
        do not name the profile's features."""
        features = self.profile.features
        if not set(features) <= set(inputs):
            REQUESTS.labels(*self.labels, "mismatch").inc()
            return False
        for name, column in features.items():
            for value in inputs[name]:
                label, odd = bucket(column, value)
                if label is not None:
                    FEATURE_VALUES.labels(*self.labels, name, label).inc()
                if odd is not None:
                    FEATURE_ANOMALIES.labels(*self.labels, name, odd).inc()
        if outputs is not None and self.profile.prediction is not None:
            for value in outputs:
                label, _ = bucket(self.profile.prediction, value)
                if label is not None:
                    PREDICTIONS.labels(*self.labels, label).inc()
        REQUESTS.labels(*self.labels, "counted").inc()
        return True


def request_columns(payload: InferenceRequest) -> dict[str, list[Any]]:
    return {i.name: flatten(i.data.root if hasattr(i.data, "root") else i.data) for i in payload.inputs}


class MonitoredMLflowRuntime(MLflowRuntime):
    async def load(self) -> bool:
        loaded = await super().load()
        folder = Path(await get_model_uri(self._settings)).parent
        self._monitor = Monitor.from_dir(folder)
        if self._monitor is None:
            log.warning("no %s next to the model in %s: live traffic is not monitored", PROFILE_FILE, folder)
        return loaded

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        monitor = getattr(self, "_monitor", None)
        try:
            response = await super().predict(payload)
        except Exception:
            if monitor is not None:  # a payload the model refuses is still traffic we report
                REQUESTS.labels(*monitor.labels, "mismatch").inc()
            raise
        if monitor is not None:
            try:
                outputs = flatten(response.outputs[0].data.root) if response.outputs else None
                monitor.observe(request_columns(payload), outputs)
            except Exception:  # monitoring must never fail a prediction
                log.exception("could not count a request for monitoring")
                REQUESTS.labels(*monitor.labels, "mismatch").inc()
        return response
