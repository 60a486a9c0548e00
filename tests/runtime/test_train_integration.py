"""`dockyard train` as a real subprocess against a real MLflow server (tests/plugins/mlflow_server.py)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from .helpers import create_run, run_dockyard, train_env, write_iris_csv

pytestmark = pytest.mark.integration


def run_train(mlflow_server: Any, tmp_path: Path, **kw: Any) -> tuple[int, dict[str, Any], str, str, str]:
    data = tmp_path / "iris.csv"
    version = write_iris_csv(data)
    exp_id, run_id = create_run(mlflow_server.uri, f"train-{uuid.uuid4().hex[:8]}")
    version = kw.pop("version", version)
    term = tmp_path / "termination-log"
    env = train_env(mlflow_server.uri, run_id, exp_id, data, version, termination_log=term, **kw)
    proc = run_dockyard("train", env=env, timeout=300)
    out = json.loads(term.read_text())
    assert len(term.read_bytes()) < 4096
    return proc.returncode, out, proc.stderr, run_id, exp_id


def test_train_logs_into_the_existing_run(mlflow_server: Any, tmp_path: Path) -> None:
    code, out, stderr, run_id, exp_id = run_train(
        mlflow_server, tmp_path, hyperparameters={"n_estimators": "20", "max_depth": 4, "random_state": 0}
    )
    assert code == 0, stderr
    assert out["ok"] is True
    assert set(out["metrics"]) == {"accuracy", "f1"}
    assert out["metrics"]["accuracy"] > 0.85
    assert out["modelUri"].startswith("models:/m-")

    client = mlflow_server.client()
    runs = client.search_runs([exp_id])
    assert [r.info.run_id for r in runs] == [run_id]  # no second run was created
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics == pytest.approx(out["metrics"])
    params = run.data.params
    assert params["n_estimators"] == "20" and params["max_depth"] == "4"
    assert params["estimator_class"] == "sklearn.ensemble.RandomForestClassifier"
    assert params["test_fraction"] == "0.2" and params["random_seed"] == "42"
    tags = run.data.tags
    assert tags["dockyard.model_uri"] == out["modelUri"]
    assert tags["dockyard.dataset.name"] == "iris"
    assert tags["dockyard.dataset.version"].startswith("sha256:")
    assert tags["dockyard.trainingrun"] == "default/iris-rf"
    assert tags["dockyard.trainingrun.uid"] == "00000000-0000-0000-0000-000000000001"
    assert tags["dockyard.attempt"] == "1"

    # The logged model loads and predicts, with a signature and an input example.
    import mlflow.pyfunc
    import pandas as pd

    mlflow.set_tracking_uri(mlflow_server.uri)
    model = mlflow.pyfunc.load_model(out["modelUri"])
    assert model.metadata.get_input_schema().input_names() == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    frame = pd.DataFrame([[5.1, 3.5, 1.4, 0.2]], columns=model.metadata.get_input_schema().input_names())
    assert list(model.predict(frame)) == ["setosa"]
    # Registering from the run's logged model works the way the operator does it.
    logged = client.search_logged_models(experiment_ids=[exp_id])
    assert [m.model_id for m in logged] == [out["modelUri"].removeprefix("models:/")]


def test_train_logs_the_reference_profile(mlflow_server: Any, tmp_path: Path) -> None:
    """The run carries the profile of what the version learned from: the training split's
    features in quantile bins (checked against numpy on the same split) and the held-out
    predictions' class shares."""
    import numpy as np
    import pandas as pd

    from dockyard.monitoring.reference import PROFILE_ARTIFACT, NumericProfile, ReferenceProfile
    from dockyard.runtime.train import feature_frame, split

    code, _, stderr, run_id, _ = run_train(mlflow_server, tmp_path, hyperparameters={"n_estimators": "10"})
    assert code == 0, stderr
    client = mlflow_server.client()
    assert client.get_run(run_id).data.tags["dockyard.reference_profile"] == PROFILE_ARTIFACT
    local = client.download_artifacts(run_id, PROFILE_ARTIFACT, str(tmp_path))
    profile = ReferenceProfile.model_validate_json(Path(local).read_text())

    frame = pd.read_csv(tmp_path / "iris.csv")
    x, _ = feature_frame(frame, "species")
    x_train, x_test, _, _ = split(x, frame["species"], "classification", 0.2, 42)
    assert profile.rows == len(x_train) == 120
    assert sorted(profile.features) == sorted(x.columns)
    for name, feature in profile.features.items():
        assert isinstance(feature, NumericProfile)
        values = x_train[name].to_numpy()
        cuts = sorted(set(np.quantile(values, np.linspace(0, 1, 11)[1:-1], method="lower")) - {values.max()})
        assert feature.cuts == pytest.approx(cuts), name
        counts = np.bincount(np.searchsorted(cuts, values, side="left"), minlength=len(cuts) + 1)
        assert feature.fractions == pytest.approx(list(counts / len(values))), name
        assert (feature.min, feature.max, feature.missing) == (values.min(), values.max(), 0)
    assert profile.prediction is not None and profile.prediction.kind == "categorical"
    assert set(profile.prediction.categories) <= {"setosa", "versicolor", "virginica"}
    assert sum(profile.prediction.categories.values()) == pytest.approx(1.0)
    assert len(x_test) == 30


