"""An MLflow model-from-code for the rollout tests: an iris rule that misbehaves on purpose.

Logged with ``mlflow.pyfunc.log_model(python_model=<this file>, model_config={...})``, so MLflow
stores this file with the model and MLServer loads it from there (nothing here is imported
from the test suite). ``model_config``:

- ``fail_rate``: share of predict calls that raise (MLServer answers 500);
- ``poison``: a petal_width value that makes predict raise when a request contains it, so a
  test decides when a promoted version starts failing, without touching the Pods.
"""

from __future__ import annotations

import random
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class MisbehavingIris(PythonModel):
    def load_context(self, context: Any) -> None:
        config = context.model_config or {}
        self.fail_rate = float(config.get("fail_rate", 0.0))
        self.poison = config.get("poison")

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> list[str]:
        if self.poison is not None and (model_input["petal_width"] == float(self.poison)).any():
            raise ValueError("poisoned input")
        if random.random() < self.fail_rate:
            raise RuntimeError("injected failure")
        return ["setosa" if p < 2.5 else "versicolor" if p < 4.9 else "virginica"
                for p in model_input["petal_length"]]


mlflow.models.set_model(MisbehavingIris())
