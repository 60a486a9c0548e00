"""Built-in trainer pieces that need no MLflow: estimator import, hyperparameter coercion, config."""

from __future__ import annotations

import inspect

import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from dockyard.runtime import train
from dockyard.runtime.common import RuntimeFailure
from dockyard.runtime.train import coerce_hyperparameters, coerce_value, config_from_env, import_estimator


def test_import_estimator_ok() -> None:
    assert import_estimator("sklearn.ensemble.RandomForestClassifier") is RandomForestClassifier


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("os.system", "not an import path"),
        ("os.SEEK_SET", "not a class"),
        ("collections.OrderedDict", "no fit/predict"),
        ("sklearn.ensemble.NoSuchThing", "has no attribute"),
        ("nosuchpackage_xyz.Model", "cannot import module"),
        ("RandomForest", "not an import path"),
        ("sklearn.ensemble.RandomForestClassifier; rm -rf /", "not an import path"),
        ("", "not an import path"),
    ],
)
def test_import_estimator_refuses(path: str, fragment: str) -> None:
    with pytest.raises(RuntimeFailure) as exc:
        import_estimator(path)
    assert exc.value.reason == "InvalidEstimator"
    assert exc.value.exit_code == 2
    assert fragment in exc.value.message


@pytest.mark.parametrize(
    ("value", "default", "expected"),
    [
        ("50", 100, 50),
        (50.0, 100, 50),
        ("2.5", 2, 2.5),  # int parameters that also take fractions (min_samples_split)
        ("sqrt", 1, "sqrt"),
        ("0.1", 1.0, 0.1),
        (1, 1.0, 1.0),
        ("scale", 1.0, "scale"),
        ("true", False, True),
        ("No", True, False),
        (0, True, False),
        ("4", None, 4),
        ("0.5", None, 0.5),
        ("None", None, None),
        ("null", 3, None),
        (None, 3, None),
        ("gini", "gini", "gini"),
        ("0.5", "sqrt", 0.5),
        ("balanced", None, "balanced"),
        ("[1, 2]", inspect.Parameter.empty, [1, 2]),
    ],
)
def test_coerce_value(value: object, default: object, expected: object) -> None:
    got = coerce_value("p", value, default)
    assert got == expected
    assert type(got) is type(expected)


def test_coerce_bad_bool() -> None:
    with pytest.raises(RuntimeFailure) as exc:
        coerce_value("bootstrap", "maybe", True)
    assert exc.value.reason == "InvalidHyperparameters"


def test_coerce_for_real_estimators() -> None:
    hp = coerce_hyperparameters(
        RandomForestClassifier, {"n_estimators": "50", "max_depth": "4", "bootstrap": "false"}
    )
    assert hp == {"n_estimators": 50, "max_depth": 4, "bootstrap": False}
    RandomForestClassifier(**hp)
    assert coerce_hyperparameters(SVC, {"C": "2", "gamma": "scale"}) == {"C": 2.0, "gamma": "scale"}
    assert coerce_hyperparameters(LogisticRegression, {"max_iter": 200.0}) == {"max_iter": 200}


def test_unknown_hyperparameter() -> None:
    with pytest.raises(RuntimeFailure) as exc:
        coerce_hyperparameters(RandomForestClassifier, {"n_trees": 5})
    assert exc.value.reason == "InvalidHyperparameters"
    assert "n_trees" in exc.value.message


def base_env(**over: str) -> dict[str, str]:
    env = {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:1",
        "MLFLOW_RUN_ID": "abc",
        "DOCKYARD_DATASET_URI": "file:///data/iris.csv",
        "DOCKYARD_TARGET": "species",
        "DOCKYARD_HYPERPARAMETERS": '{"n_estimators": 5}',
    }
    env.update(over)
    return env


def test_config_defaults() -> None:
    cfg = config_from_env(base_env())
    assert cfg.dataset_format == "csv"
    assert cfg.estimator == "sklearn.ensemble.RandomForestClassifier"
    assert cfg.hyperparameters == {"n_estimators": 5}
    assert (cfg.task, cfg.test_fraction, cfg.random_seed) == ("auto", 0.2, 42)


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"MLFLOW_RUN_ID": ""}, "InvalidConfig"),
        ({"DOCKYARD_TARGET": ""}, "MissingTarget"),
        ({"DOCKYARD_HYPERPARAMETERS": "[1]"}, "InvalidHyperparameters"),
        ({"DOCKYARD_HYPERPARAMETERS": "{bad"}, "InvalidHyperparameters"),
        ({"DOCKYARD_TEST_FRACTION": "1.5"}, "InvalidConfig"),
        ({"DOCKYARD_RANDOM_SEED": "x"}, "InvalidConfig"),
        ({"DOCKYARD_TASK": "clustering"}, "InvalidConfig"),
        ({"DOCKYARD_DATASET_FORMAT": "xlsx"}, "InvalidConfig"),
    ],
)
def test_config_errors(over: dict[str, str], reason: str) -> None:
    with pytest.raises(RuntimeFailure) as exc:
        config_from_env(base_env(**over))
    assert exc.value.reason == reason
    assert exc.value.exit_code == 2


def test_infer_task() -> None:
    y_cls = pd.Series(["a", "b"])
    y_reg = pd.Series([0.1, 2.7, 3.3])
    assert train.infer_task(RandomForestClassifier(), y_reg, "auto") == "classification"
    assert train.infer_task(RandomForestRegressor(), y_cls, "auto") == "regression"
    assert train.infer_task(object(), y_reg, "auto") == "regression"
    assert train.infer_task(object(), y_cls, "auto") == "classification"
    assert train.infer_task(RandomForestClassifier(), y_cls, "regression") == "regression"


def test_feature_frame_keeps_numeric_as_float() -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": [True, False], "s": ["x", "y"], "t": [0, 1]})
    x, dropped = train.feature_frame(frame, "t")
    assert list(x.columns) == ["a", "b"]
    assert all(str(d) == "float64" for d in x.dtypes)
    assert dropped == ["s"]


def test_metrics() -> None:
    assert train.compute_metrics("classification", ["a", "b", "a"], ["a", "b", "b"])[
        "accuracy"
    ] == pytest.approx(2 / 3)
    reg = train.compute_metrics("regression", [1.0, 2.0], [1.0, 4.0])
    assert reg["rmse"] == pytest.approx(2**0.5)
    assert set(reg) == {"rmse", "r2"}


def test_lineage_tags() -> None:
    cfg = config_from_env(
        base_env(
            DOCKYARD_DATASET_NAME="iris",
            DOCKYARD_TRAININGRUN_NAMESPACE="ns",
            DOCKYARD_TRAININGRUN_NAME="tr",
            DOCKYARD_TRAININGRUN_UID="u-1",
            DOCKYARD_ATTEMPT="2",
        )
    )
    tags = train.lineage_tags(cfg, "sha256:ff")
    assert tags["dockyard.dataset.name"] == "iris"
    assert tags["dockyard.dataset.version"] == "sha256:ff"
    assert tags["dockyard.trainingrun"] == "ns/tr"
    assert tags["dockyard.trainingrun.uid"] == "u-1"
    assert tags["dockyard.attempt"] == "2"
