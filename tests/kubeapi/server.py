"""The emulator's HTTP server (aiohttp): Kubernetes REST paths, discovery, watch, Table output,
fault injection and request counting.

Async use::

    emu = Emulator()
    url = await emu.start()
    emu.write_kubeconfig(tmp_path / "kubeconfig")
    ...
    await emu.stop()

Sync use (its own thread and event loop)::

    emu = EmulatorThread()
    url = emu.start()
    emu.faults.fail_next("PATCH", r"/trainingruns/", 500)
    emu.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import logging
import pathlib
import threading
import time
import traceback
from typing import Any

import yaml
from aiohttp import web

from tests.localcluster.faults import Counters, Faults

from .api import Api, ApiError, Filter, WriteOptions, bad_request, parse_field_selector, parse_label_selector
from .cel import CELUnsupported
from .resources import GROUP_ORDER, Registry, ResourceType
from .store import Event, Gone, Store
from .table import to_table

log = logging.getLogger("tests.kubeapi")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_CRD_DIR = REPO_ROOT / "crds"
KUBE_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-dockyard-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def _permissive_crd(
    group: str,
    plural: str,
    kind: str,
    versions: list[str],
    namespaced: bool = True,
    short_names: list[str] | None = None,
    categories: list[str] | None = None,
    status: bool = True,
) -> dict[str, Any]:
    schema = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced" if namespaced else "Cluster",
            "names": {
                "plural": plural,
                "singular": kind.lower(),
                "kind": kind,
                "listKind": f"{kind}List",
                "shortNames": short_names or [],
                "categories": categories or [],
            },
            "versions": [
                {
                    "name": v,
                    "served": True,
                    "storage": i == len(versions) - 1,
                    "schema": schema,
                    **({"subresources": {"status": {}}} if status else {}),
                }
                for i, v in enumerate(versions)
            ],
        },
    }


KOPF_CRDS = [
    _permissive_crd(
        "kopf.dev", "clusterkopfpeerings", "ClusterKopfPeering", ["v1"], namespaced=False, status=False
    ),
    _permissive_crd("kopf.dev", "kopfpeerings", "KopfPeering", ["v1"], status=False),
]
FOREIGN_CRDS = [
    _permissive_crd(
        "gateway.networking.k8s.io", "httproutes", "HTTPRoute", ["v1"], categories=["gateway-api"]
    ),
    _permissive_crd(
        "networking.istio.io",
        "virtualservices",
        "VirtualService",
        ["v1beta1", "v1"],
        short_names=["vs"],
        categories=["istio-io", "networking-istio-io"],
    ),
    _permissive_crd(
        "machinelearning.seldon.io", "seldondeployments", "SeldonDeployment", ["v1"], short_names=["sdep"]
    ),
]


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_crd_file_cache: dict[tuple[str, float], list[dict[str, Any]]] = {}


def load_crd_files(path: pathlib.Path) -> list[dict[str, Any]]:
    """CRDs found in a directory (``*.yaml``/``*.yml``) or file; parsed files are cached by mtime."""
    files = sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path]
    crds = []
    for f in files:
        key = (str(f), f.stat().st_mtime)
        if key not in _crd_file_cache:
            docs = list(yaml.load_all(f.read_text(), Loader=_YAML_LOADER))  # noqa: S506 - a safe loader
            _crd_file_cache[key] = [
                d for d in docs if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"
            ]
        crds += copy.deepcopy(_crd_file_cache[key])
    return crds


class _Route:
    def __init__(
        self, rt: ResourceType, namespace: str | None, name: str | None, sub: str, watch: bool
    ) -> None:
        self.rt, self.namespace, self.name, self.sub, self.watch = rt, namespace, name, sub, watch


class Emulator:
    """A Kubernetes API server emulator on loopback.

    :param crd_dirs: directories (or files) of CRD YAML loaded at start (default: the repo's ``crds/``).
    :param history_limit: watch events retained; older resourceVersions get 410 Gone.
    :param foreign_crds: preload permissive HTTPRoute, VirtualService and SeldonDeployment CRDs.
    :param gc: run the garbage collector / namespace controller in the background.
    :param bookmark_interval: seconds between BOOKMARK events on watches that allow them.
    """

    def __init__(
        self,
        crd_dirs: list[pathlib.Path] | None = None,
        history_limit: int = 1000,
        foreign_crds: bool = True,
        gc: bool = True,
        bookmark_interval: float = 1.0,
        default_watch_timeout: float = 1800.0,
    ) -> None:
        self.crd_dirs = [pathlib.Path(p) for p in (crd_dirs if crd_dirs is not None else [DEFAULT_CRD_DIR])]
        self.store = Store(history_limit)
        self.registry = Registry()
        self.faults = Faults()
        self.counters = Counters()
        self.gc_enabled = gc
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.errors: list[str] = []  # unexpected server-side exceptions (tracebacks), for tests to assert on
        # served at /api/v1/namespaces/{ns}/pods/{name}/log; set with set_pod_log()
        self.pod_logs: dict[tuple[str, str, str], str] = {}
        self.url: str = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._gc_event: asyncio.Event | None = None
        self._gc_task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._watch_tasks: set[asyncio.Task[Any]] = set()
        self.api = Api(self.store, self.registry, on_change=self._wake_gc)
        self.faults._register(self.store.close_all_watches, self.store.expire_history)
        for crd in KOPF_CRDS + (FOREIGN_CRDS if foreign_crds else []):
            self.install_crd(crd)
        for d in self.crd_dirs:
            for crd in load_crd_files(d):
                self.install_crd(crd)

    # -- CRDs -----------------------------------------------------------------------------
    def install_crd(self, crd: dict[str, Any]) -> dict[str, Any]:
        """Create (or replace) a CRD, as ``kubectl apply`` of it would. Thread-safe."""
        rt = self.registry.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        assert rt is not None
        name = crd["metadata"]["name"]
        opts = WriteOptions(field_manager="dockyard-emulator")
        with self.store.lock:
            existing = self.store.get(rt.storage_key, "", name)
            body = copy.deepcopy(crd)
            body.setdefault("metadata", {}).pop("resourceVersion", None)
            if existing is None:
                return self.api.create(rt, None, body, opts).obj
            body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            return self.api.update(rt, None, name, body, opts).obj

    def delete_crd(self, name: str) -> None:
        """Delete a CRD (and all its objects); the kind disappears from discovery. Thread-safe."""
        rt = self.registry.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        assert rt is not None
        self.api.delete(rt, None, name, {})

    def set_pod_log(self, namespace: str, pod: str, container: str, text: str) -> None:
        """Set what ``GET .../pods/{pod}/log?container=...`` returns (kubelet's job). Thread-safe."""
        self.pod_logs[(namespace, pod, container)] = text

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._loop = asyncio.get_running_loop()
        self._gc_event = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[])
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        actual = sockets[0].getsockname()[1]
        self.url = f"http://{host}:{actual}"
        if self.gc_enabled:
            self._gc_task = asyncio.create_task(self._gc_loop())
        return self.url

    async def stop(self) -> None:
        self.store.close_all_watches()
        if self._gc_task:
            self._gc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._gc_task
        for t in list(self._watch_tasks):
            t.cancel()
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    def write_kubeconfig(self, path: pathlib.Path | str, namespace: str = "default") -> pathlib.Path:
        return write_kubeconfig(self.url, path, namespace)

    # -- GC -------------------------------------------------------------------------------
    def _wake_gc(self) -> None:
        loop, ev = self._loop, self._gc_event
        if loop is not None and ev is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ev.set)

    async def _gc_loop(self) -> None:
        assert self._gc_event is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gc_event.wait(), timeout=5.0)  # woken by deletes / ownerRefs
            self._gc_event.clear()
            try:
                for _ in range(100):
                    if not self.api.gc_pass():
                        break
            except Exception:
                self.errors.append(traceback.format_exc())
                log.exception("garbage collector failed")

    # -- HTTP -----------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.method.upper()
        path_qs = request.path_qs
        delay = self.faults.latency(method, path_qs)
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            segs = [s for s in request.path.split("/") if s]
            route = self._route(segs)
            if route is None:
                return await self._non_resource(request, segs)
            verb, resource = self._verb(method, route)
            if verb in ("get", "list") and (route.watch or request.query.get("watch") in ("true", "1")):
                verb = "watch"
            self.counters.inc(verb, resource)
            failure = self.faults.take_failure(method, path_qs)
            if failure is not None:
                raise _injected(*failure)
            return await self._resource(request, route, verb)
        except ApiError as e:
            return _status_response(e)
        except CELUnsupported as e:
            self.errors.append(str(e))
            log.error("%s", e)
            return _status_response(ApiError(500, "InternalError", f"emulator limitation: {e}"))
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:
            tb = traceback.format_exc()
            self.errors.append(tb)
            log.error("emulator internal error on %s %s\n%s", method, path_qs, tb)
            return _status_response(ApiError(500, "InternalError", f"emulator internal error: {e!r}"))

    def _route(self, segs: list[str]) -> _Route | None:
        if not segs or segs[0] not in ("api", "apis"):
            return None
        if segs[0] == "api":
            if len(segs) < 3:
                return None
            group, version, rest = "", segs[1], segs[2:]
        else:
            if len(segs) < 4:
                return None
            group, version, rest = segs[1], segs[2], segs[3:]
        watch = False
        if rest and rest[0] == "watch":
            watch, rest = True, rest[1:]
        if not rest:
            return None
        namespace = None
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = "/".join(rest[2:]) if len(rest) > 2 else ""
        rt = self.registry.get(group, version, plural)
        if rt is None:
            raise ApiError(
                404,
                "NotFound",
                "the server could not find the requested resource",
                {"group": group, "kind": plural},
            )
        if (namespace is not None and not rt.namespaced) or (
            name is not None and rt.namespaced and namespace is None
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if (
            sub
            and sub != "status"
            and not (rt.plural == "namespaces" and sub == "finalize")
            and not (rt.group == "" and rt.plural == "pods" and sub == "log")
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub == "status" and not rt.status_subresource:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return _Route(rt, namespace, name, sub, watch)

    @staticmethod
    def _verb(method: str, route: _Route) -> tuple[str, str]:
        resource = route.rt.plural + (f"/{route.sub}" if route.sub else "")
        if method == "GET":
            verb = "get" if route.name else "list"
        elif method == "POST":
            verb = "create"
        elif method == "PUT":
            verb = "update"
        elif method == "PATCH":
            verb = "patch"
        elif method == "DELETE":
            verb = "delete" if route.name else "deletecollection"
        else:
            verb = method.lower()
        return verb, resource

    # -- non-resource endpoints -----------------------------------------------------------
    async def _non_resource(self, request: web.Request, segs: list[str]) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        path = "/" + "/".join(segs)
        if path == "/version":
            return _json(KUBE_VERSION)
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/openapi/v3":
            return _json(self._openapi_root())
        if segs[:2] == ["openapi", "v3"] and len(segs) >= 4:
            doc = self._openapi_gv("/".join(segs[2:]))
            if doc is not None:
                return _json(doc)
        if path == "/api":
            return _json(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": self.url.removeprefix("http://")}
                    ],
                }
            )
        if path == "/apis":
            groups = self.registry.groups()
            ordered = sorted(
                (g for g in groups if g),
                key=lambda g: (GROUP_ORDER.index(g) if g in GROUP_ORDER else len(GROUP_ORDER), g),
            )
            return _json(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [_api_group(g, groups[g]) for g in ordered],
                }
            )
        if len(segs) == 2 and segs[0] == "apis":
            groups = self.registry.groups()
            if segs[1] not in groups:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json({"kind": "APIGroup", "apiVersion": "v1", **_api_group(segs[1], groups[segs[1]])})
        if (len(segs) == 2 and segs[0] == "api") or (len(segs) == 3 and segs[0] == "apis"):
            group = "" if segs[0] == "api" else segs[1]
            version = segs[-1]
            rts = self.registry.resources_in(group, version)
            if not rts:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            resources = []
            for rt in sorted(rts, key=lambda r: r.plural):
                resources.append(rt.api_resource())
                if rt.status_subresource:
                    resources.append(
                        {
                            "name": f"{rt.plural}/status",
                            "singularName": "",
                            "namespaced": rt.namespaced,
                            "kind": rt.kind,
                            "verbs": ["get", "patch", "update"],
                        }
                    )
            return _json(
                {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": f"{group}/{version}" if group else version,
                    "resources": resources,
                }
            )
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    # -- OpenAPI v3 (enough for kubectl: fieldValidation support and `kubectl explain` of CRDs) --
    def _openapi_root(self) -> dict[str, Any]:
        paths = {}
        for group, versions in self.registry.groups().items():
            for v in versions:
                gv = f"api/{v}" if not group else f"apis/{group}/{v}"
                doc = self._openapi_gv(gv) or {}
                digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()
                paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
        return {"paths": paths}

    def _openapi_gv(self, gv: str) -> dict[str, Any] | None:
        parts = gv.split("/")
        if parts[0] == "api" and len(parts) == 2:
            group, version = "", parts[1]
        elif parts[0] == "apis" and len(parts) == 3:
            group, version = parts[1], parts[2]
        else:
            return None
        rts = self.registry.resources_in(group, version)
        if not rts:
            return None
        params = [
            {"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
            for n in ("dryRun", "fieldManager", "fieldValidation", "force")
        ]
        paths: dict[str, Any] = {}
        schemas: dict[str, Any] = {}
        prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
        for rt in rts:
            gvk = {"group": group, "version": version, "kind": rt.kind}
            ns = "/namespaces/{namespace}" if rt.namespaced else ""
            ref_name = (
                ".".join(reversed(group.split("."))) + f".{version}.{rt.kind}"
                if group
                else f"io.k8s.api.core.{version}.{rt.kind}"
            )
            ok = {
                "200": {
                    "description": "OK",
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref_name}"}}},
                }
            }
            op = {"x-kubernetes-group-version-kind": gvk, "parameters": params, "responses": ok}
            paths[f"{prefix}{ns}/{rt.plural}/{{name}}"] = {
                "get": {"x-kubernetes-group-version-kind": gvk, "responses": ok},
                "put": dict(op),
                "patch": dict(op),
                "delete": {"x-kubernetes-group-version-kind": gvk, "responses": ok},
            }
            paths[f"{prefix}{ns}/{rt.plural}"] = {
                "post": dict(op),
                "get": {"x-kubernetes-group-version-kind": gvk, "responses": ok},
            }
            schema: dict[str, Any] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            if rt.crd is not None:
                for v in rt.crd["spec"].get("versions") or []:
                    if v.get("name") == version:
                        schema = copy.deepcopy((v.get("schema") or {}).get("openAPIV3Schema") or schema)
            schema["x-kubernetes-group-version-kind"] = [gvk]
            schemas[ref_name] = schema
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": KUBE_VERSION["gitVersion"]},
            "paths": paths,
            "components": {"schemas": schemas},
        }

    # -- resources ------------------------------------------------------------------------
    async def _resource(self, request: web.Request, route: _Route, verb: str) -> web.StreamResponse:
        q = request.query
        rt = route.rt
        accept = request.headers.get("Accept", "")
        as_table = "as=Table" in accept
        include_object = q.get("includeObject", "PartialObjectMetadata")
        method = request.method.upper()
        opts = WriteOptions(
            field_manager=q.get("fieldManager"),
            dry_run=q.get("dryRun") == "All",
            field_validation=q.get("fieldValidation", "Warn"),
            force=q.get("force") == "true",
            user_agent=request.headers.get("User-Agent", ""),
        )
        if opts.field_validation not in ("Strict", "Warn", "Ignore"):
            raise bad_request(f"fieldValidation parameter unsupported: {opts.field_validation}")
        if route.sub == "log":
            if method != "GET":
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            pod = self.api.get(rt, route.namespace, route.name or "")
            containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
            container = q.get("container") or (containers[0] if len(containers) == 1 else None)
            if container is None:
                raise bad_request(
                    f"a container name must be specified for pod {route.name}, choose one of: {containers}"
                )
            text = self.pod_logs.get((route.namespace or "", route.name or "", container), "")
            if "tailLines" in q:
                lines = text.splitlines(keepends=True)
                text = "".join(lines[-int(q["tailLines"]) :]) if int(q["tailLines"]) > 0 else ""
            return web.Response(text=text, content_type="text/plain")
        if method == "GET":
            if route.name is not None and not route.watch:
                obj = self.api.get(rt, route.namespace, route.name)
                if as_table:
                    return _json(to_table(rt, [obj], None, include_object))
                return _json(obj)
            flt = Filter(
                namespace=route.namespace,
                labels=parse_label_selector(q.get("labelSelector")),
                fields=parse_field_selector(rt, q.get("fieldSelector")),
            )
            if route.name is not None:
                flt.fields.append(("metadata.name", "=", route.name))
            if route.watch or q.get("watch") in ("true", "1"):
                return await self._watch(request, route, flt, as_table, include_object)
            self._check_list_rv(q)
            items, rv = self.api.list(rt, flt)
            if as_table:
                return _json(to_table(rt, items, str(rv), include_object))
            return _json(
                {
                    "apiVersion": rt.api_version,
                    "kind": rt.list_kind,
                    "metadata": {"resourceVersion": str(rv)},
                    "items": items,
                }
            )
        if method == "POST":
            if route.name is not None:
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            if rt.namespaced and route.namespace is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            body = await _read_body(request)
            res = self.api.create(rt, route.namespace, body, opts, route.sub)
            return _json(res.obj, status=201, warnings=res.warnings)
        if route.name is None and method in ("PUT", "PATCH"):
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        if method == "PUT":
            body = await _read_body(request)
            res = self.api.update(rt, route.namespace, route.name or "", body, opts, route.sub)
            return _json(res.obj, warnings=res.warnings)
        if method == "PATCH":
            raw = await request.read()
            res = self.api.patch(
                rt,
                route.namespace,
                route.name or "",
                request.headers.get("Content-Type", ""),
                raw,
                opts,
                route.sub,
            )
            return _json(res.obj, status=201 if res.created else 200, warnings=res.warnings)
        if method == "DELETE":
            if route.sub:
                raise ApiError(
                    405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
                )
            raw = await request.read()
            options: dict[str, Any] = {}
            if raw.strip():
                try:
                    options = json.loads(raw)
                except ValueError as e:
                    raise bad_request(f"invalid DeleteOptions: {e}") from e
            for k in ("propagationPolicy", "gracePeriodSeconds"):
                if k in q:
                    options[k] = q[k]
            if "orphanDependents" in q:
                options["orphanDependents"] = q["orphanDependents"] == "true"
            dry = opts.dry_run or "All" in (options.get("dryRun") or [])
            if route.name is None:
                flt = Filter(
                    namespace=route.namespace,
                    labels=parse_label_selector(q.get("labelSelector")),
                    fields=parse_field_selector(rt, q.get("fieldSelector")),
                )
                items = self.api.delete_collection(rt, flt, options, dry)
                return _json(
                    {
                        "apiVersion": rt.api_version,
                        "kind": rt.list_kind,
                        "metadata": {"resourceVersion": str(self.store.current_rv)},
                        "items": items,
                    }
                )
            obj, finished = self.api.delete(rt, route.namespace, route.name, options, dry)
            if finished and rt.builtin and rt.plural not in ("pods", "namespaces"):
                return _json(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {
                            "name": route.name,
                            "group": rt.group,
                            "kind": rt.plural,
                            "uid": obj["metadata"].get("uid"),
                        },
                    }
                )
            return _json(obj)
        raise ApiError(
            405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
        )

    def _check_list_rv(self, q: Any) -> None:
        rv = q.get("resourceVersion")
        if rv and rv != "0" and q.get("resourceVersionMatch") == "Exact":
            try:
                self.store.check_rv(int(rv))
            except ValueError as e:
                raise bad_request(f"invalid resource version: {rv}") from e
            except Gone as e:
                raise ApiError(410, "Expired", str(e)) from e
            if int(rv) != self.store.current_rv:
                raise ApiError(410, "Expired", f"too old resource version: {rv} ({self.store.current_rv})")
        if q.get("continue"):
            raise ApiError(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent "
                "list result. You can start a new list without the continue parameter.",
            )

    # -- watch ----------------------------------------------------------------------------
    async def _watch(
        self, request: web.Request, route: _Route, flt: Filter, as_table: bool, include_object: str
    ) -> web.StreamResponse:
        q = request.query
        rt = route.rt
        rv_param = q.get("resourceVersion", "")
        try:
            timeout = float(q["timeoutSeconds"]) if "timeoutSeconds" in q else self.default_watch_timeout
        except ValueError as e:
            raise bad_request("invalid timeoutSeconds") from e
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        send_initial = q.get("sendInitialEvents") == "true"
        loop = asyncio.get_running_loop()
        key = rt.storage_key

        resp = web.StreamResponse(
            status=200, headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"}
        )
        resp.enable_chunked_encoding()
        initial: list[dict[str, Any]] = []
        try:
            with self.store.lock:
                if rv_param in ("", "0") or send_initial:
                    items, _ = self.api.list(rt, flt)
                    sub, _ = self.store.subscribe(key, loop, None)
                    initial = items
                    backlog: list[Event] = []
                else:
                    try:
                        since = int(rv_param)
                    except ValueError as e:
                        raise bad_request(f"invalid resource version: {rv_param}") from e
                    sub, backlog = self.store.subscribe(key, loop, since)
        except Gone as e:
            await resp.prepare(request)
            status = ApiError(410, "Expired", str(e)).status()
            await _write_event(resp, "ERROR", status)
            await resp.write_eof()
            return resp

        await resp.prepare(request)
        task = asyncio.current_task()
        if task:
            self._watch_tasks.add(task)
        first_table = [True]

        def render(obj: dict[str, Any]) -> dict[str, Any]:
            obj = self.api._for_version(rt, copy.deepcopy(obj))
            if as_table:
                t = to_table(
                    rt,
                    [obj],
                    obj["metadata"].get("resourceVersion"),
                    include_object,
                    with_columns=first_table[0],
                )
                first_table[0] = False
                return t
            return obj

        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + self.bookmark_interval
        try:
            for obj in initial:
                await _write_event(resp, "ADDED", render(obj))
            if send_initial and bookmarks:
                await _write_event(
                    resp,
                    "BOOKMARK",
                    {
                        "kind": rt.kind,
                        "apiVersion": rt.api_version,
                        "metadata": {
                            "resourceVersion": str(self.store.current_rv),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                    },
                )
            for past in backlog:
                out = _filter_event(past, flt)
                if out:
                    await _write_event(resp, out[0], render(out[1]))
            while True:
                now = time.monotonic()
                if now >= deadline:
                    break
                if request.transport is None or request.transport.is_closing():
                    break  # the client went away
                wait = min(deadline - now, 1.0)
                if bookmarks:
                    if now >= next_bookmark:
                        self.store.request_bookmark(sub)
                        next_bookmark = now + self.bookmark_interval
                    wait = min(wait, max(0.0, next_bookmark - now))
                try:
                    ev = await asyncio.wait_for(sub.queue.get(), timeout=wait)
                except TimeoutError:
                    continue
                if ev is None:  # dropped
                    break
                if ev.type == "BOOKMARK":
                    await _write_event(
                        resp,
                        "BOOKMARK",
                        {
                            "kind": rt.kind,
                            "apiVersion": rt.api_version,
                            "metadata": {"resourceVersion": str(ev.rv)},
                        },
                    )
                    continue
                out = _filter_event(ev, flt)
                if out:
                    await _write_event(resp, out[0], render(out[1]))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.unsubscribe(sub)
            if task:
                self._watch_tasks.discard(task)
        with contextlib.suppress(Exception):
            await resp.write_eof()
        return resp


def _filter_event(ev: Event, flt: Filter) -> tuple[str, dict[str, Any]] | None:
    new_m = flt.match(ev.obj)
    if ev.type == "ADDED":
        return ("ADDED", ev.obj) if new_m else None
    if ev.type == "DELETED":
        return ("DELETED", ev.obj) if new_m else None
    old_m = ev.prev is not None and flt.match(ev.prev)
    if new_m and old_m:
        return ("MODIFIED", ev.obj)
    if new_m:
        return ("ADDED", ev.obj)
    if old_m:
        return ("DELETED", ev.obj)
    return None


async def _write_event(resp: web.StreamResponse, etype: str, obj: dict[str, Any]) -> None:
    await resp.write(json.dumps({"type": etype, "object": obj}, separators=(",", ":")).encode() + b"\n")


def _api_group(group: str, versions: list[str]) -> dict[str, Any]:
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}


