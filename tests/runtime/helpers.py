"""Reusable helpers for tests that need real data, a real trained model or a real server.

Stable API (other test suites import these; keep signatures backward compatible):

  IRIS_COLUMNS, IRIS_FEATURES
  iris_frame() -> pandas.DataFrame
  write_iris_csv(path) -> str                         (returns the sha256:... version)
  run_dockyard(*args, env=None, timeout=300) -> CompletedProcess
  train_and_register(mlflow_uri, model_name, n_estimators=10, ...) -> str   (version)
  fetch_model(mlflow_uri, model_name, version, dest, variant="", runtime="mlserver") -> Path
  start_serving_process(runtime, model_dir, port, ...) -> Popen  (ready when it returns)
  stop_process(proc)
  free_port() -> int
  wait_http_ok(url, timeout, proc=None)
  v2_infer_payload(rows) -> dict ; seldon_payload(rows) -> dict
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from tests.processes import stop_process

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
IRIS_COLUMNS = [*IRIS_FEATURES, "species"]
IRIS_SPECIES = ["setosa", "versicolor", "virginica"]
# Two rows per species, for inference requests.
IRIS_SAMPLE_ROWS = [
    [5.1, 3.5, 1.4, 0.2],
    [4.9, 3.0, 1.4, 0.2],
    [7.0, 3.2, 4.7, 1.4],
    [6.4, 3.2, 4.5, 1.5],
    [6.3, 3.3, 6.0, 2.5],
    [5.8, 2.7, 5.1, 1.9],
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def iris_frame() -> Any:
    """The 150-row iris data with Dockyard's column names and species names."""
    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    frame = bunch.frame.copy()
    frame.columns = [*IRIS_FEATURES, "target"]
    frame["species"] = [IRIS_SPECIES[int(t)] for t in frame["target"]]
    return frame[IRIS_COLUMNS]


def iris_csv_text() -> str:
    return iris_frame().to_csv(index=False, lineterminator="\n")


def write_iris_csv(path: str | os.PathLike[str]) -> str:
    """Write iris as CSV to `path`; returns its content version `sha256:<hex>`."""
    data = iris_csv_text().encode()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(data)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKYARD_", "MLFLOW_"))}
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    env.update(extra or {})
    return env


def run_dockyard(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `python -m dockyard ARGS` with a clean DOCKYARD_/MLFLOW_ environment plus `env`."""
    return subprocess.run(
        [PYTHON, "-m", "dockyard", *args],
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def create_run(
    mlflow_uri: str, experiment_name: str, tags: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """What the operator does before the Job: an experiment and an open run. -> (exp_id, run_id)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    exp = client.get_experiment_by_name(experiment_name)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment_name)
    run = client.create_run(exp_id, tags=dict(tags or {}))
    return exp_id, run.info.run_id


