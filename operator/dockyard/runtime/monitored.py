"""MLServer runtime that serves an MLflow model and counts its live traffic into the buckets
of the version's reference profile (issue 13), as Prometheus counters on MLServer's metrics
port. Counters only grow and carry model, version and variant, so the operator sums them over
every replica for any window; no per-Pod window has to be merged. The counting itself, shared
with the seldon runtime, is :mod:`dockyard.runtime.monitor_counts`.

fetch-model selects it (model-settings.json) when the version has a reference profile. The
request path does one dictionary lookup and one counter increment per feature value; a
payload that does not fit the profile is counted as such and served (or refused) exactly as
the plain MLflow runtime would.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri
from mlserver_mlflow import MLflowRuntime

from .monitor_counts import PROFILE_FILE, Monitor, flatten

log = logging.getLogger(__name__)

IMPLEMENTATION = "dockyard.runtime.monitored.MonitoredMLflowRuntime"


def request_columns(payload: InferenceRequest) -> dict[str, list[Any]]:
    return {i.name: flatten(i.data.root if hasattr(i.data, "root") else i.data) for i in payload.inputs}


class MonitoredMLflowRuntime(MLflowRuntime):
    async def load(self) -> bool:
        loaded = await super().load()
        folder = Path(await get_model_uri(self._settings)).parent
        self._monitor = Monitor.from_dir(folder)  # every series exists at 0 from here on
        if self._monitor is None:
            log.warning("no %s next to the model in %s: live traffic is not monitored", PROFILE_FILE, folder)
        return loaded

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        monitor: Monitor | None = getattr(self, "_monitor", None)
        try:
            response = await super().predict(payload)
        except Exception:
            if monitor is not None:  # a payload the model refuses is still traffic we report
                monitor.mismatch()
            raise
        if monitor is not None:
            try:
                outputs = flatten(response.outputs[0].data.root) if response.outputs else None
                monitor.observe(request_columns(payload), outputs)
            except Exception:  # monitoring must never fail a prediction
                log.exception("could not count a request for monitoring")
                monitor.mismatch()
        return response