def _json(
    obj: Any, status: int = 200, warnings: list[str] | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    resp = web.Response(
        body=json.dumps(obj, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )
    for w in warnings or []:
        resp.headers.add("Warning", '299 - "' + w.replace('"', '\\"') + '"')
    return resp


def _status_response(e: ApiError) -> web.Response:
    return _json(e.status(), status=e.code, headers=e.headers)


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def _injected(status: int, retry_after: int | None) -> ApiError:
    reason = _REASONS.get(status, "Unknown")
    details: dict[str, Any] = {
        "causes": [{"reason": "InjectedFault", "message": "fault injected by the emulator"}]
    }
    headers = {}
    if retry_after is not None:
        details["retryAfterSeconds"] = retry_after
        headers["Retry-After"] = str(retry_after)
    messages = {
        429: "Too many requests, please try again later.",
        409: "Operation cannot be fulfilled: the "
        "object has been modified; please apply your changes to the latest version and try again",
        500: "Internal error occurred: injected fault",
        503: "the server is currently unable to handle the request",
    }
    return ApiError(status, reason, messages.get(status, f"injected fault ({status})"), details, headers)


async def _read_body(request: web.Request) -> Any:
    raw = await request.read()
    ctype = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
    if "protobuf" in ctype:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            "the emulator cannot decode protobuf request bodies (typed "
            "imperative kubectl commands such as `kubectl create namespace` send them); send JSON or "
            "YAML, e.g. `kubectl create -f` / `kubectl apply -f`",
        )
    try:
        if "yaml" in ctype:
            return yaml.safe_load(raw)
        return json.loads(raw or b"null")
    except (ValueError, yaml.YAMLError) as e:
        raise bad_request(f"error decoding request body: {e}") from e


def write_kubeconfig(url: str, path: pathlib.Path | str, namespace: str = "default") -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": "dockyard-emulator", "cluster": {"server": url}}],
        "users": [{"name": "dockyard-emulator", "user": {"token": "dockyard-emulator"}}],
        "contexts": [
            {
                "name": "dockyard-emulator",
                "context": {
                    "cluster": "dockyard-emulator",
                    "user": "dockyard-emulator",
                    "namespace": namespace,
                },
            }
        ],
        "current-context": "dockyard-emulator",
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class EmulatorThread:
    """Runs an :class:`Emulator` in its own thread and event loop (for synchronous fixtures).

    ``faults``, ``counters``, ``store``, ``api``, ``install_crd`` and ``delete_crd`` are thread-safe and may be
    used from the test thread directly.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self.emulator: Emulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop_future: asyncio.Future[None] | None = None
        self.url = ""

    def start(self, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> str:
        self._thread = threading.Thread(
            target=self._run, args=(host, port), name="kubeapi-emulator", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the emulator did not start in time")
        if self._error:
            raise RuntimeError("the emulator failed to start") from self._error
        return self.url

    def _run(self, host: str, port: int) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)

        async def main() -> None:
            try:
                self.emulator = Emulator(**self._kwargs)
                self.url = await self.emulator.start(host, port)
                self._stop_future = loop.create_future()
            except BaseException as e:
                self._error = e
                self._ready.set()
                return
            self._ready.set()
            await self._stop_future
            await self.emulator.stop()

        try:
            loop.run_until_complete(main())
        finally:
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop and self._stop_future and not self._loop.is_closed():
            fut = self._stop_future
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(_resolve, fut)
        if self._thread:
            self._thread.join(timeout)

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the emulator's loop and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _emu(self) -> Emulator:
        if self.emulator is None:
            raise RuntimeError("the emulator is not running")
        return self.emulator

    @property
    def faults(self) -> Faults:
        return self._emu().faults

    @property
    def counters(self) -> Counters:
        return self._emu().counters

    @property
    def store(self) -> Store:
        return self._emu().store

    @property
    def api(self) -> Api:
        return self._emu().api

    @property
    def errors(self) -> list[str]:
        return self._emu().errors

    def install_crd(self, crd: dict[str, Any]) -> dict[str, Any]:
        return self._emu().install_crd(crd)

    def delete_crd(self, name: str) -> None:
        self._emu().delete_crd(name)

    def set_pod_log(self, namespace: str, pod: str, container: str, text: str) -> None:
        self._emu().set_pod_log(namespace, pod, container, text)

    def write_kubeconfig(self, path: pathlib.Path | str, namespace: str = "default") -> pathlib.Path:
        return write_kubeconfig(self.url, path, namespace)

    def __enter__(self) -> EmulatorThread:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def run_in_thread(**kwargs: Any) -> EmulatorThread:
    """Start an :class:`EmulatorThread` and return it (call ``.stop()`` when done)."""
    t = EmulatorThread(**kwargs)
    t.start()
    return t
