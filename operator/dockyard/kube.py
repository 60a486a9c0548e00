"""The controllers' Kubernetes client: ``kubernetes_asyncio`` underneath, a small typed API on top.

Chosen by measurement (``bench/bench_kube_clients.py``, figures in docs/performance.md):
against lightkube and kr8s it had the lowest CPU per request in every run (request rates were
within the machine's noise of lightkube's), and it runs on aiohttp, which kopf and the MLflow
client already use. ``kubernetes_asyncio``
provides the credentials (in-cluster service account, else the kubeconfig: certificates,
tokens, token files, exec plugins, OIDC) and the TLS set-up; this module adds what the
controllers need on top, and nothing else:

* get/list/create/apply/merge-patch/delete on plain dicts (no generated models: the raw
  JSON, as the watch streams deliver it);
* every write carries ``fieldManager=dockyard``;
* lists paginate (``limit``/``continue``, :attr:`KubeClient.page_limit` per page) and return
  every item;
* kind -> resource comes from API discovery (``/api/v1``, ``/apis/<group>/<version>``, once
  per group-version, cached): no kind table;
* credentials are refreshed: an exec plugin is run again when its token's
  ``expirationTimestamp`` has passed, and on a 401 the credentials are loaded again (the
  plugin re-run, the token file re-read) and the request retried once;
* errors become :class:`ApiError` (status, reason, message from the API's Status);
  429 and 5xx are retried with exponential backoff, honouring ``Retry-After``, as are
  connection errors and timeouts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import random
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio import client as kclient
from kubernetes_asyncio import config as kconfig

log = logging.getLogger(__name__)

FIELD_MANAGER = "dockyard"
DEFAULT_PAGE_LIMIT = 500
# Run an exec plugin again this long before its token expires (client-go uses no margin and
# relies on the 401; kubernetes_asyncio's own check uses 5 minutes).
EXEC_EXPIRY_MARGIN = dt.timedelta(seconds=10)


class ApiError(Exception):
    """A Kubernetes API error (the body's Status, when there is one)."""

    def __init__(self, status: int, reason: str = "", message: str = "", body: Any = None):
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body

    @property
    def not_found(self) -> bool:
        return self.status == 404


def path_for(api_version: str, plural: str, namespace: str | None, name: str | None = None,
             subresource: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    parts = [base]
    if namespace:
        parts.append(f"namespaces/{quote(namespace, safe='')}")
    parts.append(plural)
    if name:
        parts.append(quote(name, safe=""))
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


class Credentials:
    """Where the API server is and who we are, loaded like kubectl does (in-cluster service
    account, else ``KUBECONFIG`` / ``~/.kube/config``) and kept fresh.

    ``generation`` counts (re)loads, so that many requests meeting one 401 reload once."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None):
        self._kubeconfig = kubeconfig
        self._context = context
        self._lock = asyncio.Lock()
        self.configuration: kclient.Configuration | None = None
        self._loader: Any = None  # KubeConfigLoader when from a kubeconfig
        self._exec_expiry: dt.datetime | None = None
        self.generation = 0

    async def load(self) -> kclient.Configuration:
        """The configuration, loaded on first use; refreshed when an exec token expired."""
        if self.configuration is not None and not self._exec_expired():
            return self.configuration
        async with self._lock:
            if self.configuration is None:
                await self._load()
            elif self._exec_expired():
                log.debug("exec credential expired; running the plugin again")
                await self._reload()
        assert self.configuration is not None
        return self.configuration

    async def refresh(self, seen_generation: int) -> None:
        """After a 401: load the credentials again, unless another request already did."""
        async with self._lock:
            if self.generation == seen_generation:
                log.info("the API server refused our credentials (401); loading them again")
                await self._reload()

    async def authorization(self) -> str | None:
        """The current Authorization header value (token or basic), if any."""
        cfg = self.configuration
        if cfg is None:
            return None
        # get_api_key_with_prefix runs the in-cluster loader's refresh hook, which re-reads
        # the projected token file once a minute.
        key: str | None = await cfg.get_api_key_with_prefix("BearerToken")
        return key

    async def renew(self) -> None:
        """Load the credentials again now (kopf asks after a 401 or at their expiration)."""
        await self.refresh(self.generation)

    @property
    def expiration(self) -> dt.datetime | None:
        """When the current exec-plugin token should be replaced (None: no known expiry)."""
        return None if self._exec_expiry is None else self._exec_expiry - EXEC_EXPIRY_MARGIN

    def _exec_expired(self) -> bool:
        return self._exec_expiry is not None and dt.datetime.now(dt.UTC) >= self._exec_expiry - EXEC_EXPIRY_MARGIN

    async def _load(self) -> None:
        cfg = kclient.Configuration()
        loader = None
        if self._kubeconfig is None and _in_cluster():
            kconfig.load_incluster_config(client_configuration=cfg)
        else:
            path = self._kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
            loader = await kconfig.load_kube_config(config_file=path, context=self._context,
                                                    client_configuration=cfg, persist_config=False)
        self.configuration, self._loader = cfg, loader
        self._note_exec()
        self.generation += 1

    async def _reload(self) -> None:
        loader = self._loader
        if loader is not None and loader._user is not None and "exec" in loader._user:
            # Run the plugin again (kubernetes_asyncio skips it while its own 5-minute margin
            # says the token is fresh; the API server or our expiry check said otherwise).
            if hasattr(loader, "exec_plugin_expiry"):
                del loader.exec_plugin_expiry
            await loader.load_from_exec_plugin()
            self.configuration.api_key["BearerToken"] = loader.token  # type: ignore[union-attr]
            self._note_exec()
            self.generation += 1
            return
        # Token files, in-cluster tokens, a rewritten kubeconfig: load everything again. The
        # TLS set-up of an open session stays as it was (certificates are not rotated here).
        cfg = self.configuration
        await self._load()
        if cfg is not None and self.configuration is not None:
            cfg.api_key.update(self.configuration.api_key)
            cfg.refresh_api_key_hook = self.configuration.refresh_api_key_hook
            self.configuration = cfg

    def _note_exec(self) -> None:
        loader = self._loader
        if loader is None or loader._user is None or "exec" not in loader._user:
            self._exec_expiry = None
            return
        expiry = getattr(loader, "exec_plugin_expiry", None)
        if isinstance(expiry, dt.datetime) and expiry.tzinfo is None:
            expiry = expiry.replace(tzinfo=dt.UTC)
        self._exec_expiry = expiry


async def kopf_login(credentials: Credentials, *, first: bool, trust_env: bool = False) -> Any:
    """A ``kopf.ConnectionInfo`` from the same credentials as the controllers' client, so kopf's
    watches and our requests share one loader, one exec plugin and one refresh. kopf calls its
    login handler again when the API refused the credentials (401) or they expired: every
    call after the ``first`` loads them again."""
    import kopf

    if not first:
        await credentials.renew()
    cfg = await credentials.load()
    header = await credentials.authorization()
    scheme, _, token = (header or "").partition(" ")
    return kopf.ConnectionInfo(
        server=str(cfg.host),
        ca_path=cfg.ssl_ca_cert,
        insecure=not cfg.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=cfg.cert_file,
        private_key_path=cfg.key_file,
        trust_env=trust_env,
        expiration=credentials.expiration,
    )


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )


class KubeClient:
    """Async client; one per operator process, shared by all controllers."""

    def __init__(self, credentials: Credentials | None = None, *, max_retries: int = 5, timeout: float = 30.0,
                 page_limit: int = DEFAULT_PAGE_LIMIT):
        self.credentials = credentials or Credentials()
        self._max_retries = max_retries
        self._timeout = timeout
        self.page_limit = page_limit
        self._api: kclient.ApiClient | None = None
        self._resources: dict[str, dict[str, tuple[str, bool]]] = {}  # groupVersion -> kind -> (plural, namespaced)
        self._discovery_lock = asyncio.Lock()

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, **kwargs: Any) -> KubeClient:
        """In-cluster service account, else ``kubeconfig`` / ``KUBECONFIG`` / ``~/.kube/config``
        (loaded on the first request)."""
        return cls(Credentials(kubeconfig), **kwargs)

    async def _get_api(self) -> kclient.ApiClient:
        cfg = await self.credentials.load()
        if self._api is None:
            cfg.connection_pool_maxsize = 64
            self._api = kclient.ApiClient(cfg)
            # kubernetes_asyncio opens its aiohttp session with trust_env=True: aiohttp then looks
            # up proxy variables and ~/.netrc in a worker thread on every request (a third of the
            # client's CPU and half its throughput in bench/bench_kube_clients.py). kopf does not
            # trust the environment by default either; a kubeconfig's proxy-url still applies.
            session = self._api.rest_client.pool_manager
            if hasattr(session, "_trust_env"):
                session._trust_env = False
        return self._api

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        query = [(k, v) for k, v in (params or {}).items() if v is not None]
        delay = 0.2
        reauthenticated = False
        attempt = 0
        while True:
            try:
                api = await self._get_api()
                generation = self.credentials.generation
                auth = await self.credentials.authorization()
            except (kconfig.ConfigException, OSError, ValueError) as exc:
                # No usable credentials (a failing exec plugin, an unreadable token file):
                # the same error the API server gives a request without them.
                raise ApiError(401, "Unauthorized", f"cannot load Kubernetes credentials: {exc}") from exc
            headers = {"Accept": "application/json", "Content-Type": content_type}
            if auth:
                headers["Authorization"] = auth
            try:
                resp = await api.call_api(
                    path, method, query_params=query, header_params=headers, body=body,
                    auth_settings=[], _preload_content=False, _request_timeout=self._timeout,
                )
                async with resp:
                    text = await resp.text()
                    status, retry_after = resp.status, resp.headers.get("Retry-After")
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                if attempt >= self._max_retries:
                    raise ApiError(503, "ServiceUnavailable", f"{method} {path}: {exc}") from exc
                attempt += 1
                await asyncio.sleep(delay + random.uniform(0, 0.1))
                delay = min(delay * 2, 10.0)
                continue
            if status < 400:
                return json.loads(text) if text else None
            if status == 401 and not reauthenticated:
                reauthenticated = True
                try:
                    await self.credentials.refresh(generation)
                except (kconfig.ConfigException, OSError, ValueError) as exc:
                    raise ApiError(401, "Unauthorized", f"cannot refresh Kubernetes credentials: {exc}") from exc
                continue
            retryable = status == 429 or status >= 500
            if retryable and attempt < self._max_retries:
                attempt += 1
                wait = float(retry_after) if retry_after and retry_after.isdigit() else delay
                log.debug("%s %s -> %s, retrying in %.1fs", method, path, status, wait)
                await asyncio.sleep(min(wait, 30.0) + random.uniform(0, 0.1))
                delay = min(delay * 2, 10.0)
                continue
            raise _error_from(status, text)

    # -- discovery ------------------------------------------------------------------------
    async def resource_path(self, api_version: str, kind: str, namespace: str | None, name: str | None = None,
                            subresource: str | None = None) -> str:
        plural, namespaced = await self.resource(api_version, kind)
        return path_for(api_version, plural, namespace if namespaced else None, name, subresource)

    async def resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(plural, namespaced) of a kind, from the API's discovery document of its group-version.
        A group-version or kind the API does not serve raises ApiError 404 (not cached, so a
        CRD installed later is found)."""
        kinds = self._resources.get(api_version)
        if kinds is None or kind not in kinds:
            async with self._discovery_lock:
                kinds = self._resources.get(api_version)
                if kinds is None or kind not in kinds:
                    doc = await self.request("GET", "/api/v1" if api_version == "v1" else f"/apis/{api_version}")
                    kinds = {r["kind"]: (r["name"], bool(r.get("namespaced")))
                             for r in (doc or {}).get("resources") or [] if "/" not in r["name"]}
                    self._resources[api_version] = kinds
        if kind not in kinds:
            raise ApiError(404, "NotFound", f"the server does not serve kind {kind} in {api_version}")
        return kinds[kind]

    # -- typed helpers -------------------------------------------------------------------
    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            result: dict[str, Any] = await self.request(
                "GET", await self.resource_path(api_version, kind, namespace, name))
            return result
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    async def list(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Every matching object, fetched in pages of :attr:`page_limit`."""
        path = await self.resource_path(api_version, kind, namespace)
        items: list[dict[str, Any]] = []
        cont: str | None = None
        while True:
            page = await self.request("GET", path, params={"labelSelector": label_selector,
                                                           "limit": self.page_limit, "continue": cont})
            items.extend(page.get("items") or [])
            cont = (page.get("metadata") or {}).get("continue") or None
            if not cont:
                return items

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        path = await self.resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        result: dict[str, Any] = await self.request("POST", path, params={"fieldManager": FIELD_MANAGER}, body=obj)
        return result

    async def apply(self, obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        """Server-side apply (create or update), owned by the `dockyard` field manager."""
        meta = obj["metadata"]
        path = await self.resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        result: dict[str, Any] = await self.request(
            "PATCH",
            path,
            params={"fieldManager": FIELD_MANAGER, "force": "true" if force else None},
            body=obj,
            content_type="application/apply-patch+yaml",
        )
        return result

    async def merge_patch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.request(
            "PATCH",
            await self.resource_path(api_version, kind, namespace, name, subresource),
            params={"fieldManager": FIELD_MANAGER},
            body=patch,
            content_type="application/merge-patch+json",
        )
        return result

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str) -> bool:
        """Delete in the background (children follow by ownerReference). False if already gone."""
        try:
            await self.request(
                "DELETE",
                await self.resource_path(api_version, kind, namespace, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            )
            return True
        except ApiError as exc:
            if exc.not_found:
                return False
            raise


def _error_from(status: int, text: str) -> ApiError:
    try:
        body = json.loads(text)
    except ValueError:
        return ApiError(status, "", text[:500])
    if isinstance(body, dict):
        return ApiError(status, str(body.get("reason", "")), str(body.get("message", "")), body)
    return ApiError(status, "", text[:500])
