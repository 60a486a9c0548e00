"""The operator's MLflow client: tracking runs and the Model Registry over MLflow's REST API.

Async (aiohttp) so thousands of TrainingRuns don't each hold a thread, and small: only the
calls the controllers make. Every method is idempotent or preceded by a search, which is
what makes registration exactly-once across retries and restarts:

* runs are found again by the TrainingRun uid + attempt tags before one is created;
* a model version is found again by its source run id before one is created.

Transport failures and 5xx raise :class:`MlflowUnavailable`; the controller turns that into
an `MlflowReachable=False` condition and retries with backoff. No retries are hidden here,
so an outage is visible in status at once.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from . import metrics


class MlflowError(Exception):
    """MLflow answered with an error (4xx other than not-found)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class MlflowUnavailable(Exception):
    """MLflow could not be reached or answered 5xx."""


class MlflowNotFound(MlflowError):
    pass


def _quote_filter(value: str) -> str:
    """Quote a string literal for an MLflow search filter."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class RunInfo:
    run_id: str
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    artifact_uri: str = ""


@dataclass
class VersionInfo:
    name: str
    version: str
    source: str
    run_id: str
    status: str
    tags: dict[str, str] = field(default_factory=dict)


class MlflowClient:
    def __init__(self, tracking_uri: str, *, timeout: float = 15.0, headers: dict[str, str] | None = None,
                 ca_file: str = ""):
        self.tracking_uri = tracking_uri.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = headers or _auth_headers_from_env()
        # A private CA for an https MLflow (read now: a missing file stops the operator at start).
        self._ssl: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, endpoint: str, operation: str, *, params: dict[str, Any] | None = None,
                    body: dict[str, Any] | None = None, api: str = "2.0") -> dict[str, Any]:
        text = await self._raw(method, f"{self.tracking_uri}/api/{api}/mlflow/{endpoint}", operation,
                               params=params, json_body=body)
        try:
            payload: dict[str, Any] = json.loads(text) or {} if text else {}
        except ValueError:
            payload = {}
        return payload

    async def _raw(self, method: str, url: str, operation: str, *, params: dict[str, Any] | None = None,
                   json_body: dict[str, Any] | None = None, data: bytes | None = None) -> bytes:
        """One request; the answer's bytes. Errors are mapped as the module says."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers,
                                                  connector=aiohttp.TCPConnector(ssl=self._ssl))
        try:
            async with self._session.request(method, url, params=params, json=json_body, data=data) as resp:
                raw = await resp.read()
                if resp.status < 400:
                    return raw
                text = raw.decode("utf-8", "replace")
                try:
                    payload = json.loads(text) if text else {}
                except ValueError:
                    payload = {}
                payload = payload if isinstance(payload, dict) else {}
                if resp.status >= 500:
                    metrics.MLFLOW_ERRORS.labels(operation=operation).inc()
                    raise MlflowUnavailable(f"MLflow {operation}: HTTP {resp.status}")
                code = str(payload.get("error_code", ""))
                # basic-auth's 401/403 answer in plain text ("Permission denied").
                message = str(payload.get("message") or text.strip())[:500]
                if resp.status == 404 or code == "RESOURCE_DOES_NOT_EXIST":
                    raise MlflowNotFound(resp.status, code, message)
                metrics.MLFLOW_ERRORS.labels(operation=operation).inc()
                raise MlflowError(resp.status, code, message)
        except (aiohttp.ClientError, TimeoutError) as exc:
            metrics.MLFLOW_ERRORS.labels(operation=operation).inc()
            raise MlflowUnavailable(f"MLflow {operation}: {exc.__class__.__name__}: {exc}") from exc

    async def ping(self) -> bool:
        try:
            await self._call("GET", "experiments/get-by-name", "ping", params={"experiment_name": "Default"})
            return True
        except MlflowNotFound:
            return True
        except (MlflowUnavailable, MlflowError):
            return False

    # -- experiments and runs ---------------------------------------------------------
    async def ensure_experiment(self, name: str, *, likely_new: bool = False,
                                tags: dict[str, str] | None = None) -> Experiment:
        """The experiment called `name`, created (with `tags`) when missing. `likely_new`
        tries create first."""
        if not likely_new:
            try:
                data = await self._call("GET", "experiments/get-by-name", "get_experiment",
                                        params={"experiment_name": name})
                return _experiment(data["experiment"], created=False)
            except MlflowNotFound:
                pass
        try:
            data = await self._call("POST", "experiments/create", "create_experiment",
                                    body={"name": name, "tags": _tag_list(tags or {})})
            return Experiment(str(data["experiment_id"]), created=True, tags=dict(tags or {}))
        except MlflowError as exc:
            if exc.code != "RESOURCE_ALREADY_EXISTS":
                raise
        data = await self._call("GET", "experiments/get-by-name", "get_experiment", params={"experiment_name": name})
        return _experiment(data["experiment"], created=False)

    async def find_run(self, experiment_id: str, tags: dict[str, str]) -> str | None:
        """The run carrying all these tags, if one exists (oldest first, for determinism)."""
        clauses = [f"tags.`{k}` = {_quote_filter(v)}" for k, v in sorted(tags.items())]
        data = await self._call(
            "POST",
            "runs/search",
            "search_runs",
            body={
                "experiment_ids": [experiment_id],
                "filter": " and ".join(clauses),
                "max_results": 5,
                "order_by": ["attributes.start_time ASC"],
            },
        )
        runs = data.get("runs") or []
        return str(runs[0]["info"]["run_id"]) if runs else None

    async def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
        data = await self._call(
            "POST",
            "runs/create",
            "create_run",
            body={
                "experiment_id": experiment_id,
                "run_name": run_name,
                "start_time": int(time.time() * 1000),
                "tags": _tag_list(tags),
            },
        )
        return str(data["run"]["info"]["run_id"])

    async def find_or_create_run(self, experiment_id: str, run_name: str, tags: dict[str, str],
                                 identity: dict[str, str]) -> str:
        """Exactly one run per identity (TrainingRun uid + attempt), even across crashes."""
        existing = await self.find_run(experiment_id, identity)
        if existing:
            return existing
        return await self.create_run(experiment_id, run_name, {**tags, **identity})

    async def get_run(self, run_id: str) -> RunInfo:
        data = await self._call("GET", "runs/get", "get_run", params={"run_id": run_id})
        run = data["run"]
        info = run["info"]
        run_data = run.get("data", {})
        return RunInfo(
            run_id=info["run_id"],
            status=info.get("status", ""),
            metrics={m["key"]: float(m["value"]) for m in run_data.get("metrics", [])},
            tags={t["key"]: t.get("value", "") for t in run_data.get("tags", [])},
            params={p["key"]: p.get("value", "") for p in run_data.get("params", [])},
            artifact_uri=info.get("artifact_uri", ""),
        )

    async def set_run_status(self, run_id: str, status: str) -> None:
        await self._call("POST", "runs/update", "update_run",
                         body={"run_id": run_id, "status": status, "end_time": int(time.time() * 1000)})

    async def log_batch(self, run_id: str, params: dict[str, str], metrics: dict[str, float],
                        tags: dict[str, str] | None = None) -> None:
        """Params (immutable in MLflow: logging the same value again is allowed), metrics and tags."""
        now = int(time.time() * 1000)
        await self._call("POST", "runs/log-batch", "log_batch", body={
            "run_id": run_id,
            "params": [{"key": k, "value": v[:6000]} for k, v in params.items()],
            "metrics": [{"key": k, "value": v, "timestamp": now, "step": 0} for k, v in metrics.items()],
            "tags": _tag_list(tags or {}),
        })

    async def set_run_tag(self, run_id: str, key: str, value: str) -> None:
        await self._call("POST", "runs/set-tag", "set_run_tag", body={"run_id": run_id, "key": key, "value": value})

    # -- registry ---------------------------------------------------------------------
    async def ensure_registered_model(self, name: str, tags: dict[str, str] | None = None) -> dict[str, str]:
        """Create the registered model (with `tags`) unless it exists; its tags either way."""
        try:
            await self._call("POST", "registered-models/create", "create_registered_model",
                             body={"name": name, "tags": _tag_list(tags or {})})
            return dict(tags or {})
        except MlflowError as exc:
            if exc.code != "RESOURCE_ALREADY_EXISTS":
                raise
        return await self.registered_model_tags(name)

    async def registered_model_tags(self, name: str) -> dict[str, str]:
        data = await self._call("GET", "registered-models/get", "get_registered_model", params={"name": name})
        return {t["key"]: t.get("value", "") for t in data["registered_model"].get("tags", [])}

    async def find_version_by_run(self, name: str, run_id: str) -> VersionInfo | None:
        filt = f"name = {_quote_filter(name)} and run_id = {_quote_filter(run_id)}"
        data = await self._call("GET", "model-versions/search", "search_model_versions",
                                params={"filter": filt, "max_results": 10})
        versions = data.get("model_versions") or []
        if not versions:
            return None
        oldest = min(versions, key=lambda v: int(v["version"]))
        return _version(oldest)

    async def create_version(self, name: str, source: str, run_id: str, tags: dict[str, str],
                             model_id: str | None = None) -> VersionInfo:
        body: dict[str, Any] = {
            "name": name,
            "source": source,
            "run_id": run_id,
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        }
        if model_id:
            body["model_id"] = model_id
        data = await self._call("POST", "model-versions/create", "create_model_version", body=body)
        return _version(data["model_version"])

    async def get_version(self, name: str, version: str) -> VersionInfo | None:
        try:
            data = await self._call("GET", "model-versions/get", "get_model_version",
                                    params={"name": name, "version": version})
        except MlflowNotFound:
            return None
        return _version(data["model_version"])

    async def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        await self._call("POST", "model-versions/set-tag", "set_model_version_tag",
                         body={"name": name, "version": version, "key": key, "value": value})

    async def set_alias(self, name: str, alias: str, version: str) -> None:
        await self._call("POST", "registered-models/alias", "set_alias",
                         body={"name": name, "alias": alias, "version": version})

    async def get_alias(self, name: str, alias: str) -> str | None:
        try:
            data = await self._call("GET", "registered-models/alias", "get_alias",
                                    params={"name": name, "alias": alias})
        except MlflowNotFound:
            return None
        except MlflowError as exc:
            if exc.code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
                return None
            raise
        return str(data["model_version"]["version"])

    # -- run artifacts --------------------------------------------------------------------
    # Over the tracking server's HTTP API, so the operator needs no mlflow package: reads go
    # through /get-artifact (the server reads whatever store the run uses), writes through
    # the server's artifact proxy (`mlflow server --serve-artifacts`, as the chart runs it).

    async def read_artifact(self, run_id: str, path: str) -> bytes | None:
        """The bytes of the run's artifact `path`, or None when the run has no such file."""
        try:
            return await self._raw("GET", f"{self.tracking_uri}/get-artifact", "read_artifact",
                                   params={"run_uuid": run_id, "path": path})
        except MlflowNotFound:
            return None

    async def write_artifact(self, run_id: str, path: str, data: bytes) -> str:
        """Store `data` as the run's artifact `path` (replacing it); its runs:/ URI. Needs a
        run whose artifacts the server proxies (an `mlflow-artifacts:` artifact URI)."""
        run = await self.get_run(run_id)
        scheme, _, location = run.artifact_uri.partition(":")
        if scheme != "mlflow-artifacts":
            raise MlflowError(400, "ARTIFACTS_NOT_PROXIED",
                              f"run {run_id} stores artifacts at {run.artifact_uri}, which the MLflow server does not "
                              "proxy (mlflow server --serve-artifacts); the operator cannot write there")
        location = location.lstrip("/")
        if run.artifact_uri.startswith("mlflow-artifacts://"):  # mlflow-artifacts://host:port/path
            location = location.partition("/")[2]
        url = f"{self.tracking_uri}/api/2.0/mlflow-artifacts/artifacts/{quote(location)}/{quote(path)}"
        await self._raw("PUT", url, "write_artifact", data=data)
        return f"runs:/{run_id}/{path}"

    # -- users and permissions (MLflow's basic-auth app; the caller must be an admin) ------
    async def user_exists(self, username: str) -> bool:
        try:
            await self._call("GET", "users/get", "get_user", params={"username": username})
        except MlflowNotFound:
            return False
        return True

    async def create_user(self, username: str, password: str) -> None:
        await self._call("POST", "users/create", "create_user", body={"username": username, "password": password})

    async def set_user_password(self, username: str, password: str) -> None:
        await self._call("PATCH", "users/update-password", "update_user_password",
                         body={"username": username, "password": password})

    async def list_usernames(self) -> list[str]:
        data = await self._call("GET", "users/list", "list_users")
        return [str(u["username"]) for u in data.get("users", [])]

    async def permission(self, username: str, resource_type: str, resource_id: str) -> str:
        """The permission `username` has on one resource, grants and default included."""
        data = await self._call("GET", "users/permissions/get", "get_user_permission", api="3.0", params={
            "username": username, "resource_type": resource_type, "resource_id": resource_id})
        return str(data.get("permission", ""))

    async def grant(self, username: str, resource_type: str, resource_id: str, permission: str) -> None:
        """Grant `permission` (READ, EDIT, MANAGE...) on one resource; a grant that already
        exists counts as done (MLflow refuses to grant twice)."""
        try:
            await self._call("POST", "users/permissions/grant", "grant_permission", api="3.0", body={
                "username": username, "resource_type": resource_type,
                "resource_id": resource_id, "permission": permission})
        except MlflowError as exc:
            if exc.code != "RESOURCE_ALREADY_EXISTS":
                raise


@dataclass
class Experiment:
    experiment_id: str
    created: bool  # by the call that returned it
    tags: dict[str, str] = field(default_factory=dict)


def _experiment(raw: dict[str, Any], *, created: bool) -> Experiment:
    tags = {t["key"]: t.get("value", "") for t in raw.get("tags", [])}
    return Experiment(str(raw["experiment_id"]), created=created, tags=tags)


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"key": k, "value": v} for k, v in tags.items()]


def _version(raw: dict[str, Any]) -> VersionInfo:
    return VersionInfo(
        name=raw["name"],
        version=str(raw["version"]),
        source=raw.get("source", ""),
        run_id=raw.get("run_id", ""),
        status=raw.get("status", ""),
        tags={t["key"]: t.get("value", "") for t in raw.get("tags", [])},
    )


def _auth_headers_from_env() -> dict[str, str]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        cred = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {cred}"}
    return {}
