"""`dockyard fetch-model`: download one registered model version for serving (init container).

  dockyard fetch-model --model NAME --version V --dest DIR [--variant NAME]
                       [--runtime mlserver|seldon] [--tracking-uri URI] [--timeout SECONDS]

Writes:
  DIR/model/                the MLflow model (MLmodel, model files, requirements, input example)
  DIR/model-settings.json   MLServer model settings (name NAME, mlserver_mlflow.MLflowRuntime or,
                            with a reference profile, dockyard.runtime.monitored.MonitoredMLflowRuntime,
                            parameters.uri "./model", parameters.version V, versions [V])
  DIR/dockyard.json         {"model", "version", "variant", "modelUri", "source", "runId", "runtime"}

MLflow is retried with exponential backoff for at most --timeout seconds (env
DOCKYARD_FETCH_TIMEOUT, default 300). A version that does not exist fails at once (exit 2).
Exit codes: 0 ok, 1 MLflow unreachable / download failed, 2 bad arguments or no such version.
After this, serving reads only DIR: it never needs MLflow.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, RuntimeFailure, env_str, quiet_mlflow, shorten

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
VERSION = re.compile(r"^[0-9]{1,12}$")
VARIANT = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MODEL_SUBDIR = "model"
MODEL_SETTINGS = "model-settings.json"
DOCKYARD_JSON = "dockyard.json"
REFERENCE_PROFILE = "reference-profile.json"  # the version's training-data profile, for drift
MLSERVER_IMPLEMENTATION = "mlserver_mlflow.MLflowRuntime"


class NotFound(RuntimeFailure):
    def __init__(self, message: str) -> None:
        super().__init__("ModelVersionNotFound", message, EXIT_BAD_INPUT)


def _is_not_found(exc: BaseException) -> bool:
    code = getattr(exc, "error_code", None)
    return code == "RESOURCE_DOES_NOT_EXIST"


def _is_permanent(exc: BaseException) -> bool:
    code = getattr(exc, "error_code", None)
    return code in (
        "RESOURCE_DOES_NOT_EXIST",
        "INVALID_PARAMETER_VALUE",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
    )


def with_retries[T](
    what: str,
    func: Callable[[], T],
    timeout: float,
    *,
    first_delay: float = 0.5,
    max_delay: float = 10.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `func` until it succeeds, a permanent MLflow error occurs, or `timeout` passes."""
    deadline = clock() + timeout
    delay = first_delay
    attempt = 0
    while True:
        attempt += 1
        try:
            return func()
        except Exception as exc:
            if _is_permanent(exc):
                raise
            remaining = deadline - clock()
            if remaining <= 0:
                raise RuntimeFailure(
                    "MlflowUnreachable",
                    f"{what} failed after {attempt} attempt(s) in {timeout:.0f}s: {shorten(str(exc), 500)}",
                    EXIT_FAILED,
                ) from exc
            print(
                f"dockyard fetch-model: {what} failed (attempt {attempt}): {shorten(str(exc), 200)}; "
                f"retrying in {min(delay, remaining):.1f}s",
                file=sys.stderr,
            )
            sleep(min(delay, remaining))
            delay = min(delay * 2, max_delay)


MONITORED_IMPLEMENTATION = "dockyard.runtime.monitored.MonitoredMLflowRuntime"


