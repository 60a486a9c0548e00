"""`dockyard serve`: run the serving runtime over a model fetched by `dockyard fetch-model`.

The pure functions at the top (:func:`runtime_ports`, :func:`health_paths`,
:func:`metrics_path`) are the contract the Deployment builder uses for container ports and
probes; they import nothing heavy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RUNTIMES = ("mlserver", "seldon")

# Default container ports per runtime. Every runtime has the same keys.
_PORTS: dict[str, dict[str, int]] = {
    # MLServer defaults: HTTP (V2 REST) 8080, gRPC 8081, Prometheus metrics 8082.
    "mlserver": {"http": 8080, "grpc": 8081, "metrics": 8082},
    # seldon-core 1.19 microservice defaults: HTTP 9000, gRPC 5000, metrics 6000.
    "seldon": {"http": 9000, "grpc": 5000, "metrics": 6000},
}

_HEALTH: dict[str, dict[str, str]] = {
    # MLServer V2 health endpoints (HTTP port). Ready = server up and all models loaded.
    "mlserver": {"readiness": "/v2/health/ready", "liveness": "/v2/health/live"},
    # seldon-core microservice (HTTP port): /health/status calls the model's health_status()
    # (fails while the model is not loaded); /health/ping answers "pong" while Flask is up.
    "seldon": {"readiness": "/health/status", "liveness": "/health/ping"},
}


def _check(runtime: str) -> str:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    return runtime


def runtime_ports(runtime: str) -> dict[str, int]:
    """Container ports of a runtime: ``{"http": ..., "grpc": ..., "metrics": ...}``."""
    return dict(_PORTS[_check(runtime)])


def health_paths(runtime: str) -> dict[str, str]:
    """HTTP GET paths (on the ``http`` port) for ``readiness`` and ``liveness`` probes."""
    return dict(_HEALTH[_check(runtime)])


def metrics_path(runtime: str) -> str:
    """Prometheus scrape path on the ``metrics`` port (``/metrics`` for both runtimes)."""
    _check(runtime)
    return "/metrics"


# --------------------------------------------------------------------------- entrypoint
# `dockyard serve --runtime mlserver|seldon --model-dir DIR [--http-port N] [--grpc-port N]
#                 [--metrics-port N] [--variant NAME] [--dry-run]`
# mlserver: writes settings.json (DIR if writable, else a temp dir) and execs `mlserver start`.
# seldon:   execs `seldon-core-microservice dockyard.runtime.seldon_model.DockyardModel`.

SELDON_MODEL_CLASS = "dockyard.runtime.seldon_model.DockyardModel"


def _executable(name: str) -> str:
    """Prefer the console script next to this interpreter (a venv), then PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} is not installed in this image")
    return found


def _writable(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def mlserver_settings(http_port: int, grpc_port: int, metrics_port: int, work_dir: Path) -> dict[str, Any]:
    """MLServer settings.json. parallel_workers 0: MLServer 1.7.1's parallel inference
    workers crash with uvloop 0.23 (NOTES.md)."""
    return {
        "debug": False,
        "host": "0.0.0.0",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "metrics_endpoint": "/metrics",
        "metrics_dir": str(work_dir / ".metrics"),
        "environments_dir": str(work_dir / ".envs"),
        "parallel_workers": 0,
        "load_models_at_startup": True,
        "server_name": "dockyard-mlserver",
    }


def prepare_mlserver(model_dir: Path, http_port: int, grpc_port: int, metrics_port: int) -> Path:
    """Write settings.json; returns the folder to pass to `mlserver start`. When DIR is not
    writable, a temp folder gets settings.json and a model-settings.json pointing into DIR."""
    if not (model_dir / "model-settings.json").is_file():
        raise FileNotFoundError(
            f"{model_dir}/model-settings.json is missing: run `dockyard fetch-model` first"
        )
    if _writable(model_dir):
        folder = model_dir
    else:
        folder = Path(tempfile.mkdtemp(prefix="dockyard-serve-"))
        settings = json.loads((model_dir / "model-settings.json").read_text())
        uri = settings.get("parameters", {}).get("uri", "./model")
        if not os.path.isabs(uri):
            settings["parameters"]["uri"] = str((model_dir / uri).resolve())
        (folder / "model-settings.json").write_text(json.dumps(settings, indent=2))
    settings_json = mlserver_settings(http_port, grpc_port, metrics_port, folder)
    Path(settings_json["metrics_dir"]).mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(settings_json, indent=2) + "\n")
    return folder


def seldon_command(
    model_dir: Path, http_port: int, grpc_port: int, metrics_port: int, variant: str
) -> list[str]:
    parameters = [
        {"name": "model_dir", "value": str(model_dir), "type": "STRING"},
        {"name": "variant", "value": variant, "type": "STRING"},
    ]
    return [
        _executable("seldon-core-microservice"),
        SELDON_MODEL_CLASS,
        "--service-type",
        "MODEL",
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--metrics-port",
        str(metrics_port),
        "--workers",
        "1",
        "--parameters",
        json.dumps(parameters),
    ]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="dockyard serve", description="Serve a model fetched by `dockyard fetch-model`."
    )
    p.add_argument("--runtime", choices=RUNTIMES, default="mlserver")
    p.add_argument("--model-dir", required=True, help="the folder `dockyard fetch-model --dest` wrote")
    p.add_argument("--http-port", type=int)
    p.add_argument("--grpc-port", type=int)
    p.add_argument("--metrics-port", type=int)
    p.add_argument("--variant", default=None, help="variant name (default: from dockyard.json)")
    p.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    return p.parse_args(list(argv))


def build_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The argv to exec and the environment additions."""
    ports = runtime_ports(args.runtime)
    http = args.http_port or ports["http"]
    grpc = args.grpc_port or ports["grpc"]
    metrics = args.metrics_port or ports["metrics"]
    model_dir = Path(args.model_dir).resolve()
    variant = args.variant
    if variant is None:
        try:
            variant = json.loads((model_dir / "dockyard.json").read_text()).get("variant", "")
        except (OSError, ValueError):
            variant = ""
    env: dict[str, str] = {"DOCKYARD_VARIANT": variant or "", "DOCKYARD_MODEL_DIR": str(model_dir)}
    env["MLFLOW_DISABLE_TELEMETRY"] = os.environ.get("MLFLOW_DISABLE_TELEMETRY", "true")
    home = os.environ.get("HOME", "")
    if not home or not _writable(Path(home)):
        # Read-only root filesystem: gunicorn (seldon) and friends write under $HOME.
        env["HOME"] = tempfile.gettempdir() if _writable(Path(tempfile.gettempdir())) else str(model_dir)
    if args.runtime == "mlserver":
        folder = prepare_mlserver(model_dir, http, grpc, metrics)
        env["MLSERVER_PARALLEL_WORKERS"] = "0"
        return [_executable("mlserver"), "start", str(folder)], env
    # Monitoring counts reach seldon's metrics port through the model's metrics(); by default
    # seldon also copies them into every response's meta (5 KB for a 6-row answer).
    env["INCLUDE_METRICS_IN_CLIENT_RESPONSE"] = "false"
    return seldon_command(model_dir, http, grpc, metrics, variant or ""), env


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        command, env = build_command(args)
    except (FileNotFoundError, ValueError) as exc:
        print(f"dockyard serve: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps({"command": command, "env": env}))
        return 0
    os.environ.update(env)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(command[0], command)  # noqa: S606 - argv list, no shell
    return 1  # not reached
