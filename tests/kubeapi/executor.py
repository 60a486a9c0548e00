"""Local executor: plays kubelet, the Job controller and the Deployment controller against a
Kubernetes API (the emulator, normally), so that Jobs and Deployments the operator creates
actually run, as local processes, and their status is written back the way a cluster would.

It is an ordinary API client: it reads a kubeconfig (or a bare ``http(s)://`` base URL), lists
and watches ``batch/v1`` Jobs and ``apps/v1`` Deployments, creates Pods and patches
``/status`` subresources (JSON merge-patch). Requests failing with 429 / 5xx / connection errors are
retried with backoff; watches resume from the last resourceVersion and relist on 410 Gone.
Nothing in it is specific to the emulator. It runs its own asyncio
loop in a background thread, so tests and operators in other loops are unaffected.

    executor = LocalExecutor(kubeconfig, workdir=tmp_path, namespaces={"test-ns"})
    executor.start()
    ...
    executor.logs("test-ns", "train-abc12")
    executor.stop()

Image -> command mapping
------------------------
Images are never pulled. The container's ``command + args`` are run directly (``execve``, no
shell) with the test environment's Python:

* ``command[0]`` is resolved by its *basename*: first in ``python_bin_dir`` (default: the
  directory of ``sys.executable``, i.e. ``.venv/bin``, which holds ``python``, ``python3`` and
  the ``dockyard`` console script), then, if ``command[0]`` is an absolute path that exists
  locally, that path, then ``PATH``. So ``python``, ``/usr/local/bin/python`` and ``dockyard``
  all run the venv's interpreter / console script; ``/bin/sh`` runs the host's ``sh``.
* A container without ``command`` runs the image's entrypoint only if ``image_commands`` maps
  the image (exact reference, or the reference without its tag/digest) to an argv prefix;
  otherwise the container fails to start (exit code 128, reason ``StartError``), like a
  container runtime that cannot exec the entrypoint.
* Not found -> exit code 128, reason ``StartError``, message
  ``exec: "<cmd>": executable file not found in $PATH``.

Environment: the process gets a *minimal* environment, not the test process's:
``PATH`` (python_bin_dir first), ``HOME``, ``TMPDIR`` (scratch dirs), ``HOSTNAME`` (Pod name),
``LANG=C.UTF-8``, then ``extra_env`` (constructor argument), then the container's ``envFrom`` and
``env``, so a value the test environment happens to have cannot make a Job pass that would
fail in a cluster. ``env``: ``value`` (with Kubernetes ``$(VAR)`` expansion, ``$$`` escapes),
``valueFrom.secretKeyRef`` / ``configMapKeyRef`` (read from the API; ``optional`` honoured),
``valueFrom.fieldRef`` (``metadata.name|namespace|uid``, ``metadata.labels['k']``,
``metadata.annotations['k']``, ``spec.nodeName``, ``spec.serviceAccountName``,
``status.podIP|hostIP`` = 127.0.0.1), ``valueFrom.resourceFieldRef`` (the container's
limits/requests, else the host's CPU count / 8Gi); ``envFrom`` with ``configMapRef`` /
``secretRef`` and ``prefix``. ``$(VAR)`` is also expanded in ``command`` and ``args``.
A missing non-optional Secret/ConfigMap (or key) keeps the Pod ``Pending`` with container
waiting reason ``CreateContainerConfigError`` (``ContainerCreating`` for volumes), retried every
``retry_interval`` seconds, as the kubelet does; ``activeDeadlineSeconds`` still applies.

Volumes and path rewriting
--------------------------
Every Pod gets ``<workdir>/<namespace>/<pod>/``. Each Pod volume becomes a local directory:

* ``emptyDir`` and unknown volume types: an empty scratch dir ``volumes/<name>``;
* ``configMap`` / ``secret``: a scratch dir holding one file per key (``data`` and
  ``binaryData``; Secrets base64-decoded), or only the ``items`` (``key`` -> ``path``) if given;
  ``defaultMode`` / item ``mode`` applied; ``optional`` honoured;
* ``projected``: its ``configMap`` / ``secret`` sources merged into one scratch dir;
* ``persistentVolumeClaim``: ``host_path_map[claimName]`` if configured, else
  ``<workdir>/pvc/<namespace>/<claimName>``, which persists across Pods of the same claim;
* ``hostPath``: ``host_path_map[path]`` if configured, else a scratch dir.

A ``volumeMount`` maps ``mountPath`` to the volume's dir (joined with ``subPath`` if set).
Because the process cannot really mount at ``mountPath``, strings the container is given are
REWRITTEN: in every ``env`` / ``envFrom`` value and every element of ``command[1:]`` and
``args`` (after ``$(VAR)`` expansion), each occurrence of a ``mountPath`` that stands as a path
prefix is replaced by the local dir. "Stands as a path prefix" means: the occurrence is
followed by ``/`` or the end of the string (or a character that cannot continue a path
component), and is preceded by the start of the string, ``//`` (a URI such as
``file:///data/x.csv`` -> ``file:///<scratch>/x.csv``), or one of ``= : , ; space ' "`` (so
``--input=/data/x`` and ``A:/data`` are rewritten, ``/srv/data`` is not). The longest
``mountPath`` wins; ``/`` is never rewritten. Paths hard-coded inside the program or inside
mounted files are not rewritten. The container's ``workingDir`` is mapped the same way; without
one (or if it is not under a mount) the process runs in ``<pod dir>/work``.

``terminationMessagePath`` (default ``/dev/termination-log``) becomes the scratch file
``<pod dir>/<container>.termination-log``; an env value or arg *equal* to the path, or of the
form ``--flag=<path>``, is rewritten to it. After exit its content (first 4096 bytes, like the
kubelet) becomes ``state.terminated.message``; with ``terminationMessagePolicy:
FallbackToLogsOnError`` and an empty file, a failed container reports the last 2048 bytes /
80 lines of its log.

Jobs (``batch/v1``)
-------------------
For each new Job (not suspended, without ``status.startTime``, in a watched namespace) it
creates a Pod ``<job>-<5 chars>`` (labels ``job-name``, ``controller-uid``,
``batch.kubernetes.io/job-name``, ``batch.kubernetes.io/controller-uid``, owner reference to the
Job), runs the Pod's ``initContainers`` in order and then its FIRST container (other containers
are not run and get no status), and writes Pod status (``Pending`` -> ``Running`` ->
``Succeeded``/``Failed``, ``containerStatuses[0].state``) and Job status (``startTime``,
``active``, ``ready``, ``succeeded``, ``failed``, conditions ``Complete`` / ``Failed`` with
reason ``BackoffLimitExceeded`` or ``DeadlineExceeded``, ``completionTime``). ``completions``
Pods are run one after the other (``parallelism`` is ignored). A failed Pod is replaced until
``backoffLimit + 1`` Pods have failed; the replacement delay is ``backoff_seconds * 2**(n-1)``
(default 0, the real controller uses 10 s). ``activeDeadlineSeconds`` (from ``startTime``) kills
the running process (SIGTERM to its process group, SIGKILL after ``kill_grace`` s), marks the
Pod failed, deletes it (as the Job controller does) and fails the Job. Deleting the Job kills its
process (Pods are left to garbage collection; the executor does not delete them).
``restartPolicy: OnFailure`` is treated as ``Never`` (a new Pod per retry).

Logs: each container's stdout+stderr go to ``<pod dir>/logs/<container>.log``, readable with
``executor.logs(namespace, pod, container=None)``; if ``log_sink(namespace, pod, container, text)``
is given (the fixture passes the emulator's ``set_pod_log``), the log is also pushed there every
0.5 s while it grows and once at exit, so ``GET .../pods/<pod>/log`` (``kubectl logs``) serves it.

Mode ``"instant"`` runs nothing: the Pod goes straight to ``Succeeded`` (or ``Failed``) with the
exit code and termination message returned by ``instant_result(job) -> (exit_code, message)``
(default ``(0, "")``); backoff still applies to non-zero codes. ``executor.mode`` may be changed
while running; it applies to Jobs seen afterwards.

Deployments (``apps/v1``)
-------------------------
By default every Deployment is marked available on each new generation: ``observedGeneration``,
``replicas``, ``updatedReplicas``, ``readyReplicas``, ``availableReplicas`` = ``spec.replicas``
(default 1), conditions ``Available=True`` (MinimumReplicasAvailable) and ``Progressing=True``
(NewReplicaSetAvailable). No ReplicaSets or Pods are created.

Process mode (``run_deployments=True`` or a predicate on the Deployment dict): ONE process per
Deployment regardless of ``replicas`` (0 replicas: none). ``initContainers`` run first, in
order, to completion (a failure is retried with backoff, as the kubelet does); then the first
container's command runs as a long-lived process. Each declared ``containerPort`` gets a free
local port on 127.0.0.1, stable for the Deployment's life (``deployment_ports(ns, name) ->
{containerPort: localPort}``). PORT REWRITING: env ``PORT`` is set to the local port of the
first declared containerPort (an explicit ``PORT`` in the container's env takes precedence, and
is itself subject to the next rule); any env value or arg *exactly equal* to a declared
containerPort number (e.g. ``"8080"``), or of the form ``--flag=8080``, is replaced by the local
port. Nothing else (``0.0.0.0:8080``, config files) is rewritten. The Deployment shows
``readyReplicas = replicas`` once the ``readinessProbe`` (``httpGet``: 200 <= code < 400;
``tcpSocket``: connect; ``exec``: exit 0; none: process started) succeeds against the local port,
polled every 0.1 s for up to ``readiness_timeout`` s; until then ``readyReplicas`` is absent
(0) and ``Available=False``. If the process exits it is restarted with backoff and the
Deployment becomes unavailable until ready again. A new pod template (spec change) restarts the
process (kill, then start; not a rolling update); a replicas-only change just rewrites status.
Deleting the Deployment or stopping the executor kills the process.
``deployment_logs(ns, name)`` returns its output.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime as dt
import hashlib
import json
import logging
import math
import os
import random
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
import yaml

log = logging.getLogger("dockyard.tests.executor")

Obj = dict[str, Any]
Mode = Literal["run", "instant"]

TERMINATION_MESSAGE_MAX = 4096
FALLBACK_LOG_BYTES = 2048
FALLBACK_LOG_LINES = 80
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
NODE_NAME = "dockyard-local-executor"
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what the apiserver uses for generateName


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rand(n: int = 5) -> str:
    return "".join(random.choice(_NAME_ALPHABET) for _ in range(n))


# --------------------------------------------------------------------------------------------
# A small Kubernetes REST client (aiohttp) built from a kubeconfig.


class ApiError(Exception):
    def __init__(self, status: int, body: Any, method: str = "", path: str = "") -> None:
        self.status = status
        self.body = body
        self.retry_after: float | None = None
        msg = body.get("message") if isinstance(body, dict) else body
        super().__init__(f"{method} {path} -> {status}: {msg}")


@dataclass
class _Endpoint:
    server: str
    headers: dict[str, str] = field(default_factory=dict)
    ssl: ssl.SSLContext | bool | None = None


def _endpoint_from_kubeconfig(path: Path | str) -> _Endpoint:
    path = Path(path)
    cfg = yaml.safe_load(path.read_text()) or {}
    ctx_name = cfg.get("current-context")
    contexts = {c["name"]: c.get("context") or {} for c in cfg.get("contexts") or []}
    ctx = contexts.get(ctx_name) if ctx_name else next(iter(contexts.values()), {})
    ctx = ctx or {}
    clusters = {c["name"]: c.get("cluster") or {} for c in cfg.get("clusters") or []}
    users = {u["name"]: u.get("user") or {} for u in cfg.get("users") or []}
    cluster = clusters.get(ctx.get("cluster")) or next(iter(clusters.values()), {})
    user = users.get(ctx.get("user")) or {}
    ep = _Endpoint(server=cluster["server"].rstrip("/"))
    base = path.parent

    def _file(key: str, data_key: str, obj: Obj) -> str | None:
        if obj.get(data_key):
            tmp = tempfile.NamedTemporaryFile(delete=False, prefix="kcfg-", suffix=".pem")
            tmp.write(base64.b64decode(obj[data_key]))
            tmp.close()
            return tmp.name
        if obj.get(key):
            return str(base / obj[key])
        return None

    if ep.server.startswith("https"):
        if cluster.get("insecure-skip-tls-verify"):
            ctx_ssl = ssl.create_default_context()
            ctx_ssl.check_hostname = False
            ctx_ssl.verify_mode = ssl.CERT_NONE
        else:
            ctx_ssl = ssl.create_default_context(
                cafile=_file("certificate-authority", "certificate-authority-data", cluster)
            )
        cert = _file("client-certificate", "client-certificate-data", user)
        key = _file("client-key", "client-key-data", user)
        if cert and key:
            ctx_ssl.load_cert_chain(cert, key)
        ep.ssl = ctx_ssl
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = Path(user["tokenFile"]).read_text().strip()
    if token:
        ep.headers["Authorization"] = f"Bearer {token}"
    elif user.get("username"):
        raw = f"{user['username']}:{user.get('password', '')}".encode()
        ep.headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
    return ep


class _Api:
    def __init__(self, ep: _Endpoint) -> None:
        self.ep = ep
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self.session = aiohttp.ClientSession(
            headers={"User-Agent": "dockyard-local-executor", **self.ep.headers},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )

    async def close(self) -> None:
        if self.session:
            await self.session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        attempts: int = 6,
    ) -> Obj:
        """One API call; 429 / 5xx / connection errors are retried with backoff (Retry-After
        honoured, capped at 2 s), as client-go does."""
        delay = 0.1
        for attempt in range(attempts):
            try:
                return await self._request_once(method, path, body, params, content_type)
            except ApiError as e:
                if e.status != 429 and e.status < 500 or attempt == attempts - 1:
                    raise
                wait = e.retry_after if e.retry_after is not None else delay
            except (aiohttp.ClientError, TimeoutError):
                if attempt == attempts - 1:
                    raise
                wait = delay
            await asyncio.sleep(min(wait, 2.0))
            delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    async def _request_once(
        self, method: str, path: str, body: Any, params: dict[str, str] | None, content_type: str
    ) -> Obj:
        assert self.session is not None
        data = None if body is None else json.dumps(body)
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        async with self.session.request(
            method,
            self.ep.server + path,
            data=data,
            params=params,
            headers=headers,
            ssl=self.ep.ssl if self.ep.ssl is not None else True,
            timeout=aiohttp.ClientTimeout(total=30),
        ) as resp:
            text = await resp.text()
            try:
                payload = json.loads(text) if text else {}
            except ValueError:
                payload = text
            if resp.status >= 400:
                err = ApiError(resp.status, payload, method, path)
                with contextlib.suppress(TypeError, ValueError):
                    err.retry_after = float(resp.headers.get("Retry-After", ""))
                raise err
            return payload  # type: ignore[no-any-return]

    async def get(self, path: str) -> Obj | None:
        try:
            return await self.request("GET", path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def merge_patch(self, path: str, patch: Obj) -> Obj | None:
        """Merge-patch; None if the object is gone."""
        try:
            return await self.request("PATCH", path, patch, content_type="application/merge-patch+json")
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def watch(self, path: str, resource_version: str) -> AsyncIterator[Obj]:
        assert self.session is not None
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "240",
        }
        # No ``async with``: its exit awaits the connection's close, which can hang when the task
        # is cancelled mid-read; ``resp.close()`` drops the connection synchronously.
        resp = await self.session.get(
            self.ep.server + path,
            params=params,
            ssl=self.ep.ssl if self.ep.ssl is not None else True,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300),
        )
        try:
            if resp.status >= 400:
                text = await resp.text()
                try:
                    body: Any = json.loads(text)
                except ValueError:
                    body = text
                raise ApiError(resp.status, body, "WATCH", path)
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
            if buf.strip():
                yield json.loads(buf)
        finally:
            resp.close()


def _path(api_prefix: str, plural: str, namespace: str | None, name: str | None = None, sub: str = "") -> str:
    p = api_prefix
    if namespace:
        p += f"/namespaces/{quote(namespace)}"
    p += f"/{plural}"
    if name:
        p += f"/{quote(name)}"
    if sub:
        p += f"/{sub}"
    return p


def _pod_path(ns: str, name: str | None = None, sub: str = "") -> str:
    return _path("/api/v1", "pods", ns, name, sub)


def _job_path(ns: str, name: str, sub: str = "") -> str:
    return _path("/apis/batch/v1", "jobs", ns, name, sub)


def _deploy_path(ns: str, name: str, sub: str = "") -> str:
    return _path("/apis/apps/v1", "deployments", ns, name, sub)


# --------------------------------------------------------------------------------------------
# Pure helpers: $(VAR) expansion, path and port rewriting.


def expand_vars(value: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known vars are substituted, unknown ones left as is,
    ``$$`` is an escaped ``$``."""
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c == "$" and i + 1 < n:
            nxt = value[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = value.find(")", i + 2)
                if end != -1:
                    name = value[i + 2 : end]
                    out.append(env[name] if name in env else f"$({name})")
                    i = end + 1
                    continue
            out.append(c)
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


_PREFIX_BEFORE = set("=:,; '\"")
_PATH_CONT = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-~+@")


def rewrite_paths(value: str, mounts: list[tuple[str, str]]) -> str:
    """Replace each ``mountPath`` standing as a path prefix in ``value`` by its local dir
    (see the module docstring for the exact rule). ``mounts``: (mountPath, local dir)."""
    norm = sorted(
        ((m.rstrip("/"), local) for m, local in mounts if m.rstrip("/")),
        key=lambda t: len(t[0]),
        reverse=True,
    )
    if not norm:
        return value
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        for mpath, local in norm:
            if not value.startswith(mpath, i):
                continue
            end = i + len(mpath)
            after_ok = end == n or value[end] == "/" or value[end] not in _PATH_CONT
            before_ok = i == 0 or value[i - 1] in _PREFIX_BEFORE or value[max(0, i - 2) : i] == "//"
            if after_ok and before_ok:
                out.append(local)
                i = end
                break
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _rewrite_exact(value: str, mapping: dict[str, str]) -> str:
    """Exact value, or the part after the last '=' of ``--flag=value``."""
    if value in mapping:
        return mapping[value]
    if value.startswith("-") and "=" in value:
        flag, _, rest = value.rpartition("=")
        if rest in mapping:
            return f"{flag}={mapping[rest]}"
    return value


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _parse_quantity(q: str | int | float) -> float:
    s = str(q)
    suffixes = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "Pi": 2**50,
        "Ei": 2**60,
        "n": 1e-9,
        "u": 1e-6,
        "m": 1e-3,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "P": 1e15,
        "E": 1e18,
    }
    for suf in sorted(suffixes, key=len, reverse=True):
        if s.endswith(suf):
            return float(s[: -len(suf)]) * suffixes[suf]
    return float(s)


