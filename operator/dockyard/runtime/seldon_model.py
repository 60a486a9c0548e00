"""The Dockyard model class for the opt-in seldon-core runtime (`dockyard serve --runtime seldon`).

seldon-core >= 1.18 is Business Source License 1.1: this module imports nothing from it, and
the default MLServer runtime never loads it.

`seldon-core-microservice dockyard.runtime.seldon_model.DockyardModel --parameters
'[{"name": "model_dir", "value": "/models", "type": "STRING"}, ...]'` instantiates it; it loads
the MLflow model that `dockyard fetch-model` wrote to MODEL_DIR/model (never contacting MLflow)
and reports the model name, version and variant in every response's `meta.tags`, in
`/health/status` and in `/metadata`. A custom counter `dockyard_predictions_total` (rows
predicted) is exported on the metrics port.

With the version's reference profile next to the model (fetch-model copies it), every
prediction's named input columns and outputs are counted into its buckets
(:mod:`dockyard.runtime.monitor_counts`, as the MLServer runtime does), as the same
`dockyard_monitor_*_total` counters with the same labels. seldon-core 1.19 serves its metrics
port from its own process and shows only the custom metrics its model methods return (it merges
them across gunicorn workers through a multiprocessing Manager; prometheus_client's registry of
the worker is never exposed), so the counts travel as COUNTER increments from :meth:`metrics`.
seldon adds its own labels to them (`method` - the seldon method whose call reported them,
`predict` or `health` -, `worker_id`, and its deployment/image labels); sums by the Dockyard
labels are unaffected. Since seldon labels each series by the reporting method, every series is
reported at 0 the first time each of those methods reports: for `health` at the first
readiness check, before the Pod gets traffic; for `predict` with the first prediction.
A refused payload (counted as a mismatch) has no metrics call of its own: it is reported with
the next prediction or readiness check.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from .monitor_counts import PROFILE_FILE, Increments, Monitor, load_profile

log = logging.getLogger(__name__)


def seldon_key_clash(monitor: Monitor) -> str | None:
    """Two of the monitor's series that seldon-core would store as one. seldon keys a custom
    metric's series by its tags joined as `k-v_k-v` (seldon_core.metrics), so a category such
    as `a_feature-b` can collide with another series' tags; the series are finite and known at
    load time, so this is checked once."""
    seen: dict[tuple[str, str], tuple[str, ...]] = {}
    for metric, labels in monitor.series():
        key = (metric.name, "_".join(f"{k}-{v}" for k, v in sorted(zip(metric.labels, labels, strict=True))))
        if key in seen and seen[key] != labels:
            return f"{seen[key]} and {labels} of {metric.name}"
        seen[key] = labels
    return None


class DockyardModel:
    """seldon-core 1.x Python model: load(), predict(), tags(), metrics(), health_status(),
    init_metadata()."""

    def __init__(self, model_dir: str | None = None, variant: str | None = None, **_: Any) -> None:
        self.model_dir = Path(model_dir or os.environ.get("DOCKYARD_MODEL_DIR", "/mnt/models"))
        self.variant = variant if variant is not None else os.environ.get("DOCKYARD_VARIANT", "")
        info: dict[str, Any] = {}
        try:
            info = json.loads((self.model_dir / "dockyard.json").read_text())
        except (OSError, ValueError) as exc:
            log.warning("no readable dockyard.json in %s: %s", self.model_dir, exc)
        self.model_name = str(info.get("model", ""))
        self.model_version = str(info.get("version", ""))
        if not self.variant:
            self.variant = str(info.get("variant", ""))
        self.model: Any = None
        self.input_names: list[str] | None = None
        self._lock = threading.Lock()
        self._pending_rows = 0
        self.loaded = False
        # Which seldon method (predict, health) calls metrics() next in this thread: seldon calls
        # metrics() right after predict() or health_status(), in the same thread.
        self._caller = threading.local()
        self._counts = Increments()
        self._reported_zeros: set[str] = set()
        self.monitor: Monitor | None = None
        try:
            profile = load_profile(self.model_dir)
        except (OSError, ValueError) as exc:
            log.warning("unreadable %s in %s: live traffic is not monitored: %s", PROFILE_FILE, self.model_dir, exc)
        else:
            if profile is None:
                log.warning("no %s in %s: live traffic is not monitored", PROFILE_FILE, self.model_dir)
            else:
                monitor = Monitor(profile, self.model_name, self.model_version, self.variant, self._counts)
                clash = seldon_key_clash(monitor)
                if clash:
                    # seldon would add the two series' counts together: better no counts than wrong ones
                    log.warning("live traffic is not monitored: seldon-core cannot tell apart the series %s",
                                clash)
                else:
                    self.monitor = monitor

    # -- lifecycle ---------------------------------------------------------------------
    def load(self) -> None:
        import mlflow.pyfunc

        self.model = mlflow.pyfunc.load_model(str(self.model_dir / "model"))
        schema = self.model.metadata.get_input_schema()
        if schema is not None and schema.has_input_names():
            self.input_names = list(schema.input_names())
        self.loaded = True
        log.info("loaded %s version %s (variant %s)", self.model_name, self.model_version, self.variant)

    def _ensure_loaded(self) -> None:
        if not self.loaded:
            self.load()

    # -- inference ---------------------------------------------------------------------
    def predict(
        self, X: Any, features_names: list[str] | None = None, meta: dict[str, Any] | None = None
    ) -> Any:
        import numpy as np
        import pandas as pd

        self._ensure_loaded()
        try:
            names = list(features_names) if features_names else self.input_names
            if isinstance(X, pd.DataFrame):
                frame = X
            else:
                arr = np.asarray(X)
                if arr.ndim == 1:
                    arr = arr.reshape(1, -1)
                if names and len(names) == arr.shape[1]:
                    frame = pd.DataFrame(arr, columns=names)
                else:
                    frame = pd.DataFrame(arr)
            if self.input_names:
                # The signature wants doubles; seldon hands over whatever JSON numbers it got.
                frame = frame.astype({c: "float64" for c in frame.columns if c in self.input_names})
            result = self.model.predict(frame)
        except Exception as exc:
            if self.monitor is not None:  # a payload the model refuses is still traffic we report
                self.monitor.mismatch()
            if isinstance(exc, TypeError):
                # seldon-core takes a TypeError for an older predict() signature and calls again
                # without `meta`: the request would be predicted, and counted, twice.
                raise ValueError(f"the model refused the input: {exc}") from exc
            raise
        with self._lock:
            self._pending_rows += len(frame)
        out = np.asarray(result)
        self._observe(frame, out)
        self._caller.method = "predict"
        return out

    def _observe(self, frame: Any, out: Any) -> None:
        """Count the columns the model predicted from (named by the request, or by position from
        the model's signature, as the prediction was) and its outputs."""
        if self.monitor is None:
            return
        try:
            inputs = {str(c): frame[c].tolist() for c in frame.columns}
            self.monitor.observe(inputs, out.ravel().tolist())
        except Exception:  # monitoring must never fail a prediction
            log.exception("could not count a request for monitoring")
            self.monitor.mismatch()

    # -- reporting ---------------------------------------------------------------------
    def tags(self) -> dict[str, str]:
        return {"model": self.model_name, "version": self.model_version, "variant": self.variant}

    def metrics(self) -> list[dict[str, Any]]:
        """Called by seldon-core after each request; COUNTER values are increments."""
        with self._lock:
            rows, self._pending_rows = self._pending_rows, 0
        return [
            {
                "type": "COUNTER",
                "key": "dockyard_predictions_total",
                "value": rows,
                "tags": {"model": self.model_name, "version": self.model_version, "variant": self.variant},
            },
            *self._monitor_metrics(),
        ]

    def _monitor_metrics(self) -> list[dict[str, Any]]:
        """The monitoring counts since the last report, as seldon COUNTER increments; all series
        at 0 the first time the calling seldon method reports (see the module's docstring)."""
        method, self._caller.method = getattr(self._caller, "method", None), None
        if self.monitor is None or method is None:  # another seldon method: it would label them anew
            return []
        counts = self._counts.take()
        with self._lock:
            first = method not in self._reported_zeros
            self._reported_zeros.add(method)
        if first:
            for series in self.monitor.series():
                counts.setdefault(series, 0)
        return [{"type": "COUNTER", "key": metric.name, "value": value, "tags": dict(zip(metric.labels, labels, strict=True))}
                for (metric, labels), value in counts.items()]

    def health_status(self) -> dict[str, Any]:
        """Raises (HTTP 500 on /health/status) until the model is loaded."""
        if not self.loaded or self.model is None:
            raise RuntimeError("model not loaded")
        self._caller.method = "health"
        return {"status": "ok", **self.tags()}

    def init_metadata(self) -> dict[str, Any]:
        return {
            "name": self.model_name,
            "versions": [self.model_version],
            "platform": "mlflow",
            "custom": {"variant": self.variant, "model_dir": str(self.model_dir)},
        }
