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


@pytest.mark.parametrize(
    ("path", "value", "loc"),
    [
        pytest.param("datasetRef", None, ("datasetRef",), id="missing-dataset-ref"),
        pytest.param("datasetRef.name", "a;b", ("datasetRef", "name"), id="dataset-name-semicolon"),
        pytest.param("datasetRef.name", "Iris", ("datasetRef", "name"), id="dataset-name-uppercase"),
        pytest.param("datasetRef.version", "abc", ("datasetRef", "version"), id="dataset-version-not-sha"),
        pytest.param(
            "datasetRef.version", "sha256:" + "A" * 64, ("datasetRef", "version"), id="dataset-version-upper"
        ),
        pytest.param("modelName", None, ("modelName",), id="missing-model-name"),
        pytest.param("modelName", "iris classifier", ("modelName",), id="model-name-space"),
        pytest.param("modelName", "iris\n", ("modelName",), id="model-name-newline"),
        pytest.param("modelName", "$(id)", ("modelName",), id="model-name-dollar"),
        pytest.param("modelName", "'iris'", ("modelName",), id="model-name-quotes"),
        pytest.param("modelName", "a/b", ("modelName",), id="model-name-slash"),
        pytest.param("modelName", "modèle", ("modelName",), id="model-name-unicode"),
        pytest.param("modelName", "m" * 201, ("modelName",), id="model-name-too-long"),
        pytest.param("modelName", ".hidden", ("modelName",), id="model-name-leading-dot"),
        pytest.param("trainer", {}, ("trainer",), id="trainer-neither"),
        pytest.param("trainer", {**GOOD["trainer"], **CUSTOM}, ("trainer",), id="trainer-both"),
        pytest.param("trainer", {"image": "x"}, ("trainer",), id="trainer-image-only"),
        pytest.param(
            "trainer.estimator.class",
            "RandomForestClassifier",
            ("trainer", "estimator", "class"),
            id="class-without-module",
        ),
        pytest.param(
            "trainer.estimator.class", "os.system('id')", ("trainer", "estimator", "class"), id="class-call"
        ),
        pytest.param(
            "trainer.estimator.class",
            "sklearn..Ridge",
            ("trainer", "estimator", "class"),
            id="class-empty-part",
        ),
        pytest.param(
            "trainer.estimator.class", "1sk.Ridge", ("trainer", "estimator", "class"), id="class-digit-start"
        ),
        pytest.param(
            "trainer.estimator.class", "sk.Ri dge", ("trainer", "estimator", "class"), id="class-space"
        ),
        pytest.param(
            "trainer.estimator.class", "sk.Ridge;x", ("trainer", "estimator", "class"), id="class-semicolon"
        ),
        pytest.param(
            "trainer.estimator.class", "sk.Ridge\n", ("trainer", "estimator", "class"), id="class-newline"
        ),
        pytest.param("trainer.estimator.class", None, ("trainer", "estimator", "class"), id="class-missing"),
        pytest.param(
            "trainer.estimator.hyperparameters",
            {"n-estimators": 5},
            ("trainer", "estimator"),
            id="hyperparameter-name-dash",
        ),
        pytest.param(
            "trainer.estimator.hyperparameters",
            {"a;b": 5},
            ("trainer", "estimator"),
            id="hyperparameter-name-semicolon",
        ),
        pytest.param(
            "trainer.estimator.hyperparameters",
            {"grid": [1, 2]},
            ("trainer", "estimator", "hyperparameters", "grid"),
            id="hyperparameter-list",
        ),
        pytest.param(
            "trainer.estimator.hyperparameters",
            {"cfg": {"a": 1}},
            ("trainer", "estimator", "hyperparameters", "cfg"),
            id="hyperparameter-object",
        ),
        pytest.param("trainer.estimator.task", "clustering", ("trainer", "estimator", "task"), id="task"),
        pytest.param(
            "trainer.estimator.testFraction",
            0,
            ("trainer", "estimator", "testFraction"),
            id="test-fraction-0",
        ),
        pytest.param(
            "trainer.estimator.testFraction",
            1,
            ("trainer", "estimator", "testFraction"),
            id="test-fraction-1",
        ),
        pytest.param(
            "trainer.estimator.randomSeed", -1, ("trainer", "estimator", "randomSeed"), id="seed-negative"
        ),
        pytest.param(
            "trainer", {"custom": {"image": ""}}, ("trainer", "custom", "image"), id="custom-image-empty"
        ),
        pytest.param("trainer", {"custom": {}}, ("trainer", "custom", "image"), id="custom-image-missing"),
        pytest.param(
            "trainer",
            {"custom": {"image": "i", "command": "python train.py"}},
            ("trainer", "custom", "command"),
            id="custom-command-string",
        ),
        pytest.param(
            "trainer",
            {"custom": {"image": "i", "env": [{"name": "1X"}]}},
            ("trainer", "custom", "env", 0, "name"),
            id="env-name-digit",
        ),
        pytest.param(
            "trainer",
            {"custom": {"image": "i", "env": [{"name": "A B"}]}},
            ("trainer", "custom", "env", 0, "name"),
            id="env-name-space",
        ),
        pytest.param(
            "trainer",
            {"custom": {"image": "i", "env": [{"name": "A", "valueFrom": {}}]}},
            ("trainer", "custom", "env", 0, "valueFrom"),
            id="env-value-from",
        ),
        pytest.param("resources.gpus", -1, ("resources", "gpus"), id="gpus-negative"),
        pytest.param("resources.requests.cpu", "1 core", ("resources", "requests", "cpu"), id="quantity"),
        pytest.param("backoffLimit", -1, ("backoffLimit",), id="backoff-negative"),
        pytest.param("backoffLimit", 11, ("backoffLimit",), id="backoff-too-big"),
        pytest.param("activeDeadlineSeconds", 0, ("activeDeadlineSeconds",), id="deadline-zero"),
        pytest.param("experiment", "", ("experiment",), id="experiment-empty"),
        pytest.param("experiment", "a\nb", ("experiment",), id="experiment-newline"),
        pytest.param("experiment", "a\x00b", ("experiment",), id="experiment-nul"),
        pytest.param("qualityGate.metric", "acc uracy", ("qualityGate", "metric"), id="gate-metric-space"),
        pytest.param("qualityGate.metric", None, ("qualityGate", "metric"), id="gate-metric-missing"),
        pytest.param(
            "qualityGate.threshold", None, ("qualityGate", "threshold"), id="gate-threshold-missing"
        ),
        pytest.param("qualityGate.threshold", "high", ("qualityGate", "threshold"), id="gate-threshold-type"),
        pytest.param("qualityGate.direction", "up", ("qualityGate", "direction"), id="gate-direction"),
        pytest.param("alias", "latest", ("alias",), id="alias-latest"),
        pytest.param("alias", "LATEST", ("alias",), id="alias-latest-uppercase"),
        pytest.param("alias", "v1", ("alias",), id="alias-version-like"),
        pytest.param("alias", "V12", ("alias",), id="alias-version-like-uppercase"),
        pytest.param("alias", "1st", ("alias",), id="alias-digit-start"),
        pytest.param("alias", "a b", ("alias",), id="alias-space"),
        pytest.param("alias", "a@b", ("alias",), id="alias-at"),
        pytest.param("alias", "", ("alias",), id="alias-empty"),
        pytest.param(
            "retrain", {"onDatasetChange": "maybe"}, ("retrain", "onDatasetChange"), id="retrain-bool"
        ),
        pytest.param(
            "retrain", {"onDataChange": True}, ("retrain", "onDataChange"), id="retrain-unknown-field"
        ),
    ],
)
def test_rejects(path: str, value: Any, loc: tuple[Any, ...]) -> None:
    locs = error_locs(with_(path, value))
    assert any(got[: len(loc)] == loc for got in locs), locs


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