# --------------------------------------------------------------------------------------------
# Pod preparation: volumes, env, argv.


class _ConfigError(Exception):
    """The Pod cannot start yet (missing Secret/ConfigMap): kubelet keeps it Pending."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


class _StartError(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


@dataclass
class _Prepared:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    termination_file: Path
    log_file: Path
    container: Obj


@dataclass
class _Result:
    exit_code: int
    reason: str
    message: str
    started_at: str
    finished_at: str
    container_id: str = ""


@dataclass
class _PodRun:
    """One Pod (or one Deployment replica) being run."""

    namespace: str
    name: str
    uid: str
    meta: Obj
    spec: Obj
    dir: Path
    volumes: dict[str, Path] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None
    container_logs: dict[str, Path] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------


class LocalExecutor:
    """See the module docstring. Thread-safe public methods: start, stop, logs,
    deployment_logs, deployment_ports, watch_namespace, and the ``mode`` attribute."""

    def __init__(
        self,
        kubeconfig: Path | str,
        workdir: Path | str,
        mode: Mode = "run",
        python_bin_dir: Path | str | None = None,
        host_path_map: dict[str, Path | str] | None = None,
        *,
        namespaces: Iterable[str] | None = None,
        instant_result: Callable[[Obj], tuple[int, str]] | None = None,
        run_deployments: bool | Callable[[Obj], bool] = False,
        manage_deployments: bool = True,
        manage_jobs: bool = True,
        extra_env: dict[str, str] | None = None,
        image_commands: dict[str, list[str]] | None = None,
        backoff_seconds: float = 0.0,
        kill_grace: float = 3.0,
        readiness_timeout: float = 60.0,
        retry_interval: float = 0.5,
        log_sink: Callable[[str, str, str, str], None] | None = None,
    ) -> None:
        k = str(kubeconfig)
        if k.startswith(("http://", "https://")):
            self._endpoint = _Endpoint(server=k.rstrip("/"))
        else:
            self._endpoint = _endpoint_from_kubeconfig(k)
        self.workdir = Path(workdir)
        self.mode: Mode = mode
        self.python_bin_dir = Path(python_bin_dir or Path(sys.executable).parent)
        self.host_path_map = {k: Path(v) for k, v in (host_path_map or {}).items()}
        self._namespaces: set[str] | None = set(namespaces) if namespaces is not None else None
        self.instant_result = instant_result or (lambda job: (0, ""))
        self.run_deployments = run_deployments
        self.manage_deployments = manage_deployments
        self.manage_jobs = manage_jobs
        self.extra_env = dict(extra_env or {})
        self.image_commands = dict(image_commands or {})
        self.backoff_seconds = backoff_seconds
        self.kill_grace = kill_grace
        self.readiness_timeout = readiness_timeout
        self.retry_interval = retry_interval
        self.log_sink = log_sink

        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop_event: asyncio.Event | None = None
        self._stopping = False
        self._api = _Api(self._endpoint)

        self._jobs: dict[str, asyncio.Task[None]] = {}  # job uid -> task
        self._job_cancel_reason: dict[str, str] = {}
        self._jobs_done: set[str] = set()
        self._pod_logs: dict[tuple[str, str], dict[str, Path]] = {}
        self._deploys: dict[str, _DeploymentRunner] = {}  # deployment uid -> runner
        self._deploy_ports: dict[tuple[str, str], dict[int, int]] = {}
        self._deploy_logs: dict[tuple[str, str], Path] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pgids: set[int] = set()  # every process group started, killed for sure on stop()

    # ---------------------------------------------------------------- public, thread-safe

    def start(self, timeout: float = 30.0) -> LocalExecutor:
        """Start the background thread; returns once the initial lists are processed."""
        if self._thread:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._thread_main, name="local-executor", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise TimeoutError("local executor did not sync with the API server in time")
        if self._error:
            err = self._error
            self.stop()
            raise RuntimeError(f"local executor failed to start: {err}") from err
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Kill every process it started and stop the thread. Idempotent."""
        thread, loop = self._thread, self._loop
        if not thread:
            return
        if loop and self._stop_event and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed meanwhile
                loop.call_soon_threadsafe(self._stop_event.set)
        thread.join(timeout)
        for pgid in list(self._pgids):
            _killpg(pgid, signal.SIGKILL)
        if thread.is_alive() and loop is not None:
            for task in asyncio.all_tasks(loop):
                log.error("local executor did not stop; pending: %r", task)
                task.print_stack()
        self._thread = None

    def __enter__(self) -> LocalExecutor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def watch_namespace(self, namespace: str) -> None:
        """Also act on objects in ``namespace`` (only if constructed with ``namespaces``).
        Objects already there are picked up on their next event."""
        with self._lock:
            if self._namespaces is not None:
                self._namespaces.add(namespace)

    def logs(self, namespace: str, pod: str, container: str | None = None) -> str:
        """Combined stdout+stderr of a Pod's container (default: the first app container)."""
        with self._lock:
            logs = self._pod_logs.get((namespace, pod))
        if not logs:
            raise KeyError(f"no logs for pod {namespace}/{pod}")
        path = logs[container] if container else logs["__main__"]
        return path.read_text(errors="replace") if path.exists() else ""

    def deployment_logs(self, namespace: str, name: str) -> str:
        """Output of a process-mode Deployment's main container (all restarts)."""
        with self._lock:
            path = self._deploy_logs.get((namespace, name))
        if path is None:
            raise KeyError(f"no process for deployment {namespace}/{name}")
        return path.read_text(errors="replace") if path.exists() else ""

    def deployment_ports(self, namespace: str, name: str) -> dict[int, int]:
        """{containerPort: local port on 127.0.0.1} of a process-mode Deployment."""
        with self._lock:
            ports = self._deploy_ports.get((namespace, name))
        if ports is None:
            raise KeyError(f"no process for deployment {namespace}/{name}")
        return dict(ports)

    def deployment_url(self, namespace: str, name: str, container_port: int | None = None) -> str:
        ports = self.deployment_ports(namespace, name)
        port = ports[container_port] if container_port is not None else next(iter(ports.values()))
        return f"http://127.0.0.1:{port}"

    # ---------------------------------------------------------------- thread / loop

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as e:
            self._error = e
            self._ready.set()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        self._stop_event = asyncio.Event()
        await self._api.open()
        synced: list[asyncio.Event] = []
        try:
            if self.manage_jobs:
                ev = asyncio.Event()
                synced.append(ev)
                self._spawn(self._informer("/apis/batch/v1/jobs", self._on_job, ev))
            if self.manage_deployments:
                ev = asyncio.Event()
                synced.append(ev)
                self._spawn(self._informer("/apis/apps/v1/deployments", self._on_deployment, ev))
            syncing = asyncio.gather(*(e.wait() for e in synced))
            stopper = asyncio.ensure_future(self._stop_event.wait())
            await asyncio.wait([syncing, stopper], return_when=asyncio.FIRST_COMPLETED)
            syncing.cancel()
            self._ready.set()
            await stopper
        finally:
            self._stopping = True
            self._ready.set()
            await self._shutdown()
            await self._api.close()

    async def _shutdown(self) -> None:
        runners = list(self._deploys.values())
        await asyncio.gather(*(r.stop() for r in runners), return_exceptions=True)
        for uid in list(self._jobs):
            self._job_cancel_reason[uid] = "executor stopped"
        tasks = [t for t in (*self._jobs.values(), *self._tasks) if not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(self._log_task_error)
        return task

    @staticmethod
    def _log_task_error(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception():
            log.error("executor task failed", exc_info=task.exception())

    def _ns_ok(self, ns: str | None) -> bool:
        with self._lock:
            return self._namespaces is None or ns in self._namespaces

    async def _informer(
        self, path: str, handler: Callable[[str, Obj], Awaitable[None]], synced: asyncio.Event
    ) -> None:
        """List+watch ``path``; relist on 410; report deletions missed across relists."""
        rv: str | None = None
        known: dict[str, Obj] = {}
        delay = 0.1
        while not self._stopping:
            try:
                if rv is None:
                    lst = await self._api.request("GET", path)
                    rv = str(lst.get("metadata", {}).get("resourceVersion") or "0")
                    current = {o["metadata"]["uid"]: o for o in lst.get("items") or []}
                    for uid, obj in list(known.items()):
                        if uid not in current:
                            await self._safe(handler, "DELETED", obj)
                    known = current
                    for obj in current.values():
                        await self._safe(handler, "ADDED", obj)
                    synced.set()
                async with contextlib.aclosing(self._api.watch(path, rv)) as events:
                    async for event in events:
                        etype, obj = event.get("type"), event.get("object") or {}
                        if etype == "ERROR":
                            if obj.get("code") == 410:
                                rv = None
                                break
                            raise ApiError(int(obj.get("code") or 500), obj, "WATCH", path)
                        new_rv = obj.get("metadata", {}).get("resourceVersion")
                        if new_rv:
                            rv = str(new_rv)
                        if etype == "BOOKMARK":
                            continue
                        uid = obj.get("metadata", {}).get("uid")
                        if etype == "DELETED":
                            known.pop(uid, None)
                        elif uid:
                            known[uid] = obj
                        await self._safe(handler, str(etype), obj)
                        if self._stopping:
                            return
                delay = 0.1
            except asyncio.CancelledError:
                raise
            except ApiError as e:
                if e.status == 410:
                    rv = None
                else:
                    log.warning("executor watch %s: %s", path, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except Exception as e:  # connection dropped etc.
                log.debug("executor watch %s interrupted: %r", path, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _safe(self, handler: Callable[[str, Obj], Awaitable[None]], etype: str, obj: Obj) -> None:
        try:
            await handler(etype, obj)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("executor handler failed for %s", obj.get("metadata", {}).get("name"))

    # ---------------------------------------------------------------- reading config objects

    async def _read(self, kind: str, ns: str, name: str) -> Obj | None:
        plural = {"Secret": "secrets", "ConfigMap": "configmaps"}[kind]
        return await self._api.get(_path("/api/v1", plural, ns, name))

    @staticmethod
    def _data_of(kind: str, obj: Obj) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        if kind == "Secret":
            for k, v in (obj.get("data") or {}).items():
                out[k] = base64.b64decode(v or "")
            for k, v in (obj.get("stringData") or {}).items():  # if the server didn't fold it
                out[k] = str(v).encode()
        else:
            for k, v in (obj.get("data") or {}).items():
                out[k] = str(v).encode()
            for k, v in (obj.get("binaryData") or {}).items():
                out[k] = base64.b64decode(v or "")
        return out

    async def _source_data(self, kind: str, ns: str, name: str, optional: bool) -> dict[str, bytes] | None:
        obj = await self._read(kind, ns, name)
        if obj is None:
            if optional:
                return None
            label = "secret" if kind == "Secret" else "configmap"
            raise _ConfigError("CreateContainerConfigError", f'{label} "{name}" not found')
        return self._data_of(kind, obj)

    # ---------------------------------------------------------------- pod preparation

    async def _prepare_volumes(self, run: _PodRun) -> None:
        run.volumes = {}
        vol_root = run.dir / "volumes"
        for vol in run.spec.get("volumes") or []:
            name = vol["name"]
            target = vol_root / name
            if "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                target = self.host_path_map.get(claim) or (self.workdir / "pvc" / run.namespace / claim)
                target.mkdir(parents=True, exist_ok=True)
            elif "hostPath" in vol:
                target = self.host_path_map.get(vol["hostPath"].get("path", "")) or target
                target.mkdir(parents=True, exist_ok=True)
            elif "configMap" in vol or "secret" in vol:
                kind = "ConfigMap" if "configMap" in vol else "Secret"
                src = vol["configMap"] if kind == "ConfigMap" else vol["secret"]
                src_name = src.get("name") if kind == "ConfigMap" else src.get("secretName")
                await self._fill(target, kind, run.namespace, src_name, src, src.get("defaultMode"))
            elif "projected" in vol:
                target.mkdir(parents=True, exist_ok=True)
                mode = vol["projected"].get("defaultMode")
                for source in vol["projected"].get("sources") or []:
                    for kind, key in (("ConfigMap", "configMap"), ("Secret", "secret")):
                        if key in source:
                            src = source[key]
                            await self._fill(target, kind, run.namespace, src.get("name"), src, mode)
            else:  # emptyDir and anything unknown
                target.mkdir(parents=True, exist_ok=True)
            run.volumes[name] = target

    async def _fill(
        self, target: Path, kind: str, ns: str, name: str, src: Obj, default_mode: int | None
    ) -> None:
        target.mkdir(parents=True, exist_ok=True)
        data = await self._source_data(kind, ns, name, bool(src.get("optional")))
        if data is None:
            return
        items = src.get("items")
        if items:
            files = []
            for item in items:
                if item["key"] not in data:
                    if src.get("optional"):
                        continue
                    raise _ConfigError(
                        "ContainerCreating",
                        f'MountVolume.SetUp failed: configmap/secret "{name}" has no key "{item["key"]}"',
                    )
                files.append((item["path"], data[item["key"]], item.get("mode", default_mode)))
        else:
            files = [(k, v, default_mode) for k, v in data.items()]
        for rel, content, mode in files:
            p = target / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content)
            if mode is not None:
                os.chmod(p, mode | 0o200)  # keep it writable for cleanup

    async def _env_of(self, run: _PodRun, container: Obj) -> dict[str, str]:
        env: dict[str, str] = {}
        for src in container.get("envFrom") or []:
            prefix = src.get("prefix", "")
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in src:
                    ref = src[key]
                    data = await self._source_data(
                        kind, run.namespace, ref["name"], bool(ref.get("optional"))
                    )
                    for k, v in (data or {}).items():
                        env[prefix + k] = v.decode(errors="replace")
        for item in container.get("env") or []:
            name = item["name"]
            if "valueFrom" in item:
                value = await self._value_from(run, container, item["valueFrom"])
                if value is None:
                    continue
                env[name] = value
            else:
                env[name] = expand_vars(item.get("value") or "", env)
        return env

    async def _value_from(self, run: _PodRun, container: Obj, vf: Obj) -> str | None:
        for kind, key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            if key in vf:
                ref = vf[key]
                optional = bool(ref.get("optional"))
                data = await self._source_data(kind, run.namespace, ref["name"], optional)
                if data is None:
                    return None
                if ref["key"] not in data:
                    if optional:
                        return None
                    label = "secret" if kind == "Secret" else "configmap"
                    raise _ConfigError(
                        "CreateContainerConfigError",
                        f"couldn't find key {ref['key']} in {label.capitalize()} {run.namespace}/{ref['name']}",
                    )
                return data[ref["key"]].decode(errors="replace")
        if "fieldRef" in vf:
            fp = vf["fieldRef"]["fieldPath"]
            meta = run.meta
            simple = {
                "metadata.name": run.name,
                "metadata.namespace": run.namespace,
                "metadata.uid": run.uid,
                "spec.nodeName": NODE_NAME,
                "spec.serviceAccountName": run.spec.get("serviceAccountName", "default"),
                "status.podIP": "127.0.0.1",
                "status.podIPs": "127.0.0.1",
                "status.hostIP": "127.0.0.1",
                "status.hostIPs": "127.0.0.1",
            }
            if fp in simple:
                return simple[fp]
            for section in ("labels", "annotations"):
                pre = f"metadata.{section}['"
                if fp.startswith(pre) and fp.endswith("']"):
                    return str((meta.get(section) or {}).get(fp[len(pre) : -2], ""))
            raise _ConfigError("CreateContainerConfigError", f"unsupported fieldRef {fp!r}")
        if "resourceFieldRef" in vf:
            ref = vf["resourceFieldRef"]
            target = container
            if ref.get("containerName"):
                for c in run.spec.get("containers") or []:
                    if c["name"] == ref["containerName"]:
                        target = c
            section, _, res = ref["resource"].partition(".")
            resources = target.get("resources") or {}
            raw = (resources.get(section) or {}).get(res) or (resources.get("requests") or {}).get(res)
            value = (
                _parse_quantity(raw)
                if raw is not None
                else (float(os.cpu_count() or 1) if res == "cpu" else float(8 * 2**30))
            )
            divisor = _parse_quantity(ref.get("divisor") or 1)
            return str(max(1, math.ceil(value / divisor)))
        return None

    def _resolve_argv(self, container: Obj, env: dict[str, str]) -> list[str]:
        command = list(container.get("command") or [])
        args = list(container.get("args") or [])
        if not command:
            image = container.get("image", "")
            entry = self.image_commands.get(image)
            if entry is None:
                bare = image.split("@", 1)[0]
                if ":" in bare.rsplit("/", 1)[-1]:
                    bare = bare.rsplit(":", 1)[0]
                entry = self.image_commands.get(bare)
            if entry is None:
                raise _StartError(
                    f"image {image!r} has no command and its entrypoint is unknown to the local "
                    "executor (set command:, or LocalExecutor(image_commands=...))"
                )
            command = list(entry)
        command = [expand_vars(c, env) for c in command]
        args = [expand_vars(a, env) for a in args]
        exe = command[0]
        base = os.path.basename(exe)
        candidate = self.python_bin_dir / base
        if base and candidate.is_file() and os.access(candidate, os.X_OK):
            resolved = str(candidate)
        elif os.path.isabs(exe) and os.access(exe, os.X_OK):
            resolved = exe
        else:
            found = shutil.which(base)
            if not found:
                raise _StartError(f'exec: "{exe}": executable file not found in $PATH')
            resolved = found
        return [resolved, *command[1:], *args]

    async def _prepare(
        self,
        run: _PodRun,
        container: Obj,
        port_map: dict[str, str] | None = None,
        port_env: str | None = None,
    ) -> _Prepared:
        cname = container["name"]
        home, tmp, work = run.dir / "home", run.dir / "tmp", run.dir / "work"
        for d in (home, tmp, work, run.dir / "logs"):
            d.mkdir(parents=True, exist_ok=True)
        term_file = run.dir / f"{cname}.termination-log"
        term_file.write_bytes(b"")
        log_file = run.dir / "logs" / f"{cname}.log"
        mounts: list[tuple[str, str]] = []
        for vm in container.get("volumeMounts") or []:
            local = run.volumes.get(vm["name"])
            if local is None:
                raise _ConfigError(
                    "CreateContainerConfigError", f"volume {vm['name']!r} not found in pod spec"
                )
            if vm.get("subPath"):
                local = local / vm["subPath"]
                local.mkdir(parents=True, exist_ok=True)
            mounts.append((vm["mountPath"], str(local)))
        term_path = container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH

        def rewrite(value: str) -> str:
            if value == term_path:
                return str(term_file)
            value = _rewrite_exact(value, {term_path: str(term_file)})
            value = rewrite_paths(value, mounts)
            if port_map:
                value = _rewrite_exact(value, port_map)
            return value

        cenv = await self._env_of(run, container)
        argv = self._resolve_argv(container, cenv)
        argv = [argv[0], *(rewrite(a) for a in argv[1:])]
        env = {
            "PATH": f"{self.python_bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
            "HOME": str(home),
            "TMPDIR": str(tmp),
            "HOSTNAME": run.name,
            "LANG": "C.UTF-8",
            **self.extra_env,
        }
        if port_env is not None:
            env["PORT"] = port_env
        env.update({k: rewrite(v) for k, v in cenv.items()})
        cwd = work
        if container.get("workingDir"):
            mapped = rewrite_paths(container["workingDir"], mounts)
            if mapped != container["workingDir"]:
                cwd = Path(mapped)
                cwd.mkdir(parents=True, exist_ok=True)
        return _Prepared(argv, env, cwd, term_file, log_file, container)

    async def _exec(self, run: _PodRun, prep: _Prepared, timeout: float | None = None) -> _Result:
        """Run one container process to completion. Cancellation kills it."""
        started = _now()
        with open(prep.log_file, "ab") as logf:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *prep.argv,
                    cwd=prep.cwd,
                    env=prep.env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=logf,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as e:
                return _Result(128, "StartError", str(e), started, _now())
        run.proc = proc
        self._pgids.add(proc.pid)
        pusher = asyncio.ensure_future(self._push_logs(run, prep)) if self.log_sink else None
        try:
            if timeout is None:
                code = await proc.wait()
            else:
                code = await asyncio.wait_for(proc.wait(), timeout)
        except (asyncio.CancelledError, TimeoutError):
            await _kill(proc, self.kill_grace)
            raise
        finally:
            run.proc = None
            self._pgids.discard(proc.pid)
            if pusher:
                pusher.cancel()
                await asyncio.wait({pusher})
                self._push_log_once(run, prep)
        return self._result(prep, code, started, proc.pid)

    def _push_log_once(self, run: _PodRun, prep: _Prepared) -> None:
        if self.log_sink and run.uid:  # Job Pods only (process-mode Deployments have no Pod)
            try:
                text = prep.log_file.read_text(errors="replace")
                self.log_sink(run.namespace, run.name, prep.container["name"], text)
            except Exception:
                log.exception("log sink failed")

    async def _push_logs(self, run: _PodRun, prep: _Prepared) -> None:
        size = -1
        while True:
            with contextlib.suppress(OSError):
                new = prep.log_file.stat().st_size
                if new != size:
                    size = new
                    self._push_log_once(run, prep)
            await asyncio.sleep(0.5)

    def _result(self, prep: _Prepared, code: int, started: str, pid: int) -> _Result:
        if code < 0:
            code = 128 - code
        try:
            raw = prep.termination_file.read_bytes()[:TERMINATION_MESSAGE_MAX]
        except OSError:
            raw = b""
        message = raw.decode(errors="replace")
        if (
            not message
            and code != 0
            and prep.container.get("terminationMessagePolicy") == "FallbackToLogsOnError"
            and prep.log_file.exists()
        ):
            tail = prep.log_file.read_bytes()[-FALLBACK_LOG_BYTES:]
            message = b"\n".join(tail.splitlines()[-FALLBACK_LOG_LINES:]).decode(errors="replace")
        return _Result(
            code, "Completed" if code == 0 else "Error", message, started, _now(), f"local://{pid}"
        )

    # ---------------------------------------------------------------- Jobs

    async def _on_job(self, etype: str, job: Obj) -> None:
        meta = job["metadata"]
        uid, ns = meta["uid"], meta.get("namespace")
        if not self._ns_ok(ns):
            return
        if etype == "DELETED" or meta.get("deletionTimestamp"):
            task = self._jobs.get(uid)
            if task and not task.done():
                self._job_cancel_reason[uid] = "deleted"
                task.cancel()
            return
        if uid in self._jobs or uid in self._jobs_done:
            return
        status = job.get("status") or {}
        if status.get("startTime") or any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in status.get("conditions") or []
        ):
            self._jobs_done.add(uid)  # someone else's (e.g. a previous executor's)
            return
        if (job.get("spec") or {}).get("suspend"):
            return
        task = asyncio.ensure_future(self._run_job(job))
        self._jobs[uid] = task
        task.add_done_callback(self._log_task_error)

    async def _job_status(self, job: Obj, status: Obj) -> None:
        m = job["metadata"]
        await self._api.merge_patch(_job_path(m["namespace"], m["name"], "status"), {"status": status})

    async def _run_job(self, job: Obj) -> None:
        meta, spec = job["metadata"], job.get("spec") or {}
        uid = meta["uid"]
        backoff_limit = spec.get("backoffLimit")
        backoff_limit = 6 if backoff_limit is None else int(backoff_limit)
        completions = int(spec.get("completions") or 1)
        deadline = spec.get("activeDeadlineSeconds")
        start_time = _now()
        counts = {"succeeded": 0, "failed": 0}
        current: dict[str, _PodRun | None] = {"pod": None}
        mode = self.mode

        async def attempts() -> tuple[str, str] | None:
            first = True
            while counts["succeeded"] < completions:
                run = await self._create_job_pod(job)
                current["pod"] = run
                status: Obj = {"active": 1, "ready": 0, **{k: v for k, v in counts.items() if v}}
                if first:
                    status["startTime"] = start_time
                    first = False
                await self._job_status(job, status)
                if mode == "instant":
                    result = await self._instant_pod(run, job)
                else:
                    result = await self._run_pod(run, on_running=lambda: self._job_status(job, {"ready": 1}))
                current["pod"] = None
                counts["succeeded" if result.exit_code == 0 else "failed"] += 1
                await self._job_status(
                    job, {"active": None, "ready": 0, **{k: v for k, v in counts.items() if v}}
                )
                if counts["failed"] > backoff_limit:
                    return "BackoffLimitExceeded", "Job has reached the specified backoff limit"
                if result.exit_code != 0 and self.backoff_seconds:
                    await asyncio.sleep(self.backoff_seconds * 2 ** (counts["failed"] - 1))
            return None

        try:
            if deadline is not None:
                try:
                    failure = await asyncio.wait_for(attempts(), float(deadline))
                except TimeoutError:
                    failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
                    run = current["pod"]
                    if run is not None:  # the Job controller deletes the active Pod
                        counts["failed"] += 1
                        with contextlib.suppress(ApiError):
                            await self._api.request("DELETE", _pod_path(run.namespace, run.name))
            else:
                failure = await attempts()
            now = _now()
            counts_patch = {k: v for k, v in counts.items() if v}
            if failure:
                reason, message = failure
                cond = {
                    "type": "Failed",
                    "status": "True",
                    "reason": reason,
                    "message": message,
                    "lastProbeTime": now,
                    "lastTransitionTime": now,
                }
                await self._job_status(
                    job, {"active": None, "ready": 0, "conditions": [cond], **counts_patch}
                )
            else:
                cond = {"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now}
                await self._job_status(
                    job,
                    {"active": None, "ready": 0, "conditions": [cond], "completionTime": now, **counts_patch},
                )
        except asyncio.CancelledError:
            reason = self._job_cancel_reason.get(uid, "cancelled")
            log.info("job %s/%s: %s", meta.get("namespace"), meta["name"], reason)
            raise
        finally:
            self._jobs_done.add(uid)
            self._jobs.pop(uid, None)

    async def _create_job_pod(self, job: Obj) -> _PodRun:
        meta = job["metadata"]
        ns, job_name, uid = meta["namespace"], meta["name"], meta["uid"]
        template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
        pmeta = template.get("metadata") or {}
        labels = dict(pmeta.get("labels") or {})
        labels.update(
            {
                "job-name": job_name,
                "controller-uid": uid,
                "batch.kubernetes.io/job-name": job_name,
                "batch.kubernetes.io/controller-uid": uid,
            }
        )
        pspec = template.get("spec") or {}
        pspec.setdefault("restartPolicy", "Never")
        pspec["nodeName"] = NODE_NAME
        for _ in range(10):
            name = f"{job_name}-{_rand()}"
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "labels": labels,
                    "annotations": dict(pmeta.get("annotations") or {}),
                    "ownerReferences": [
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": job_name,
                            "uid": uid,
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": pspec,
            }
            run = _PodRun(ns, name, "", body["metadata"], pspec, self.workdir / ns / name)
            self._register_logs(run)  # before the Pod is visible, so logs() never misses it
            try:
                pod = await self._api.request("POST", _pod_path(ns), body)
                break
            except ApiError as e:
                with self._lock:
                    self._pod_logs.pop((ns, name), None)
                if e.status != 409:
                    raise
        else:
            raise RuntimeError(f"could not create a pod for job {ns}/{job_name}")
        run.uid, run.meta, run.spec = pod["metadata"]["uid"], pod["metadata"], pod.get("spec") or pspec
        await self._pod_status(run, {"phase": "Pending", "conditions": [self._cond("PodScheduled", "True")]})
        return run

    @staticmethod
    def _cond(ctype: str, status: str, reason: str | None = None) -> Obj:
        c: Obj = {"type": ctype, "status": status, "lastProbeTime": None, "lastTransitionTime": _now()}
        if reason:
            c["reason"] = reason
        return c

    async def _pod_status(self, run: _PodRun, status: Obj) -> None:
        status.setdefault("hostIP", "127.0.0.1")
        await self._api.merge_patch(_pod_path(run.namespace, run.name, "status"), {"status": status})

    def _cstatus(
        self, container: Obj, state: Obj, ready: bool = False, restarts: int = 0, cid: str = ""
    ) -> Obj:
        s: Obj = {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "ready": ready,
            "started": "running" in state,
            "restartCount": restarts,
            "state": state,
        }
        if cid:
            s["containerID"] = cid
        return s

    @staticmethod
    def _terminated(res: _Result) -> Obj:
        t: Obj = {
            "exitCode": res.exit_code,
            "reason": res.reason,
            "startedAt": res.started_at,
            "finishedAt": res.finished_at,
        }
        if res.message:
            t["message"] = res.message
        if res.container_id:
            t["containerID"] = res.container_id
        return {"terminated": t}

    def _register_logs(self, run: _PodRun) -> None:
        containers = run.spec.get("containers") or []
        logs = {
            c["name"]: run.dir / "logs" / f"{c['name']}.log"
            for c in [*(run.spec.get("initContainers") or []), *containers]
        }
        if containers:
            logs["__main__"] = logs[containers[0]["name"]]
        for p in logs.values():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch()
        run.container_logs = logs
        with self._lock:
            self._pod_logs[(run.namespace, run.name)] = logs

    async def _wait_config(self, run: _PodRun, main: Obj, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Retry ``fn`` while it raises _ConfigError, reporting the waiting reason on the Pod."""
        reported = None
        while True:
            try:
                return await fn()
            except _ConfigError as e:
                if reported != (e.reason, e.message):
                    reported = (e.reason, e.message)
                    waiting = {"waiting": {"reason": e.reason, "message": e.message}}
                    await self._pod_status(
                        run, {"phase": "Pending", "containerStatuses": [self._cstatus(main, waiting)]}
                    )
                await asyncio.sleep(self.retry_interval)

    async def _run_pod(self, run: _PodRun, on_running: Callable[[], Awaitable[Any]] | None = None) -> _Result:
        """Run a Job Pod: init containers, then the first container. Writes Pod status."""
        main = (run.spec.get("containers") or [])[0]
        pod_start = _now()
        running = False
        try:
            await self._wait_config(run, main, lambda: self._prepare_volumes(run))
            init_statuses: list[Obj] = []
            for ic in run.spec.get("initContainers") or []:
                try:
                    prep = await self._wait_config(run, main, lambda ic=ic: self._prepare(run, ic))
                    res = await self._exec(run, prep)
                except _StartError as e:
                    res = _Result(128, "StartError", e.message, _now(), _now())
                init_statuses.append(self._cstatus(ic, self._terminated(res)))
                if res.exit_code != 0:
                    waiting = {"waiting": {"reason": "PodInitializing"}}
                    await self._pod_status(
                        run,
                        {
                            "phase": "Failed",
                            "startTime": pod_start,
                            "initContainerStatuses": init_statuses,
                            "containerStatuses": [self._cstatus(main, waiting)],
                            "conditions": [
                                self._cond("Initialized", "False", "PodFailed"),
                                self._cond("Ready", "False", "PodFailed"),
                            ],
                        },
                    )
                    return res
            try:
                prep = await self._wait_config(run, main, lambda: self._prepare(run, main))
            except _StartError as e:
                res = _Result(128, "StartError", e.message, _now(), _now())
            else:
                state = {"running": {"startedAt": _now()}}
                await self._pod_status(
                    run,
                    {
                        "phase": "Running",
                        "startTime": pod_start,
                        "podIP": "127.0.0.1",
                        "podIPs": [{"ip": "127.0.0.1"}],
                        "initContainerStatuses": init_statuses or None,
                        "containerStatuses": [self._cstatus(main, state, ready=True)],
                        "conditions": [
                            self._cond("PodScheduled", "True"),
                            self._cond("Initialized", "True"),
                            self._cond("ContainersReady", "True"),
                            self._cond("Ready", "True"),
                        ],
                    },
                )
                running = True
                if on_running:
                    await on_running()
                res = await self._exec(run, prep)
        except asyncio.CancelledError:
            if not self._stopping and running:
                res = _Result(143, "Error", "", pod_start, _now())
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._finish_pod(run, main, res, pod_start))
            raise
        await self._finish_pod(run, main, res, pod_start)
        return res

    async def _finish_pod(self, run: _PodRun, main: Obj, res: _Result, pod_start: str) -> None:
        reason = "PodCompleted" if res.exit_code == 0 else "PodFailed"
        await self._pod_status(
            run,
            {
                "phase": "Succeeded" if res.exit_code == 0 else "Failed",
                "startTime": pod_start,
                "containerStatuses": [self._cstatus(main, self._terminated(res), cid=res.container_id)],
                "conditions": [
                    self._cond("PodScheduled", "True"),
                    self._cond("Initialized", "True"),
                    self._cond("ContainersReady", "False", reason),
                    self._cond("Ready", "False", reason),
                ],
            },
        )

    async def _instant_pod(self, run: _PodRun, job: Obj) -> _Result:
        main = (run.spec.get("containers") or [{"name": "main"}])[0]
        started = _now()
        code, message = self.instant_result(job)
        res = _Result(
            int(code),
            "Completed" if code == 0 else "Error",
            message or "",
            started,
            _now(),
            "local://instant",
        )
        await self._finish_pod(run, main, res, started)
        return res

    # ---------------------------------------------------------------- Deployments

    def _wants_process(self, d: Obj) -> bool:
        rd = self.run_deployments
        return bool(rd(d)) if callable(rd) else bool(rd)

    async def _on_deployment(self, etype: str, d: Obj) -> None:
        meta = d["metadata"]
        uid, ns, name = meta["uid"], meta.get("namespace"), meta["name"]
        if not self._ns_ok(ns):
            return
        if etype == "DELETED" or meta.get("deletionTimestamp"):
            runner = self._deploys.pop(uid, None)
            if runner:
                await runner.stop()
            return
        runner = self._deploys.get(uid)
        if runner is None and self._wants_process(d):
            runner = _DeploymentRunner(self, d)
            self._deploys[uid] = runner
            with self._lock:
                self._deploy_ports[(ns, name)] = runner.ports
                self._deploy_logs[(ns, name)] = runner.log_file
        if runner is not None:
            await runner.update(d)
            return
        replicas = _replicas(d)
        status = d.get("status") or {}
        gen = meta.get("generation", 1)
        if (
            status.get("observedGeneration") == gen
            and (status.get("readyReplicas") or 0) == replicas
            and (status.get("availableReplicas") or 0) == replicas
        ):
            return
        await self._deployment_status(d, ready=True)

    async def _deployment_status(self, d: Obj, ready: bool) -> None:
        meta = d["metadata"]
        replicas = _replicas(d)
        ready_n = replicas if ready else 0
        old = {c.get("type"): c for c in (d.get("status") or {}).get("conditions") or []}
        now = _now()

        def cond(ctype: str, status: str, reason: str, message: str) -> Obj:
            prev = old.get(ctype) or {}
            ltt = prev.get("lastTransitionTime") if prev.get("status") == status else None
            return {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": message,
                "lastUpdateTime": now,
                "lastTransitionTime": ltt or now,
            }

        rs = f"{meta['name']}-{_template_hash(d)[:10]}"
        if ready:
            available = cond(
                "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."
            )
            progressing = cond(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs}" has successfully progressed.',
            )
        else:
            available = cond(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
            progressing = cond(
                "Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{rs}" is progressing.'
            )
        status = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": replicas or None,
            "updatedReplicas": replicas or None,
            "readyReplicas": ready_n or None,
            "availableReplicas": ready_n or None,
            "unavailableReplicas": (replicas - ready_n) or None,
            "conditions": [available, progressing],
        }
        await self._api.merge_patch(
            _deploy_path(meta["namespace"], meta["name"], "status"), {"status": status}
        )


def _replicas(d: Obj) -> int:
    r = (d.get("spec") or {}).get("replicas")
    return 1 if r is None else int(r)


def _template_hash(d: Obj) -> str:
    raw = json.dumps((d.get("spec") or {}).get("template") or {}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()


async def _kill(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` s (or if interrupted)."""
    if proc.returncode is not None:
        _killpg(proc.pid, signal.SIGKILL)  # leftover children of an exited leader
        return
    try:
        _killpg(proc.pid, signal.SIGTERM)
        await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
    except TimeoutError:
        pass
    finally:
        _killpg(proc.pid, signal.SIGKILL)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class _DeploymentRunner:
    """One long-running process standing in for a Deployment's replicas."""

    def __init__(self, ex: LocalExecutor, d: Obj) -> None:
        self.ex = ex
        meta = d["metadata"]
        self.namespace, self.name = meta["namespace"], meta["name"]
        self.dir = ex.workdir / self.namespace / f"deploy-{self.name}"
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        self.log_file = self.dir / "logs" / "main.log"
        self.log_file.touch()
        self.ports: dict[int, int] = {}
        self.latest = d
        self.template_hash: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.ready = False
        self.generation = 0

    async def update(self, d: Obj) -> None:
        self.latest = d
        h = _template_hash(d)
        want_running = _replicas(d) > 0
        if h != self.template_hash or (self.task is None) == want_running:
            await self._stop_task()
            self.template_hash = h
            self.ready = False
            if want_running:
                self.generation += 1
                self.task = asyncio.ensure_future(self._run(d, self.generation))
                self.task.add_done_callback(LocalExecutor._log_task_error)
        await self._write_status()

    async def _write_status(self) -> None:
        d = self.latest
        status = d.get("status") or {}
        replicas = _replicas(d)
        want_ready = replicas if self.ready else 0
        if (
            status.get("observedGeneration") == d["metadata"].get("generation", 1)
            and (status.get("readyReplicas") or 0) == want_ready
            and (status.get("replicas") or 0) == replicas
        ):
            return
        await self.ex._deployment_status(d, ready=self.ready or replicas == 0)

    async def _set_ready(self, ready: bool) -> None:
        self.ready = ready
        fresh = await self.ex._api.get(_deploy_path(self.namespace, self.name))
        if fresh is not None:
            self.latest = fresh
            await self._write_status()

    async def _stop_task(self) -> None:
        if self.task and not self.task.done():
            self.task.cancel()
            # asyncio.wait: neither swallows our own cancellation nor raises the task's error
            await asyncio.wait({self.task})
        self.task = None

    async def stop(self) -> None:
        await self._stop_task()

    async def _run(self, d: Obj, generation: int) -> None:
        ex = self.ex
        template = copy.deepcopy((d.get("spec") or {}).get("template") or {})
        pspec = template.get("spec") or {}
        pmeta = template.get("metadata") or {}
        main = (pspec.get("containers") or [])[0]
        for p in main.get("ports") or []:
            cp = int(p["containerPort"])
            if cp not in self.ports:
                self.ports[cp] = free_port()
        port_map = {str(cp): str(lp) for cp, lp in self.ports.items()}
        declared = [int(p["containerPort"]) for p in main.get("ports") or []]
        port_env = str(self.ports[declared[0]]) if declared else None
        delay = 0.5
        restarts = 0
        while True:
            pod_name = f"{self.name}-{_template_hash(d)[:10]}-{_rand()}"
            run = _PodRun(self.namespace, pod_name, "", pmeta, pspec, self.dir / f"gen{generation}")
            run.dir.mkdir(parents=True, exist_ok=True)
            try:
                await self._prepare_volumes_retry(run)
                ok = True
                for ic in pspec.get("initContainers") or []:
                    prep = await self._prepare_retry(run, ic, None, None)
                    prep.log_file = self.log_file
                    res = await ex._exec(run, prep)
                    if res.exit_code != 0:
                        log.warning(
                            "deployment %s/%s init container %s exited %s",
                            self.namespace,
                            self.name,
                            ic["name"],
                            res.exit_code,
                        )
                        ok = False
                        break
                if ok:
                    prep = await self._prepare_retry(run, main, port_map, port_env)
                    prep.log_file = self.log_file
                    await self._serve(run, prep, main)
            except _StartError as e:
                with open(self.log_file, "a") as f:
                    f.write(f"[local-executor] start error: {e.message}\n")
            if self.ready:
                await self._set_ready(False)
            restarts += 1
            await asyncio.sleep(min(delay * 2 ** min(restarts - 1, 5), 10.0))

    async def _prepare_volumes_retry(self, run: _PodRun) -> None:
        while True:
            try:
                return await self.ex._prepare_volumes(run)
            except _ConfigError as e:
                log.info("deployment %s/%s waiting: %s", self.namespace, self.name, e)
                await asyncio.sleep(self.ex.retry_interval)

    async def _prepare_retry(
        self, run: _PodRun, c: Obj, port_map: dict[str, str] | None, port_env: str | None
    ) -> _Prepared:
        while True:
            try:
                return await self.ex._prepare(run, c, port_map, port_env)
            except _ConfigError as e:
                log.info("deployment %s/%s waiting: %s", self.namespace, self.name, e)
                await asyncio.sleep(self.ex.retry_interval)

    async def _serve(self, run: _PodRun, prep: _Prepared, main: Obj) -> None:
        """Start the main process, probe readiness, return when it exits."""
        ex = self.ex
        with open(prep.log_file, "ab") as logf:
            proc = await asyncio.create_subprocess_exec(
                *prep.argv,
                cwd=prep.cwd,
                env=prep.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logf,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        run.proc = proc
        ex._pgids.add(proc.pid)
        prober = asyncio.ensure_future(self._probe(run, prep, main))
        try:
            code = await proc.wait()
            with open(self.log_file, "a") as f:
                f.write(f"[local-executor] process exited with code {code}\n")
        finally:
            prober.cancel()
            await asyncio.wait({prober})
            await _kill(proc, ex.kill_grace)
            run.proc = None
            ex._pgids.discard(proc.pid)

    async def _probe(self, run: _PodRun, prep: _Prepared, main: Obj) -> None:
        probe = main.get("readinessProbe")
        deadline = time.monotonic() + self.ex.readiness_timeout
        while time.monotonic() < deadline:
            if await self._probe_once(run, prep, main, probe):
                await self._set_ready(True)
                return
            await asyncio.sleep(0.1)
        log.warning("deployment %s/%s never became ready", self.namespace, self.name)

    def _local_port(self, main: Obj, port: int | str) -> int | None:
        if isinstance(port, str) and not port.isdigit():
            for p in main.get("ports") or []:
                if p.get("name") == port:
                    port = int(p["containerPort"])
                    break
            else:
                return None
        port = int(port)
        return self.ports.get(port, port)

    async def _probe_once(self, run: _PodRun, prep: _Prepared, main: Obj, probe: Obj | None) -> bool:
        if not probe:
            return True
        timeout = float(probe.get("timeoutSeconds") or 1)
        try:
            if "httpGet" in probe:
                hg = probe["httpGet"]
                port = self._local_port(main, hg.get("port", 80))
                if port is None:
                    return False
                scheme = (hg.get("scheme") or "HTTP").lower()
                path = hg.get("path") or "/"
                headers = {h["name"]: h["value"] for h in hg.get("httpHeaders") or []}
                async with (
                    aiohttp.ClientSession() as s,
                    s.get(
                        f"{scheme}://127.0.0.1:{port}{path}",
                        headers=headers,
                        ssl=False,
                        timeout=aiohttp.ClientTimeout(total=timeout),
                        allow_redirects=False,
                    ) as r,
                ):
                    return 200 <= r.status < 400
            if "tcpSocket" in probe:
                port = self._local_port(main, probe["tcpSocket"].get("port", 80))
                if port is None:
                    return False
                _, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
                w.close()
                return True
            if "exec" in probe:
                cmd = probe["exec"].get("command") or []
                argv = self.ex._resolve_argv({"command": cmd}, prep.env)
                p = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=prep.cwd,
                    env=prep.env,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                try:
                    return await asyncio.wait_for(p.wait(), timeout) == 0
                except TimeoutError:
                    p.kill()
                    return False
        except (OSError, aiohttp.ClientError, TimeoutError, _StartError):
            return False
        return True