def train_env(
    mlflow_uri: str,
    run_id: str,
    experiment_id: str,
    data_path: Path,
    version: str,
    *,
    model_name: str = "iris-classifier",
    estimator: str = "sklearn.ensemble.RandomForestClassifier",
    hyperparameters: Mapping[str, Any] | None = None,
    termination_log: Path | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The env the operator gives a built-in training Job."""
    hp = dict(hyperparameters or {})
    env = {
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "MLFLOW_RUN_ID": run_id,
        "MLFLOW_EXPERIMENT_ID": experiment_id,
        "DOCKYARD_DATASET_NAME": "iris",
        "DOCKYARD_DATASET_URI": data_path.resolve().as_uri(),
        "DOCKYARD_DATASET_FORMAT": "csv",
        "DOCKYARD_DATASET_VERSION": version,
        "DOCKYARD_TARGET": "species",
        "DOCKYARD_MODEL_NAME": model_name,
        "DOCKYARD_ESTIMATOR": estimator,
        "DOCKYARD_HYPERPARAMETERS": json.dumps(hp),
        "DOCKYARD_TASK": "auto",
        "DOCKYARD_TEST_FRACTION": "0.2",
        "DOCKYARD_RANDOM_SEED": "42",
        "DOCKYARD_TRAININGRUN_NAMESPACE": "default",
        "DOCKYARD_TRAININGRUN_NAME": "iris-rf",
        "DOCKYARD_TRAININGRUN_UID": "00000000-0000-0000-0000-000000000001",
        "DOCKYARD_ATTEMPT": "1",
        "DOCKYARD_TERMINATION_LOG": str(termination_log or (data_path.parent / "termination-log")),
        # Keep MLflow from retrying for minutes when a test stops the server.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    }
    env.update({f"DOCKYARD_HP_{k.upper()}": str(v) for k, v in hp.items()})
    env.update(extra or {})
    return env


def train_and_register(
    mlflow_uri: str,
    model_name: str,
    n_estimators: int = 10,
    *,
    max_depth: int | None = 3,
    alias: str | None = None,
    workdir: str | os.PathLike[str] | None = None,
    experiment_name: str = "dockyard-tests",
    timeout: float = 300,
) -> str:
    """Train iris with the real `dockyard train` into a fresh run, register the model and
    return the new version number (as a string). Optionally set `alias` on it."""
    from mlflow.tracking import MlflowClient

    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="dockyard-train-"))
    data = work / "iris.csv"
    version = write_iris_csv(data)
    exp_id, run_id = create_run(mlflow_uri, experiment_name)
    hp: dict[str, Any] = {"n_estimators": n_estimators, "max_depth": max_depth, "random_state": 0}
    term = work / f"termination-{run_id}"
    env = train_env(
        mlflow_uri,
        run_id,
        exp_id,
        data,
        version,
        model_name=model_name,
        hyperparameters=hp,
        termination_log=term,
    )
    proc = run_dockyard("train", env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"dockyard train failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(term.read_text())
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    try:
        client.create_registered_model(model_name)
    except Exception as exc:  # already exists
        if "RESOURCE_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
            raise
    model_uri = result["modelUri"]  # models:/m-<id> (an MLflow 3 LoggedModel)
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    mv = client.create_model_version(model_name, source=model_uri, run_id=run_id, model_id=model_id)
    deadline = time.monotonic() + 60
    while mv.status != "READY" and time.monotonic() < deadline:
        time.sleep(0.2)
        mv = client.get_model_version(model_name, mv.version)
    if alias:
        client.set_registered_model_alias(model_name, alias, mv.version)
    return str(mv.version)


def fetch_model(
    mlflow_uri: str,
    model_name: str,
    version: str,
    dest: str | os.PathLike[str],
    *,
    variant: str = "",
    runtime: str = "mlserver",
    timeout: float = 300,
) -> Path:
    """Run the real `dockyard fetch-model`; returns `dest`."""
    args = ["fetch-model", "--model", model_name, "--version", str(version), "--dest", str(dest)]
    args += ["--runtime", runtime, "--tracking-uri", mlflow_uri]
    if variant:
        args += ["--variant", variant]
    proc = run_dockyard(*args, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"dockyard fetch-model failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return Path(dest)


def wait_http_ok(url: str, timeout: float = 120, proc: subprocess.Popen[Any] | None = None) -> None:
    """Poll `url` until it answers 200; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready")
        try:
            r = requests.get(url, timeout=2)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(0.25)
    raise TimeoutError(f"{url} not ready after {timeout}s (last: {last})")


def start_serving_process(
    runtime: str,
    model_dir: str | os.PathLike[str],
    port: int,
    *,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
    variant: str | None = None,
    timeout: float = 180,
    log_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start `dockyard serve` (mlserver or seldon) on 127.0.0.1:`port` and wait until its
    readiness endpoint answers 200. The process runs in its own session: stop it with
    :func:`stop_process`. Output goes to `log_path` (default: MODEL_DIR/serve-<port>.log)."""
    from dockyard.runtime.serve import health_paths

    args = [
        PYTHON,
        "-m",
        "dockyard",
        "serve",
        "--runtime",
        runtime,
        "--model-dir",
        str(model_dir),
        "--http-port",
        str(port),
        "--grpc-port",
        str(grpc_port or free_port()),
        "--metrics-port",
        str(metrics_port or free_port()),
    ]
    if variant is not None:
        args += ["--variant", variant]
    log = Path(log_path) if log_path else Path(model_dir) / f"serve-{port}.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            args, env=_env(env), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO
        )
    proc.log_path = log  # type: ignore[attr-defined]
    try:
        wait_http_ok(f"http://127.0.0.1:{port}{health_paths(runtime)['readiness']}", timeout, proc)
    except Exception as exc:
        stop_process(proc)
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise RuntimeError(f"{runtime} on port {port} did not become ready: {exc}\n{tail}") from exc
    return proc


def v2_infer_payload(rows: Sequence[Sequence[float]] = IRIS_SAMPLE_ROWS) -> dict[str, Any]:
    """A V2 inference request for the iris model: one FP64 input per feature column."""
    return {
        "inputs": [
            {"name": name, "shape": [len(rows), 1], "datatype": "FP64", "data": [r[i] for r in rows]}
            for i, name in enumerate(IRIS_FEATURES)
        ]
    }


def seldon_payload(rows: Sequence[Sequence[float]] = IRIS_SAMPLE_ROWS) -> dict[str, Any]:
    return {"data": {"names": IRIS_FEATURES, "ndarray": [list(r) for r in rows]}}
