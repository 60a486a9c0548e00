"""TrainingRunSpec / TrainingRunStatus: good specs parse, each bad spec names the offending field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from dockyard.api import TrainingRunSpec, TrainingRunStatus
from dockyard.api.trainingrun import QualityGate
from tests.unit import specpath
from tests.unit.specpath import set_path

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "02-trainingrun.yaml"

GOOD: dict[str, Any] = {
    "datasetRef": {"name": "iris"},
    "modelName": "iris-classifier",
    "trainer": {
        "estimator": {
            "class": "sklearn.ensemble.RandomForestClassifier",
            "hyperparameters": {"n_estimators": 50, "max_depth": 4},
        }
    },
    "resources": {"requests": {"cpu": "250m"}, "limits": {"memory": "1Gi"}},
    "qualityGate": {"metric": "accuracy", "threshold": 0.8},
    "alias": "challenger",
}
CUSTOM = {
    "custom": {
        "image": "ghcr.io/me/train:1",
        "command": ["python", "train.py"],
        "args": ["--epochs", "3"],
        "env": [{"name": "EPOCHS", "value": "3"}, {"name": "_DEBUG"}],
    }
}


def with_(path: str, value: Any) -> dict[str, Any]:
    """GOOD with the dotted `path` set to value (None deletes it)."""
    return set_path(GOOD, path, value)


def error_locs(data: Any) -> list[tuple[Any, ...]]:
    return specpath.error_locs(TrainingRunSpec, data)


def test_example_parses() -> None:
    spec = TrainingRunSpec.model_validate(yaml.safe_load(EXAMPLE.read_text())["spec"])
    assert spec.trainer.estimator is not None
    assert spec.trainer.estimator.class_path == "sklearn.ensemble.RandomForestClassifier"
    assert spec.retrain is not None and spec.retrain.on_dataset_change is True


def test_defaults() -> None:
    spec = TrainingRunSpec.model_validate(with_("resources", None))
    assert spec.backoff_limit == 0
    assert spec.active_deadline_seconds is None and spec.experiment is None and spec.retrain is None
    assert spec.resources is None
    est = spec.trainer.estimator
    assert est is not None and (est.task, est.test_fraction, est.random_seed) == ("auto", 0.2, 42)
    assert spec.quality_gate is not None and spec.quality_gate.direction == "maximize"


def test_wire_form_uses_class_alias() -> None:
    wire = TrainingRunSpec.model_validate(GOOD).to_api()
    assert wire["trainer"]["estimator"]["class"] == "sklearn.ensemble.RandomForestClassifier"
    assert "classPath" not in wire["trainer"]["estimator"]
    assert TrainingRunSpec.model_validate(wire).to_api() == wire


@pytest.mark.parametrize(
    ("path", "value"),
    [
        pytest.param("trainer", CUSTOM, id="custom-trainer"),
        pytest.param("trainer", {"custom": {"image": "img"}}, id="custom-image-only"),
        pytest.param("trainer.image", "ghcr.io/x/runtime:2", id="runtime-image-override"),
        pytest.param(
            "trainer.estimator.hyperparameters",
            {"C": 0.5, "fit_intercept": True, "solver": "lbfgs", "tol": None, "_private": 1},
            id="scalar-hyperparameters",
        ),
        pytest.param("trainer.estimator.hyperparameters", None, id="no-hyperparameters"),
        pytest.param("trainer.estimator.class", "xgboost.XGBClassifier", id="two-part-import-path"),
        pytest.param("trainer.estimator.class", "my_pkg._models.Net2", id="underscores-and-digits"),
        pytest.param("trainer.estimator.task", "regression", id="task"),
        pytest.param("datasetRef.version", "sha256:" + "0123456789abcdef" * 4, id="pinned-version"),
        pytest.param("modelName", "Iris_Classifier.v2-final", id="model-name-mixed"),
        pytest.param("resources", {"gpus": 2, "requests": {"cpu": "4", "memory": "16Gi"}}, id="gpus"),
        pytest.param("backoffLimit", 10, id="backoff-max"),
        pytest.param("activeDeadlineSeconds", 1, id="deadline-min"),
        pytest.param("experiment", "team a/iris (v2)", id="experiment-free-text"),
        pytest.param(
            "qualityGate", {"metric": "rmse", "threshold": 0.3, "direction": "minimize"}, id="gate-minimize"
        ),
        pytest.param("qualityGate", None, id="no-gate"),
        pytest.param("alias", None, id="no-alias"),
        pytest.param("alias", "candidate_2-b", id="alias-chars"),
        pytest.param("alias", "version", id="alias-starting-with-v"),
        pytest.param("retrain", {"onDatasetChange": False}, id="retrain"),
    ],
)
def test_accepts(path: str, value: Any) -> None:
    TrainingRunSpec.model_validate(with_(path, value))


def test_unknown_fields_are_refused() -> None:
    """The API server prunes fields its schema does not know, so no corpus file can carry one;
    the model itself refuses them rather than ignore a misspelt field."""
    assert error_locs(with_("retrain", {"onDataChange": True})) == [("retrain", "onDataChange")]
    # No Secret references: env values are literal (valueFrom would be pruned, not obeyed).
    custom = {"custom": {"image": "i", "env": [{"name": "A", "valueFrom": {}}]}}
    assert error_locs(with_("trainer", custom)) == [("trainer", "custom", "env", 0, "valueFrom")]


def test_error_messages_name_the_problem() -> None:
    with pytest.raises(pydantic.ValidationError, match="exactly one of trainer.estimator or trainer.custom"):
        TrainingRunSpec.model_validate(with_("trainer", {}))
    with pytest.raises(pydantic.ValidationError, match="reserved by MLflow"):
        TrainingRunSpec.model_validate(with_("alias", "latest"))
    with pytest.raises(pydantic.ValidationError, match="must be a Python identifier"):
        TrainingRunSpec.model_validate(with_("trainer.estimator.hyperparameters", {"n-estimators": 5}))


@pytest.mark.parametrize(
    ("direction", "threshold", "value", "passes"),
    [
        pytest.param("maximize", 0.8, 0.81, True, id="max-above"),
        pytest.param("maximize", 0.8, 0.8, True, id="max-equal"),
        pytest.param("maximize", 0.8, 0.79, False, id="max-below"),
        pytest.param("minimize", 0.3, 0.29, True, id="min-below"),
        pytest.param("minimize", 0.3, 0.3, True, id="min-equal"),
        pytest.param("minimize", 0.3, 0.31, False, id="min-above"),
        pytest.param("maximize", -1.0, -0.5, True, id="negative-threshold"),
    ],
)
def test_quality_gate_passes(direction: str, threshold: float, value: float, passes: bool) -> None:
    gate = QualityGate.model_validate({"metric": "m", "threshold": threshold, "direction": direction})
    assert gate.passes(value) is passes


def test_quality_gate_default_direction_is_maximize() -> None:
    gate = QualityGate.model_validate({"metric": "accuracy", "threshold": 0.9})
    assert gate.passes(0.95) and not gate.passes(0.5)


def test_status_parses() -> None:
    status = TrainingRunStatus.model_validate(
        {
            "phase": "Succeeded",
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Registered"}],
            "attempt": 1,
            "datasetVersion": "sha256:" + "0" * 64,
            "mlflowRunId": "abc123",
            "jobName": "iris-rf-1",
            "metrics": {"accuracy": 0.96, "f1": 1},
            "modelVersion": "3",
            "modelUri": "models:/iris-classifier/3",
            "history": [{"attempt": 1, "result": "Succeeded", "modelVersion": "3"}],
        }
    )
    assert status.metrics == {"accuracy": 0.96, "f1": 1.0}
    assert status.history is not None and status.history[0].model_version == "3"
    assert status.to_api()["mlflowRunId"] == "abc123"


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        pytest.param({"attempt": -1}, ("attempt",), id="attempt-negative"),
        pytest.param({"history": [{"attempt": 0}]}, ("history", 0, "attempt"), id="history-attempt-zero"),
        pytest.param({"metrics": {"accuracy": "high"}}, ("metrics", "accuracy"), id="metric-not-a-number"),
    ],
)
def test_status_rejects(data: dict[str, Any], loc: tuple[Any, ...]) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        TrainingRunStatus.model_validate(data)
    assert loc in [tuple(e["loc"]) for e in info.value.errors()]
