"""Serving contract used by the Deployment builder, and the commands `dockyard serve` execs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dockyard.runtime import fetch_model, serve
from dockyard.runtime.common import RuntimeFailure

from .helpers import REPO, iris_csv_text, run_dockyard


def test_runtime_ports() -> None:
    assert serve.runtime_ports("mlserver") == {"http": 8080, "grpc": 8081, "metrics": 8082}
    assert serve.runtime_ports("seldon") == {"http": 9000, "grpc": 5000, "metrics": 6000}
    serve.runtime_ports("mlserver")["http"] = 1  # a copy: callers cannot change the defaults
    assert serve.runtime_ports("mlserver")["http"] == 8080


def test_health_paths() -> None:
    assert serve.health_paths("mlserver") == {"readiness": "/v2/health/ready", "liveness": "/v2/health/live"}
    assert serve.health_paths("seldon") == {"readiness": "/health/status", "liveness": "/health/ping"}
    assert serve.metrics_path("seldon") == "/metrics"


def test_unknown_runtime() -> None:
    with pytest.raises(ValueError, match="unknown runtime"):
        serve.runtime_ports("triton")


def fake_fetched(tmp_path: Path, variant: str = "blue") -> Path:
    (tmp_path / "model").mkdir(parents=True)
    (tmp_path / "model-settings.json").write_text(json.dumps(fetch_model.model_settings("iris", "3")))
    (tmp_path / "dockyard.json").write_text(json.dumps({"model": "iris", "version": "3", "variant": variant}))
    return tmp_path


def test_mlserver_settings_written_in_model_dir(tmp_path: Path) -> None:
    d = fake_fetched(tmp_path)
    proc = run_dockyard(
        "serve", "--runtime", "mlserver", "--model-dir", str(d), "--http-port", "9100", "--dry-run"
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["command"][-2:] == ["start", str(d.resolve())]
    assert out["env"]["MLSERVER_PARALLEL_WORKERS"] == "0"
    assert out["env"]["DOCKYARD_VARIANT"] == "blue"
    settings = json.loads((d / "settings.json").read_text())
    assert (
        settings["http_port"] == 9100 and settings["grpc_port"] == 8081 and settings["metrics_port"] == 8082
    )
    assert settings["parallel_workers"] == 0
    assert settings["metrics_endpoint"] == "/metrics"
    assert settings["metrics_dir"].startswith(str(d.resolve()))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to a read-only directory")
def test_mlserver_read_only_model_dir_uses_temp(tmp_path: Path) -> None:
    d = fake_fetched(tmp_path / "ro")
    d.chmod(0o555)
    try:
        folder = serve.prepare_mlserver(d, 1, 2, 3)
        assert folder != d
        ms = json.loads((folder / "model-settings.json").read_text())
        assert ms["parameters"]["uri"] == str((d / "model").resolve())
    finally:
        d.chmod(0o755)


def test_mlserver_not_writable_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = fake_fetched(tmp_path / "m")
    monkeypatch.setattr(serve, "_writable", lambda p: p != d)
    folder = serve.prepare_mlserver(d, 1, 2, 3)
    assert folder != d and not (d / "settings.json").exists()
    ms = json.loads((folder / "model-settings.json").read_text())
    assert ms["parameters"]["uri"] == str((d / "model").resolve())
    assert json.loads((folder / "settings.json").read_text())["http_port"] == 1


def test_mlserver_needs_fetched_model(tmp_path: Path) -> None:
    proc = run_dockyard("serve", "--runtime", "mlserver", "--model-dir", str(tmp_path), "--dry-run")
    assert proc.returncode == 2
    assert "dockyard fetch-model" in proc.stderr


def test_seldon_command(tmp_path: Path) -> None:
    d = fake_fetched(tmp_path)
    args = serve.parse_args(
        ["--runtime", "seldon", "--model-dir", str(d), "--http-port", "9500", "--variant", "green"]
    )
    command, env = serve.build_command(args)
    assert command[1] == "dockyard.runtime.seldon_model.DockyardModel"
    flags = dict(zip(command[2::2], command[3::2], strict=False))
    assert (
        flags["--http-port"] == "9500"
        and flags["--grpc-port"] == "5000"
        and flags["--metrics-port"] == "6000"
    )
    assert flags["--service-type"] == "MODEL"
    params = {p["name"]: p["value"] for p in json.loads(flags["--parameters"])}
    assert params == {"model_dir": str(d.resolve()), "variant": "green"}
    assert env["DOCKYARD_VARIANT"] == "green"


def test_model_settings_shape() -> None:
    assert fetch_model.model_settings("iris-classifier", "7") == {
        "name": "iris-classifier",
        "implementation": "mlserver_mlflow.MLflowRuntime",
        "platform": "mlflow",
        "versions": ["7"],
        "parameters": {"uri": "./model", "version": "7"},
    }


def test_fetch_retries_until_timeout() -> None:
    now = [0.0]
    calls: list[float] = []

    def flaky() -> str:
        calls.append(now[0])
        raise ConnectionError("refused")

    def sleep(s: float) -> None:
        now[0] += s

    with pytest.raises(RuntimeFailure) as exc:
        fetch_model.with_retries("x", flaky, 10, clock=lambda: now[0], sleep=sleep)
    assert exc.value.reason == "MlflowUnreachable"
    assert now[0] == pytest.approx(10)
    assert calls[:4] == [0.0, 0.5, 1.5, 3.5]  # exponential backoff


def test_fetch_retry_recovers() -> None:
    attempts = iter([ConnectionError("down"), ConnectionError("down"), "ok"])

    def sometimes() -> str:
        item = next(attempts)
        if isinstance(item, Exception):
            raise item
        return item

    assert fetch_model.with_retries("x", sometimes, 60, sleep=lambda s: None) == "ok"


@pytest.mark.parametrize(
    "args",
    [
        ["--model", "bad name", "--version", "1"],
        ["--model", "m", "--version", "champion"],
        ["--model", "m", "--version", "1", "--variant", "Bad_Variant"],
    ],
)
def test_fetch_model_refuses_bad_arguments(tmp_path: Path, args: list[str]) -> None:
    proc = run_dockyard("fetch-model", *args, "--dest", str(tmp_path), "--tracking-uri", "http://127.0.0.1:1")
    assert proc.returncode == 2


def test_iris_configmap_is_up_to_date() -> None:
    import yaml

    cm = yaml.safe_load((REPO / "manifests/examples/00-iris-data.yaml").read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "iris-data"
    assert cm["data"]["iris.csv"] == iris_csv_text()
    dataset = yaml.safe_load((REPO / "manifests/examples/01-dataset.yaml").read_text())
    assert dataset["spec"]["source"]["volume"]["configMap"]["name"] == "iris-data"
    assert dataset["spec"]["source"]["uri"] == "file:///data/iris.csv"
    # The generated CSV satisfies the example Dataset's schema and rules.
    import io

    import pandas as pd

    from dockyard.api.dataset import DatasetSpec
    from dockyard.runtime.profile import validate

    frame = pd.read_csv(io.StringIO(cm["data"]["iris.csv"]))
    assert validate(frame, DatasetSpec.model_validate(dataset["spec"]), "csv") == (None, [])
