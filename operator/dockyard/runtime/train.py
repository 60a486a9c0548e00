"""`dockyard train`: the built-in trainer for scikit-learn-style estimators.

It logs INTO the MLflow run the operator created (MLFLOW_RUN_ID); it never creates a run.
See docs/training-contract.md for the environment it receives.

Termination message (< 4096 bytes):
  success: {"ok": true, "metrics": {...}, "modelUri": "models:/m-..."}
  failure: {"ok": false, "reason": "...", "message": "..."}
Exit codes: 0 ok; 2 bad input (DatasetVersionMismatch, InvalidEstimator, InvalidHyperparameters,
MissingTarget, NoFeatures, InvalidConfig, SourceUnreachable, UnreadableData); 1 anything else.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import os
import re
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    RuntimeFailure,
    dumps,
    env_str,
    fit_message,
    quiet_mlflow,
    shorten,
    termination_path,
    write_termination_message,
)
from .data import FORMATS, content_version, parse_frame, read_source_bytes

if TYPE_CHECKING:
    import pandas as pd

IMPORT_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\.[A-Z][A-Za-z0-9_]*$")
TASKS = ("auto", "classification", "regression")
CLASSIFICATION_METRICS = ("accuracy", "f1")
REGRESSION_METRICS = ("rmse", "r2")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def bad_input(reason: str, message: str) -> RuntimeFailure:
    return RuntimeFailure(reason, message, EXIT_BAD_INPUT)


@dataclass
class TrainConfig:
    tracking_uri: str | None
    run_id: str
    experiment_id: str | None
    dataset_name: str | None
    dataset_uri: str
    dataset_format: str
    dataset_version: str | None
    target: str
    model_name: str | None
    estimator: str
    hyperparameters: dict[str, Any]
    task: str = "auto"
    test_fraction: float = 0.2
    random_seed: int = 42
    trainingrun_namespace: str | None = None
    trainingrun_name: str | None = None
    trainingrun_uid: str | None = None
    attempt: str | None = None
    termination_log: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- estimator


def import_estimator(path: str) -> type:
    """Import `module.Class`; refuse anything that is not a class with fit and predict."""
    if not IMPORT_PATH.fullmatch(path or ""):
        raise bad_input("InvalidEstimator", f"estimator {path!r} is not an import path like pkg.module.Class")
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or anything the module raises on import
        raise bad_input("InvalidEstimator", f"cannot import module {module_name!r}: {exc}") from exc
    obj = getattr(module, attr, None)
    if obj is None:
        raise bad_input("InvalidEstimator", f"module {module_name!r} has no attribute {attr!r}")
    if not inspect.isclass(obj):
        raise bad_input("InvalidEstimator", f"{path} is not a class")
    if not callable(getattr(obj, "fit", None)) or not callable(getattr(obj, "predict", None)):
        raise bad_input("InvalidEstimator", f"{path} has no fit/predict methods")
    return obj


def estimator_defaults(cls: type) -> tuple[dict[str, Any], bool]:
    """Constructor defaults (`inspect.Parameter.empty` when none) and whether **kwargs is accepted."""
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):
        return {}, True
    defaults: dict[str, Any] = {}
    var_kw = False
    for name, param in sig.parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            var_kw = True
        elif param.kind is not inspect.Parameter.VAR_POSITIONAL:
            defaults[name] = param.default
    return defaults, var_kw


def _literal(text: str) -> Any:
    """Best guess for a string whose default gives no type hint: JSON literal, else the string."""
    stripped = text.strip()
    if stripped in ("None", "none", "null"):
        return None
    low = stripped.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        value = json.loads(stripped)
    except (json.JSONDecodeError, ValueError):
        return text
    return value if isinstance(value, int | float | list | dict) else text


def coerce_value(name: str, value: Any, default: Any) -> Any:
    """Coerce one hyperparameter to the type its default suggests. None stays None."""
    if value is None:
        return None
    empty = default is inspect.Parameter.empty
    if isinstance(value, str):
        text = value.strip()
        if text in ("None", "none", "null"):
            return None
        if isinstance(default, bool):
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise bad_input("InvalidHyperparameters", f"hyperparameter {name}={value!r}: expected a boolean")
        if isinstance(default, int) and not isinstance(default, bool):
            try:
                return int(text)
            except ValueError:
                pass
            try:
                f = float(text)
            except ValueError:
                return value  # some int parameters also accept strings (e.g. max_features)
            return int(f) if f.is_integer() else f
        if isinstance(default, float):
            try:
                return float(text)
            except ValueError:
                return value  # e.g. "scale" for a float-or-string parameter
        if default is None or empty:
            return _literal(value)
        if isinstance(default, str):
            # A string default may still accept numbers (max_features="sqrt" accepts 0.5).
            lit = _literal(value)
            return lit if isinstance(lit, int | float) and not isinstance(lit, bool) else value
        return value
    if isinstance(value, bool):
        return value
    if isinstance(default, bool):
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        return value
    if isinstance(default, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    return value


def coerce_hyperparameters(cls: type, hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """Coerce every hyperparameter; refuse names the estimator does not accept."""
    defaults, var_kw = estimator_defaults(cls)
    out: dict[str, Any] = {}
    for name, value in hyperparameters.items():
        if name not in defaults and not var_kw:
            known = ", ".join(sorted(defaults)[:30])
            raise bad_input(
                "InvalidHyperparameters", f"{cls.__name__} has no hyperparameter {name!r} (known: {known})"
            )
        out[name] = coerce_value(name, value, defaults.get(name, inspect.Parameter.empty))
    return out


# --------------------------------------------------------------------------- config


def parse_hyperparameters(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad_input("InvalidHyperparameters", f"DOCKYARD_HYPERPARAMETERS is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise bad_input("InvalidHyperparameters", "DOCKYARD_HYPERPARAMETERS must be a JSON object")
    return value


def _float_env(environ: Mapping[str, str], name: str, default: float) -> float:
    text = env_str(environ, name)
    if text is None:
        return default
    try:
        return float(text)
    except ValueError as exc:
        raise bad_input("InvalidConfig", f"{name}={text!r} is not a number") from exc


def config_from_env(environ: Mapping[str, str], args: argparse.Namespace | None = None) -> TrainConfig:
    def pick(flag: str, name: str, default: str | None = None) -> str | None:
        value = getattr(args, flag, None) if args is not None else None
        return value if value not in (None, "") else env_str(environ, name, default)

    run_id = pick("run_id", "MLFLOW_RUN_ID")
    if not run_id:
        raise bad_input("InvalidConfig", "MLFLOW_RUN_ID is not set: the operator creates the run")
    uri = pick("dataset_uri", "DOCKYARD_DATASET_URI")
    if not uri:
        raise bad_input("InvalidConfig", "DOCKYARD_DATASET_URI is not set")
    fmt = pick("dataset_format", "DOCKYARD_DATASET_FORMAT", "csv") or "csv"
    if fmt not in FORMATS:
        raise bad_input(
            "InvalidConfig", f"DOCKYARD_DATASET_FORMAT={fmt!r}: expected one of {', '.join(FORMATS)}"
        )
    target = pick("target", "DOCKYARD_TARGET")
    if not target:
        raise bad_input("MissingTarget", "DOCKYARD_TARGET (the label column) is not set")
    task = pick("task", "DOCKYARD_TASK", "auto") or "auto"
    if task not in TASKS:
        raise bad_input(
            "InvalidConfig", f"DOCKYARD_TASK={task!r}: expected auto, classification or regression"
        )
    test_fraction = _float_env(environ, "DOCKYARD_TEST_FRACTION", 0.2)
    if not 0.0 < test_fraction < 1.0:
        raise bad_input("InvalidConfig", f"DOCKYARD_TEST_FRACTION={test_fraction} must be between 0 and 1")
    seed_f = _float_env(environ, "DOCKYARD_RANDOM_SEED", 42)
    if not seed_f.is_integer() or seed_f < 0:
        raise bad_input("InvalidConfig", f"DOCKYARD_RANDOM_SEED={seed_f} must be a non-negative integer")
    hp_text = pick("hyperparameters", "DOCKYARD_HYPERPARAMETERS")
    return TrainConfig(
        tracking_uri=pick("tracking_uri", "MLFLOW_TRACKING_URI"),
        run_id=run_id,
        experiment_id=env_str(environ, "MLFLOW_EXPERIMENT_ID"),
        dataset_name=env_str(environ, "DOCKYARD_DATASET_NAME"),
        dataset_uri=uri,
        dataset_format=fmt,
        dataset_version=pick("dataset_version", "DOCKYARD_DATASET_VERSION"),
        target=target,
        model_name=env_str(environ, "DOCKYARD_MODEL_NAME"),
        estimator=pick("estimator", "DOCKYARD_ESTIMATOR", "sklearn.ensemble.RandomForestClassifier") or "",
        hyperparameters=parse_hyperparameters(hp_text),
        task=task,
        test_fraction=test_fraction,
        random_seed=int(seed_f),
        trainingrun_namespace=env_str(environ, "DOCKYARD_TRAININGRUN_NAMESPACE"),
        trainingrun_name=env_str(environ, "DOCKYARD_TRAININGRUN_NAME"),
        trainingrun_uid=env_str(environ, "DOCKYARD_TRAININGRUN_UID"),
        attempt=env_str(environ, "DOCKYARD_ATTEMPT"),
        termination_log=pick("termination_log", "DOCKYARD_TERMINATION_LOG"),
    )


# --------------------------------------------------------------------------- training


def infer_task(estimator: Any, y: pd.Series, requested: str) -> str:
    if requested != "auto":
        return requested
    from pandas.api import types as pt
    from sklearn.base import is_classifier, is_regressor

    try:
        if is_classifier(estimator):
            return "classification"
        if is_regressor(estimator):
            return "regression"
    except Exception:  # noqa: S110 - not a scikit-learn estimator: infer from the target
        pass
    if pt.is_float_dtype(y.dtype) and not all(float(v).is_integer() for v in y):
        return "regression"
    if pt.is_numeric_dtype(y.dtype) and not pt.is_bool_dtype(y.dtype) and y.nunique() > 20:
        return "regression"
    return "classification"


def feature_frame(frame: pd.DataFrame, target: str) -> tuple[pd.DataFrame, list[str]]:
    """Numeric and boolean feature columns as float64 (a stable signature for serving);
    other columns are dropped and reported."""
    from pandas.api import types as pt

    features = frame.drop(columns=[target])
    keep: list[str] = []
    dropped: list[str] = []
    for name in features.columns:
        dtype = features[name].dtype
        if pt.is_numeric_dtype(dtype) or pt.is_bool_dtype(dtype):
            keep.append(name)
        else:
            dropped.append(str(name))
    x = features[keep].astype("float64")
    x.columns = [str(c) for c in x.columns]
    return x, dropped


def compute_metrics(task: str, y_true: Any, y_pred: Any) -> dict[str, float]:
    from sklearn import metrics

    if task == "classification":
        return {
            "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
            "f1": float(metrics.f1_score(y_true, y_pred, average="macro")),
        }
    return {
        "rmse": float(math.sqrt(metrics.mean_squared_error(y_true, y_pred))),
        "r2": float(metrics.r2_score(y_true, y_pred)),
    }


def split(
    x: pd.DataFrame, y: pd.Series, task: str, test_fraction: float, seed: int
) -> tuple[Any, Any, Any, Any]:
    from sklearn.model_selection import train_test_split

    if task == "classification":
        try:
            return tuple(train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y))
        except ValueError:
            pass  # a class with a single member, or too few test rows for every class
    return tuple(train_test_split(x, y, test_size=test_fraction, random_state=seed))


def lineage_tags(cfg: TrainConfig, version: str) -> dict[str, str]:
    tags = {"dockyard.dataset.version": version}
    if cfg.dataset_name:
        tags["dockyard.dataset.name"] = cfg.dataset_name
    if cfg.trainingrun_namespace and cfg.trainingrun_name:
        tags["dockyard.trainingrun"] = f"{cfg.trainingrun_namespace}/{cfg.trainingrun_name}"
    elif cfg.trainingrun_name:
        tags["dockyard.trainingrun"] = cfg.trainingrun_name
    if cfg.trainingrun_uid:
        tags["dockyard.trainingrun.uid"] = cfg.trainingrun_uid
    if cfg.attempt:
        tags["dockyard.attempt"] = cfg.attempt
    if cfg.model_name:
        tags["dockyard.model_name"] = cfg.model_name
    return tags


def skops_trusted_types(estimator: Any) -> list[str]:
    """Types skops will not load by default that this model uses. MLflow 3 saves sklearn
    models with skops and refuses to load unlisted types; this process just trained the
    object itself, so its types are trusted by construction (the list is recorded in the
    MLmodel file and used when serving loads it)."""
    try:
        import skops.io
    except ImportError:
        return []
    return sorted(skops.io.get_untrusted_types(data=skops.io.dumps(estimator)))


def pip_requirements(estimator_cls: type) -> list[str]:
    """Pinned requirements of the logged model. Given explicitly because MLflow's inference
    (a subprocess that re-imports the model) costs ~40% of a small training run."""
    from importlib import metadata

    # skops: MLflow 3 saves scikit-learn models in the skops format when it is installed.
    dists = ["mlflow", "scikit-learn", "numpy", "pandas", "scipy", "skops"]
    top = estimator_cls.__module__.split(".")[0]
    for dist in metadata.packages_distributions().get(top, []):
        if dist not in dists:
            dists.append(dist)
    out = []
    for dist in dists:
        try:
            out.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return out


def _param_value(value: Any) -> str:
    return shorten(json.dumps(value) if not isinstance(value, str) else value, 6000)


def train(cfg: TrainConfig, environ: Mapping[str, str]) -> dict[str, Any]:
    """Train inside the already-active MLflow run; returns the success termination payload."""
    import mlflow
    from mlflow.models import infer_signature

    from ..monitoring.reference import log_reference_profile

    try:
        data = read_source_bytes(cfg.dataset_uri, environ)
    except RuntimeFailure as exc:
        # Possibly transient (network): exit 1 so a Job retry may succeed; 2 means "fix the input".
        raise RuntimeFailure(exc.reason, exc.message, EXIT_FAILED) from exc
    version = content_version(data)
    mlflow.set_tag("dockyard.dataset.observed_version", version)
    if cfg.dataset_version and cfg.dataset_version != version:
        raise bad_input(
            "DatasetVersionMismatch",
            f"dataset content is {version} but the TrainingRun pinned {cfg.dataset_version}",
        )
    frame = parse_frame(data, cfg.dataset_format, cfg.dataset_uri)
    if cfg.target not in [str(c) for c in frame.columns]:
        raise bad_input("MissingTarget", f"target column {cfg.target!r} is not in the data")
    frame.columns = [str(c) for c in frame.columns]
    frame = frame[frame[cfg.target].notna()]
    if frame.empty:
        raise bad_input("MissingTarget", f"target column {cfg.target!r} has no values")

    cls = import_estimator(cfg.estimator)
    params = coerce_hyperparameters(cls, cfg.hyperparameters)
    defaults, _ = estimator_defaults(cls)
    if "random_state" in defaults and "random_state" not in params:
        params["random_state"] = cfg.random_seed
    try:
        estimator = cls(**params)
    except Exception as exc:
        raise bad_input("InvalidHyperparameters", f"{cfg.estimator}({params}) failed: {exc}") from exc

    x, dropped = feature_frame(frame, cfg.target)
    if x.shape[1] == 0:
        raise bad_input("NoFeatures", "no numeric or boolean feature columns besides the target")
    y = frame[cfg.target]
    task = infer_task(estimator, y, cfg.task)
    x_train, x_test, y_train, y_test = split(x, y, task, cfg.test_fraction, cfg.random_seed)

    logged = {name: _param_value(value) for name, value in params.items()}
    logged.update(
        {
            "estimator_class": cfg.estimator,
            "test_fraction": str(cfg.test_fraction),
            "random_seed": str(cfg.random_seed),
            "task": task,
        }
    )
    mlflow.log_params(logged)
    tags = lineage_tags(cfg, version)
    if dropped:
        tags["dockyard.dropped_features"] = shorten(",".join(dropped), 4000)
    mlflow.set_tags(tags)

    try:
        estimator.fit(x_train, y_train)
    except (TypeError, ValueError) as exc:
        from sklearn.utils._param_validation import InvalidParameterError

        if isinstance(exc, InvalidParameterError):
            raise bad_input("InvalidHyperparameters", str(exc)) from exc
        raise RuntimeFailure("TrainingFailed", f"fit failed: {type(exc).__name__}: {exc}") from exc
    predictions = estimator.predict(x_test)
    metrics = compute_metrics(task, y_test, predictions)
    mlflow.log_metrics(metrics)
    # What this version learned from, for drift monitoring (travels with the run's versions).
    log_reference_profile(x_train, predictions)

    signature = infer_signature(x_test, predictions)
    trusted = skops_trusted_types(estimator)
    if trusted:
        mlflow.set_tag("dockyard.skops_trusted_types", shorten(",".join(trusted), 4000))
    info = mlflow.sklearn.log_model(
        estimator,
        name="model",
        signature=signature,
        input_example=x_train.head(5),
        skops_trusted_types=trusted or None,
        pip_requirements=pip_requirements(type(estimator)),
    )
    mlflow.set_tag("dockyard.model_uri", info.model_uri)
    return {"ok": True, "metrics": metrics, "modelUri": info.model_uri}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="dockyard train",
        description="Built-in trainer; every option defaults to its environment variable (see docs/training-contract.md).",
    )
    p.add_argument("--tracking-uri", help="env MLFLOW_TRACKING_URI")
    p.add_argument("--run-id", help="env MLFLOW_RUN_ID (the run must exist)")
    p.add_argument("--dataset-uri", help="env DOCKYARD_DATASET_URI")
    p.add_argument("--dataset-format", choices=FORMATS, help="env DOCKYARD_DATASET_FORMAT")
    p.add_argument("--dataset-version", help="env DOCKYARD_DATASET_VERSION (sha256:...)")
    p.add_argument("--target", help="env DOCKYARD_TARGET")
    p.add_argument("--estimator", help="env DOCKYARD_ESTIMATOR")
    p.add_argument("--hyperparameters", help="env DOCKYARD_HYPERPARAMETERS (JSON object)")
    p.add_argument("--task", choices=TASKS, help="env DOCKYARD_TASK")
    p.add_argument("--termination-log", help="env DOCKYARD_TERMINATION_LOG")
    return p.parse_args(list(argv))


def _fail_run(run_id: str, failure: RuntimeFailure) -> None:
    import mlflow

    try:
        mlflow.set_tags(
            {
                "dockyard.failure.reason": failure.reason,
                "dockyard.failure.message": shorten(failure.message, 4000),
            }
        )
    except Exception as exc:
        print(f"dockyard train: could not tag the failed run: {exc}", file=sys.stderr)
    try:
        mlflow.end_run(status="FAILED")
    except Exception as exc:
        print(f"dockyard train: could not mark run {run_id} FAILED: {exc}", file=sys.stderr)


# Where the engines put a worker's rank: torchrun / Kubeflow Trainer (RANK, PET_NODE_RANK), an
# indexed Job (JOB_COMPLETION_INDEX), Open MPI.
RANK_VARIABLES = ("RANK", "PET_NODE_RANK", "JOB_COMPLETION_INDEX", "OMPI_COMM_WORLD_RANK")


def worker_rank(environ: Mapping[str, str]) -> int:
    """This worker's rank (0 when it runs alone or no engine says otherwise)."""
    for name in RANK_VARIABLES:
        value = environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    environ = os.environ
    term = termination_path(environ, args.termination_log)

    def finish(payload: dict[str, Any], code: int) -> int:
        write_termination_message(term, fit_message(payload))
        if payload.get("ok"):
            print(f"dockyard train: ok: {dumps(payload)}", file=sys.stderr)
        else:
            print(f"dockyard train: {payload['reason']}: {payload['message']}", file=sys.stderr)
        return code

    try:
        cfg = config_from_env(environ, args)
    except RuntimeFailure as exc:
        return finish({"ok": False, "reason": exc.reason, "message": exc.message}, exc.exit_code)
    rank = worker_rank(environ)
    if rank:  # on several nodes (TrainJob, RayJob), only rank 0 logs to the run and the model
        return finish({"ok": True, "rank": rank, "message": "not rank 0: nothing logged"}, EXIT_OK)

    quiet_mlflow()
    import mlflow

    if cfg.tracking_uri:
        mlflow.set_tracking_uri(cfg.tracking_uri)
    # MLFLOW_RUN_ID in the environment also makes start_run() resume; pass it explicitly anyway.
    try:
        mlflow.start_run(run_id=cfg.run_id)
    except Exception as exc:
        message = f"cannot open MLflow run {cfg.run_id} at {cfg.tracking_uri}: {shorten(str(exc), 1000)}"
        return finish({"ok": False, "reason": "MlflowError", "message": message}, EXIT_FAILED)
    try:
        payload = train(cfg, environ)
    except RuntimeFailure as exc:
        _fail_run(cfg.run_id, exc)
        return finish({"ok": False, "reason": exc.reason, "message": exc.message}, exc.exit_code)
    except Exception as exc:
        traceback.print_exc()
        failure = RuntimeFailure("TrainingFailed", f"{type(exc).__name__}: {exc}")
        _fail_run(cfg.run_id, failure)
        return finish({"ok": False, "reason": failure.reason, "message": failure.message}, EXIT_FAILED)
    try:
        mlflow.end_run(status="FINISHED")
    except Exception as exc:
        message = f"trained, but could not end the MLflow run: {shorten(str(exc), 1000)}"
        return finish({"ok": False, "reason": "MlflowError", "message": message}, EXIT_FAILED)
    return finish(payload, EXIT_OK)