def test_same_attempt_twice_is_harmless(mlflow_server: Any, tmp_path: Path) -> None:
    """A Job retry (same run id, same params) logs into the same run again."""
    data = tmp_path / "iris.csv"
    version = write_iris_csv(data)
    exp_id, run_id = create_run(mlflow_server.uri, f"retry-{uuid.uuid4().hex[:8]}")
    env = train_env(mlflow_server.uri, run_id, exp_id, data, version, hyperparameters={"n_estimators": 5})
    for _ in range(2):
        proc = run_dockyard("train", env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
    client = mlflow_server.client()
    assert len(client.search_runs([exp_id])) == 1
    assert client.get_run(run_id).info.status == "FINISHED"


def test_regression_metrics(mlflow_server: Any, tmp_path: Path) -> None:
    code, out, stderr, run_id, _ = run_train(
        mlflow_server,
        tmp_path,
        estimator="sklearn.linear_model.Ridge",
        hyperparameters={"alpha": "0.5"},
        extra={"DOCKYARD_TARGET": "petal_width", "DOCKYARD_TASK": "auto"},
    )
    assert code == 0, stderr
    assert set(out["metrics"]) == {"rmse", "r2"}
    assert out["metrics"]["r2"] > 0.8
    run = mlflow_server.client().get_run(run_id)
    assert run.data.params["alpha"] == "0.5"
    assert run.data.params["task"] == "regression"
    assert run.data.tags.get("dockyard.dropped_features") == "species"


def assert_failed_run(mlflow_server: Any, run_id: str, reason: str) -> None:
    run = mlflow_server.client().get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["dockyard.failure.reason"] == reason


def test_dataset_version_mismatch(mlflow_server: Any, tmp_path: Path) -> None:
    code, out, stderr, run_id, _ = run_train(mlflow_server, tmp_path, version="sha256:" + "0" * 64)
    assert code == 2
    assert out == {"ok": False, "reason": "DatasetVersionMismatch", "message": out["message"]}
    assert "sha256:" + "0" * 64 in out["message"]
    assert "DatasetVersionMismatch" in stderr
    assert_failed_run(mlflow_server, run_id, "DatasetVersionMismatch")


@pytest.mark.parametrize("estimator", ["os.system", "collections.OrderedDict", "nosuch.module.Model"])
def test_invalid_estimator(mlflow_server: Any, tmp_path: Path, estimator: str) -> None:
    code, out, _, run_id, _ = run_train(mlflow_server, tmp_path, estimator=estimator)
    assert code == 2
    assert out["ok"] is False and out["reason"] == "InvalidEstimator"
    assert_failed_run(mlflow_server, run_id, "InvalidEstimator")


def test_missing_target(mlflow_server: Any, tmp_path: Path) -> None:
    code, out, _, run_id, _ = run_train(mlflow_server, tmp_path, extra={"DOCKYARD_TARGET": "label"})
    assert code == 2 and out["reason"] == "MissingTarget"
    assert_failed_run(mlflow_server, run_id, "MissingTarget")


def test_invalid_hyperparameter_value(mlflow_server: Any, tmp_path: Path) -> None:
    code, out, _, run_id, _ = run_train(mlflow_server, tmp_path, hyperparameters={"n_estimators": -3})
    assert code == 2 and out["reason"] == "InvalidHyperparameters"
    assert_failed_run(mlflow_server, run_id, "InvalidHyperparameters")


def test_unknown_run_fails_cleanly(mlflow_server: Any, tmp_path: Path) -> None:
    data = tmp_path / "iris.csv"
    version = write_iris_csv(data)
    term = tmp_path / "t"
    env = train_env(mlflow_server.uri, "0" * 32, "0", data, version, termination_log=term)
    proc = run_dockyard("train", env=env, timeout=300)
    assert proc.returncode == 1
    assert json.loads(term.read_text())["reason"] == "MlflowError"
