"""An MLflow model-from-code for the analysis tests: a constant iris answer, slow or failing
on demand.

Logged with ``mlflow.pyfunc.log_model(python_model=<this file>, model_config={...})``: MLflow
stores this file with the model and MLServer loads it from there (nothing is imported from the
test suite). ``model_config``: ``delay_seconds``, added to every predict. A request whose
``petal_width`` holds a negative value makes predict raise (MLServer answers 500).
Requests carry ``"parameters": {"content_type": "pd"}`` so MLServer hands over a DataFrame.
"""

from __future__ import annotations

import time
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class LatencyIris(PythonModel):
    def load_context(self, context: Any) -> None:
        self.delay = float((context.model_config or {}).get("delay_seconds", 0.0))

    # Unannotated on purpose: MLflow reads predict's type hints as a signature and warns on these.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        if (model_input["petal_width"] < 0).any():
            raise ValueError("negative petal_width")
        if self.delay:
            time.sleep(self.delay)
        return ["setosa"] * len(model_input)


mlflow.models.set_model(LatencyIris())
