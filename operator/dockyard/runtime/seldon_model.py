"""The Dockyard model class for the opt-in seldon-core runtime (`dockyard serve --runtime seldon`).

seldon-core >= 1.18 is Business Source License 1.1: this module imports nothing from it, and
the default MLServer runtime never loads it.

`seldon-core-microservice dockyard.runtime.seldon_model.DockyardModel --parameters
'[{"name": "model_dir", "value": "/models", "type": "STRING"}, ...]'` instantiates it; it loads
the MLflow model that `dockyard fetch-model` wrote to MODEL_DIR/model (never contacting MLflow)
and reports the model name, version and variant in every response's `meta.tags`, in
`/health/status` and in `/metadata`. A custom counter `dockyard_predictions_total` (rows
predicted) is exported on the metrics port.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


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
        with self._lock:
            self._pending_rows += len(frame)
        out = np.asarray(result)
        return out

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
            }
        ]

    def health_status(self) -> dict[str, Any]:
        """Raises (HTTP 500 on /health/status) until the model is loaded."""
        if not self.loaded or self.model is None:
            raise RuntimeError("model not loaded")
        return {"status": "ok", **self.tags()}

    def init_metadata(self) -> dict[str, Any]:
        return {
            "name": self.model_name,
            "versions": [self.model_version],
            "platform": "mlflow",
            "custom": {"variant": self.variant, "model_dir": str(self.model_dir)},
        }
