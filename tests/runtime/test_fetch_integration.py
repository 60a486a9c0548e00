"""`dockyard fetch-model` against a real MLflow registry, including an outage."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from .helpers import PYTHON, REPO, _env, fetch_model, run_dockyard, train_and_register

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registered(mlflow_server: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    name = "fetch-test-model"
    version = train_and_register(
        mlflow_server.uri, name, n_estimators=5, workdir=tmp_path_factory.mktemp("train")
    )
    return name, version


def test_fetch_writes_model_and_settings(
    mlflow_server: Any, registered: tuple[str, str], tmp_path: Path
) -> None:
    name, version = registered
    dest = fetch_model(mlflow_server.uri, name, version, tmp_path / "models", variant="challenger")
    assert (dest / "model" / "MLmodel").is_file()
    info = json.loads((dest / "dockyard.json").read_text())
    mv = mlflow_server.client().get_model_version(name, version)
    assert info["model"] == name and info["version"] == version and info["variant"] == "challenger"
    assert info["modelUri"] == f"models:/{name}/{version}"
    assert info["source"] == mv.source and info["runId"] == mv.run_id
    # The version's reference profile (monitoring) comes along with the model.
    from dockyard.monitoring.reference import ReferenceProfile

    assert info["referenceProfile"] == "reference-profile.json"
    assert ReferenceProfile.model_validate_json((dest / "reference-profile.json").read_text()).rows == 120

    from mlserver.settings import ModelSettings

    settings = ModelSettings.parse_file(str(dest / "model-settings.json"))
    assert settings.name == name
    assert settings.implementation_ == "dockyard.runtime.monitored.MonitoredMLflowRuntime"  # it has a profile
    assert settings.parameters is not None and settings.parameters.version == version
    assert settings.versions == [version]
    from mlserver.utils import to_absolute_path

    assert to_absolute_path(settings, settings.parameters.uri or "") == str(dest / "model")

    # The fetched folder is a complete MLflow model: loading it needs no tracking server.
    import mlflow.pyfunc
    import pandas as pd

    model = mlflow.pyfunc.load_model(str(dest / "model"))
    frame = pd.DataFrame([[6.3, 3.3, 6.0, 2.5]], columns=model.metadata.get_input_schema().input_names())
    assert list(model.predict(frame)) == ["virginica"]


def test_fetch_twice_replaces_cleanly(
    mlflow_server: Any, registered: tuple[str, str], tmp_path: Path
) -> None:
    name, version = registered
    fetch_model(mlflow_server.uri, name, version, tmp_path)
    fetch_model(mlflow_server.uri, name, version, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dockyard.json", "model", "model-settings.json", "reference-profile.json"]


def test_fetch_missing_version_fails_fast(
    mlflow_server: Any, registered: tuple[str, str], tmp_path: Path
) -> None:
    name, _ = registered
    start = time.monotonic()
    proc = run_dockyard(
        "fetch-model",
        "--model",
        name,
        "--version",
        "999",
        "--dest",
        str(tmp_path),
        "--tracking-uri",
        mlflow_server.uri,
    )
    assert proc.returncode == 2
    assert f"model version {name}/999 does not exist" in proc.stderr
    assert time.monotonic() - start < 60
    assert not (tmp_path / "model").exists()


def test_fetch_gives_up_after_timeout(tmp_path: Path) -> None:
    from .helpers import free_port

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc = run_dockyard(
        "fetch-model",
        "--model",
        "m",
        "--version",
        "1",
        "--dest",
        str(tmp_path),
        "--tracking-uri",
        uri,
        "--timeout",
        "3",
    )
    assert proc.returncode == 1
    assert "MlflowUnreachable" in proc.stderr


def test_fetch_survives_mlflow_outage(
    mlflow_server: Any, registered: tuple[str, str], tmp_path: Path
) -> None:
    """MLflow is down when the init container starts, and comes back: the fetch succeeds."""
    name, version = registered
    mlflow_server.stop()
    log = tmp_path / "fetch.log"
    args = [
        PYTHON,
        "-m",
        "dockyard",
        "fetch-model",
        "--model",
        name,
        "--version",
        version,
        "--dest",
        str(tmp_path / "m"),
        "--tracking-uri",
        mlflow_server.uri,
        "--timeout",
        "120",
    ]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=_env(None), cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while "retrying" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        assert "retrying" in log.read_text()
        mlflow_server.start()
        assert proc.wait(timeout=150) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "m" / "model" / "MLmodel").is_file()