def model_settings(name: str, version: str, model_uri: str = f"./{MODEL_SUBDIR}", *,
                   monitored: bool = False) -> dict[str, Any]:
    """MLServer model-settings.json. Every variant serves under the registered model name so
    clients send identical requests; the version is visible in V2 metadata. A version with a
    reference profile is served by the runtime that counts its traffic for drift monitoring."""
    return {
        "name": name,
        "implementation": MONITORED_IMPLEMENTATION if monitored else MLSERVER_IMPLEMENTATION,
        "platform": "mlflow",
        # V2 model metadata lists `versions`; MLServer fills it from here.
        "versions": [version],
        "parameters": {"uri": model_uri, "version": version},
    }


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def fetch(
    name: str,
    version: str,
    dest: Path,
    *,
    variant: str = "",
    runtime: str = "mlserver",
    tracking_uri: str | None = None,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Resolve and download `models:/name/version` into `dest`; returns the dockyard.json content."""
    import mlflow
    from mlflow.tracking import MlflowClient

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri) if tracking_uri else MlflowClient()
    try:
        mv = with_retries(
            f"get_model_version({name}, {version})", lambda: client.get_model_version(name, version), timeout
        )
    except Exception as exc:
        if _is_not_found(exc):
            raise NotFound(f"model version {name}/{version} does not exist in the registry") from exc
        raise
    model_uri = f"models:/{name}/{version}"
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=dest))
    try:

        def download() -> str:
            # Start each attempt from an empty folder: a partial download must not survive.
            for child in staging.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
            return str(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(staging)))

        local = Path(with_retries(f"download {model_uri}", download, timeout))
        if not (local / "MLmodel").is_file():
            raise RuntimeFailure(
                "InvalidModel", f"{model_uri} has no MLmodel file: not an MLflow model", EXIT_FAILED
            )
        target = dest / MODEL_SUBDIR
        if target.exists():
            shutil.rmtree(target)
        os.replace(local, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    info = {
        "model": name,
        "version": str(version),
        "variant": variant,
        "modelUri": model_uri,
        "source": mv.source,
        "runId": mv.run_id,
        "runtime": runtime,
        "referenceProfile": fetch_reference_profile(client, mv.run_id, dest, timeout) if mv.run_id else None,
    }
    _write_json(dest / MODEL_SETTINGS, model_settings(name, str(version),
                                                      monitored=info["referenceProfile"] is not None))
    _write_json(dest / DOCKYARD_JSON, info)
    return info


def fetch_reference_profile(client: Any, run_id: str, dest: Path, timeout: float) -> str | None:
    """Copy the run's reference profile (monitoring) next to the model; the file name, or None
    when the trainer logged none (monitoring then has nothing to compare with, and says so)."""
    from ..monitoring.reference import PROFILE_ARTIFACT

    folder, _, _ = PROFILE_ARTIFACT.rpartition("/")
    listed = with_retries(f"list artifacts of run {run_id}", lambda: client.list_artifacts(run_id, folder), timeout)
    if PROFILE_ARTIFACT not in {a.path for a in listed}:
        return None
    staging = Path(tempfile.mkdtemp(prefix=".profile-", dir=dest))
    try:
        local = with_retries(f"download {PROFILE_ARTIFACT}",
                             lambda: client.download_artifacts(run_id, PROFILE_ARTIFACT, str(staging)), timeout)
        os.replace(local, dest / REFERENCE_PROFILE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return REFERENCE_PROFILE


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="dockyard fetch-model", description="Download a registered model version."
    )
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--version", required=True, help="exact registered version number")
    p.add_argument("--dest", required=True, help="folder to write into (an emptyDir shared with the server)")
    p.add_argument("--variant", default="", help="ModelDeployment variant name (recorded in dockyard.json)")
    p.add_argument("--runtime", choices=("mlserver", "seldon"), default="mlserver")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: env MLFLOW_TRACKING_URI)")
    p.add_argument(
        "--timeout",
        type=float,
        default=float(env_str(os.environ, "DOCKYARD_FETCH_TIMEOUT", "300") or 300),
        help="give up on an unreachable MLflow after this many seconds (default 300)",
    )
    return p.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    problems = []
    if not MODEL_NAME.fullmatch(args.model):
        problems.append(f"--model {args.model!r} is not a valid registered model name")
    if not VERSION.fullmatch(args.version):
        problems.append(f"--version {args.version!r} must be a version number (resolve aliases first)")
    if args.variant and not VARIANT.fullmatch(args.variant):
        problems.append(f"--variant {args.variant!r} must be a DNS label")
    if problems:
        for p in problems:
            print(f"dockyard fetch-model: {p}", file=sys.stderr)
        return EXIT_BAD_INPUT
    tracking_uri = args.tracking_uri or env_str(os.environ, "MLFLOW_TRACKING_URI")
    quiet_mlflow()
    # MLflow's own HTTP retries (7, exponential) would blow through our time budget: we retry here.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    try:
        info = fetch(
            args.model,
            args.version,
            Path(args.dest),
            variant=args.variant,
            runtime=args.runtime,
            tracking_uri=tracking_uri,
            timeout=args.timeout,
        )
    except RuntimeFailure as exc:
        print(f"dockyard fetch-model: {exc.reason}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        print(
            f"dockyard fetch-model: failed: {type(exc).__name__}: {shorten(str(exc), 1000)}", file=sys.stderr
        )
        return EXIT_FAILED
    print(f"dockyard fetch-model: {info['modelUri']} -> {args.dest} ({json.dumps(info)})", file=sys.stderr)
    return EXIT_OK
