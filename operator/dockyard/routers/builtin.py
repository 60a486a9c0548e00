"""The builtin router: nginx in front of the variant Services, splitting traffic by weight.

How a request is routed (the rendered config is the reference):

1. Split key. Without ``spec.router.sticky`` the key is ``$request_id`` (16 random bytes per
   request), so every request is drawn independently. With ``sticky.header: X-User-Id`` the
   key is the header's value, so one user always lands on the same variant while the weights
   stay the same. A request that lacks the sticky header (or sends it empty) falls back to
   ``$request_id``: it is split at random by the same weights, never refused and never piled
   onto one variant.
2. ``split_clients`` hashes ``"<model>:<key>"`` (MurmurHash2) into the weight buckets. The
   model name salts the hash so two experiments on different models do not put the same
   users in the same buckets. Shares are the weights normalised to hundredths of a percent
   by largest remainder (exactly 10000 units); every positive share but the last is written
   as a percentage, the last as ``*`` so the buckets cover the whole hash space with no gap.
   Weight-0 variants get no bucket (nginx reads ``0%`` as "the rest", so it is never written).
3. Force header (``spec.router.forceHeader``, default ``X-Dockyard-Variant``). Only with
   ``spec.router.allowVariantForcing: true`` (off by default): a value that is exactly a
   variant name (case-insensitive) routes to that variant, weight 0 included; any other value
   is ignored and the request is split as usual. A shadow variant's name is "any other
   value": a shadow never answers a client (call its own Service to test it). With forcing
   off there is no force map at all: a request that carries the header (any non-empty value)
   is refused with 403 and a JSON error, before it is rate-limited or proxied, so the header
   can never reach a variant, and the variant is always the split's draw (weight > 0).
4. The response carries ``X-Dockyard-Variant``, ``X-Dockyard-Model-Version`` (and
   ``X-Dockyard-Model``), set by the router even on errors; same-named headers from the
   backend are dropped first so a backend cannot spoof them.
5. Shadows (``variants[].shadow: N``): every live request is drawn again, independently of
   the split, with ``split_clients`` on ``$request_id`` salted by the shadow's name; N % of
   them get an nginx ``mirror`` subrequest (same method, URI, headers and body, plus
   ``X-Dockyard-Shadow: <name>``); unsampled requests return from the mirror location at once
   without a connection. nginx finalises a request, and reads the next one on the client's
   keep-alive connection, only once its mirror subrequests are done, so a copy sent straight
   to a slow or unreachable shadow would hold the client's connection for as long as the
   shadow takes (up to the timeouts). The copy therefore goes to a relay: a second server
   block of the same nginx on loopback (``relay_port``, reachable only inside the Pod), which
   acknowledges it at once (204) and forwards it to the shadow from its own ``mirror``
   subrequest, discarding the answer. Clients wait for the relay's acknowledgement (a local
   round trip), never for the shadow.

6. The edge (``spec.router.limits``): bodies above ``maxBodySize`` get 413, clients above
   ``rateLimit`` (``limit_req`` keyed by the client address, ``nodelay``) get 429, a variant
   silent for ``timeoutSeconds`` gets the client 504, an unreachable one 502. Each of these
   nginx-made answers goes through ``error_page`` to an internal location that returns
   ``{"error": "..."}`` as ``application/json`` (the V2 inference protocol's error shape); a
   variant's own error answers pass through untouched (no ``proxy_intercept_errors``). The
   client ``X-Dockyard-Shadow`` header is dropped from live requests: only the relay sets it.

Every user-derived string is validated by the API models and checked again here against a
strict pattern (``ValueError`` on mismatch). ``map`` keys are written with a leading
backslash so a variant called ``default``, ``include``, ``hostnames`` or ``volatile`` is a
plain key, not an nginx map keyword.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..api.modeldeployment import ModelDeploymentSpec, body_size_bytes
from ..builders.pods import drain_lifecycle
from ..config import OperatorConfig
from ..labels import (
    CONFIG_HASH_ANNOTATION,
    MODEL_LABEL,
    content_hash,
    owner_reference,
    pod_template_labels,
    stamp_spec_hash,
    standard_labels,
)
from .common import (
    MODEL_RESPONSE_HEADER,
    OWNER_KIND,
    ROUTER_COMPONENT,
    ROUTER_CONTAINER_PORT,
    ROUTER_SERVICE_PORT,
    VARIANT_RESPONSE_HEADER,
    VERSION_RESPONSE_HEADER,
    check_resolved,
    check_variants,
    format_percent,
    http_port,
    live_variants,
    nginx_header_variable,
    owner_name_ns,
    percent_units,
    require_abs_path,
    require_header_name,
    require_model_name,
    require_upstream,
    require_variant_name,
    require_version,
    router_name,
    router_selector,
    router_service_name,
    shadow_variants,
    variant_fqdn,
)

CONFIG_KEY = "nginx.conf"
CONFIG_DIR = "/etc/nginx/dockyard"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
# The nginx-unprivileged image runs as uid/gid 101 and keeps pid and temp files in /tmp;
# the Deployment sets `command`, which bypasses the image's docker-entrypoint.sh scripts
# (they would try to rewrite /etc/nginx on a read-only root filesystem).
NGINX_UID = 101
HEALTH_PATH = "/healthz"
# How long a client may take to send its request line and headers, and between two reads of
# its body (nginx's defaults are 60 s each; a slow client holds a connection that long).
CLIENT_HEADER_TIMEOUT = "10s"
CLIENT_BODY_TIMEOUT = "30s"
PROXY_CONNECT_TIMEOUT = "5s"
# The per-client rate limit's shared zone (all workers): 10 MB keeps ~160,000 client addresses.
RATE_ZONE = "dockyard_clients"
RATE_ZONE_SIZE = "10m"
# Internal locations of the JSON error answers (a client request to one gets 404).
ERROR_PATH_PREFIX = "/_dockyard/error/"
# The router Pod's /tmp (emptyDir) holds request bodies above nginx's 16 KiB buffer while they
# are proxied: room for this many bodies of the maximal size, and never less than the base.
TMP_SIZE_BASE_MIB = 256
TMP_BODIES = 4
UPSTREAM_KEEPALIVE = 32
# nginx must drop an idle upstream connection before the model server does (MLServer/uvicorn
# after 5 s, seldon-core/gunicorn after 2 s): a POST sent on a connection the server is
# closing fails with 502 and nginx does not retry it.
UPSTREAM_IDLE_TIMEOUT = "1s"
# Internal locations of the shadow mirrors (a client request to one gets 404).
MIRROR_PATH_PREFIX = "/_dockyard/mirror/"
# The shadow relay: a server block on loopback inside the router Pod. The client-facing
# server hands it each copy and waits only for its immediate 204 (RELAY_TIMEOUT bounds that
# local round trip); the relay then sends the copy to the shadow.
RELAY_PORT = 8079
RELAY_TIMEOUT = "2s"
RELAY_ACK_PATH = "/_dockyard/ack"
RELAY_SHADOW_PATH = "/_dockyard/shadow"
# The relay's limits on one copy to a shadow: a copy to a Service without ready endpoints (no
# answer to the SYN on some proxies) or to a hung shadow is dropped after these. Nothing a
# client waits for depends on them; they bound how long a copy holds relay connections.
MIRROR_CONNECT_TIMEOUT = "1s"
MIRROR_TIMEOUT = "10s"
# Copies in flight at the relay, all workers together. Each holds two connections (from the
# client-facing server, to the shadow) for as long as the shadow takes; the cap keeps a hung
# shadow from taking the worker_connections clients need. Beyond it the relay answers 503 at
# once and the copy is dropped.
RELAY_MAX_COPIES = 256
WORKER_CONNECTIONS = 1024
# Request header a shadow receives on mirrored copies (its name), so its logs can tell them apart.
SHADOW_REQUEST_HEADER = "X-Dockyard-Shadow"


def _upstream_name(variant: str) -> str:
    return f"dockyard-variant-{variant}"


def _mirror_var(variant: str) -> str:
    # nginx variable names take letters, digits and underscores; variant names are DNS labels.
    return "$dockyard_mirror_" + require_variant_name(variant).replace("-", "_")


def _mirror_location(variant: str) -> str:
    return f"{MIRROR_PATH_PREFIX}{require_variant_name(variant)}"


def nginx_size(quantity: str) -> str:
    """``16Mi`` -> ``16m``, ``512Ki`` -> ``512k`` (nginx's k/m are binary)."""
    body_size_bytes(quantity)  # validates
    return quantity[:-2] + ("k" if quantity.endswith("Ki") else "m")


def tmp_size_limit(spec: ModelDeploymentSpec) -> str:
    """sizeLimit of the router Pod's /tmp: TMP_BODIES maximal bodies, at least the base."""
    body = body_size_bytes(spec.router.effective_limits().effective_max_body_size())
    mib = -(-TMP_BODIES * body // (1024 * 1024))
    return f"{max(TMP_SIZE_BASE_MIB, mib)}Mi"


def _error_location(status: int) -> str:
    return f"{ERROR_PATH_PREFIX}{status}"


def _json_error(message: str) -> str:
    """A V2 error body for an nginx ``return``: single-quoted; the message holds no quote,
    backslash or brace of its own (only checked names and numbers go into it)."""
    if re.search(r"['\"\\{}\n\r]", message):
        raise ValueError(f"refusing error message {message!r}")
    return "'{\"error\": \"" + message + "\"}'"


def _map_key(value: str) -> str:
    # A leading backslash makes nginx treat the key literally (not as default/include/...).
    return "\\" + value


def render_nginx_config(
    spec: ModelDeploymentSpec,
    upstreams: Mapping[str, str],
    versions: Mapping[str, str],
    *,
    listen_port: int = 8080,
    pid_path: str = "/tmp/nginx.pid",
    temp_dir: str = "/tmp",
    model_name_header: bool = True,
    worker_processes: int = 2,
    relay_port: int = RELAY_PORT,
) -> str:
    """The complete nginx.conf of the builtin router (production renderer; pure).

    ``upstreams`` maps every variant name to ``host:port`` (the variant Service's cluster DNS
    name in a cluster, ``127.0.0.1:PORT`` in tests); ``versions`` maps every variant name to
    its resolved model version; ``relay_port`` is the loopback port of the shadow relay (only
    rendered when there are shadows). Raises ``ValueError`` on any value that is not strictly
    valid.
    """
    variants = check_variants(spec)
    names = [v.name for v in variants]
    if set(upstreams) != set(names):
        raise ValueError(f"upstreams must name exactly the variants {names}, got {sorted(upstreams)}")
    checked_versions = check_resolved(spec, versions)
    checked_upstreams = {n: require_upstream(upstreams[n]) for n in names}
    model = require_model_name(spec.model_name)
    force_header = require_header_name(spec.router.force_header)
    force_var = nginx_header_variable(force_header)
    allow_forcing = spec.router.allow_variant_forcing is True
    limits = spec.router.effective_limits()
    max_body = limits.effective_max_body_size()
    body_limit = nginx_size(max_body)
    timeout = limits.effective_timeout_seconds()
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 1 <= timeout <= 3600:
        raise ValueError(f"refusing timeout {timeout!r}")
    rate = limits.rate_limit
    if rate is not None:
        rps, burst = rate.requests_per_second, rate.effective_burst()
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (rps, burst)) or not (
            1 <= rps <= 100000 and 0 <= burst <= 100000
        ):
            raise ValueError(f"refusing rate limit {rps!r}/s burst {burst!r}")
    sticky_header = require_header_name(spec.router.sticky.header) if spec.router.sticky else None
    if not isinstance(listen_port, int) or not 1 <= listen_port <= 65535:
        raise ValueError(f"refusing listen port {listen_port!r}")
    if not isinstance(relay_port, int) or not 1 <= relay_port <= 65535 or relay_port == listen_port:
        raise ValueError(f"refusing relay port {relay_port!r}")
    if not isinstance(worker_processes, int) or not 1 <= worker_processes <= 64:
        raise ValueError(f"refusing worker_processes {worker_processes!r}")
    pid = require_abs_path(pid_path)
    temp = require_abs_path(temp_dir).rstrip("/") or "/"
    tmp = temp if temp != "/" else ""

    shares = percent_units(spec)
    weighted = [n for n in names if shares[n] > 0]
    live = [v.name for v in live_variants(spec)]
    shadows = shadow_variants(spec)
    live_weights = spec.live_weights()
    default_variant = max(weighted, key=lambda n: (shares[n], -names.index(n)))

    out: list[str] = []
    emit = out.append
    emit(f"# Dockyard builtin router for model {model}. Generated by the operator: do not edit.")
    emit("# weights: " + ", ".join(f"{n}={live_weights[n]} ({format_percent(shares[n])})" for n in live))
    if shadows:
        emit("# shadows (mirrored share of live requests): " + ", ".join(f"{n}={p}%" for n, p in shadows))
    emit(f"pid {pid};")
    emit(f"worker_processes {worker_processes};")
    emit("")
    emit("events {")
    emit(f"    worker_connections {WORKER_CONNECTIONS};")
    emit("}")
    emit("")
    emit("http {")
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        emit(f"    {kind}_temp_path {tmp}/{kind}_temp;")
    emit("    server_tokens off;")
    emit(f"    client_max_body_size {body_limit};  # {max_body}")
    emit(f"    client_header_timeout {CLIENT_HEADER_TIMEOUT};")
    emit(f"    client_body_timeout {CLIENT_BODY_TIMEOUT};")
    emit("    log_format dockyard '$remote_addr [$time_iso8601] \"$request\" $status $body_bytes_sent '")
    emit("                        'variant=$dockyard_variant version=$dockyard_model_version '")
    emit("                        'rt=$request_time urt=$upstream_response_time rid=$request_id';")
    emit("    access_log /dev/stdout dockyard;")
    emit("")

    # 1. split key
    if sticky_header is not None:
        sticky_var = nginx_header_variable(sticky_header)
        emit(f"    # Sticky on {sticky_header}; a request without it is split at random.")
        emit(f"    map {sticky_var} $dockyard_split_key {{")
        emit('        "" $request_id;')
        emit(f"        default {sticky_var};")
        emit("    }")
        emit("")
        split_key = "$dockyard_split_key"
    else:
        split_key = "$request_id"

    # 2. weighted buckets
    emit(f"    # {'Sticky' if sticky_header else 'Random per request'}: hash of model name + split key.")
    emit(f'    split_clients "{model}:{split_key}" $dockyard_split {{')
    for n in weighted[:-1]:
        emit(f"        {format_percent(shares[n])} {n};")
    last = weighted[-1]
    emit(f"        * {last};  # {format_percent(shares[last])}")
    emit("    }")
    emit("")

    # 3. force header
    if allow_forcing:
        emit(f"    # {force_header}: a variant name forces that variant; anything else is ignored.")
        emit(f"    map {force_var} $dockyard_forced {{")
        emit('        default "";')
        for n in live:
            emit(f"        {_map_key(n)} {n};")
        emit("    }")
        emit("")
        emit("    map $dockyard_forced $dockyard_variant {")
        emit('        "" $dockyard_split;')
        emit("        default $dockyard_forced;")
        emit("    }")
    else:
        emit(f"    # Forcing is off: a request carrying {force_header} is refused (403); the variant is")
        emit("    # always the split's draw.")
        emit(f"    map {force_var} $dockyard_force_refused {{")
        emit('        "" "";')
        emit("        default 1;")
        emit("    }")
        emit("")
        emit("    map $dockyard_split $dockyard_variant {")
        emit("        default $dockyard_split;")
        emit("    }")
    emit("")
    # Without forcing, only a variant the split can draw (weight > 0) has a route at all.
    reachable = live if allow_forcing else weighted
    emit("    map $dockyard_variant $dockyard_upstream {")
    emit(f"        default {_upstream_name(default_variant)};")
    for n in reachable:
        emit(f"        {_map_key(n)} {_upstream_name(n)};")
    emit("    }")
    emit("")
    emit("    map $dockyard_variant $dockyard_model_version {")
    emit('        default "";')
    for n in reachable:
        emit(f"        {_map_key(n)} {require_version(checked_versions[n])};")
    emit("    }")
    emit("")

    # 5. shadows: an independent draw per request and shadow
    for n, percent in shadows:
        emit(f"    # Shadow {n}: {percent}% of live requests mirrored, drawn per request.")
        emit(f'    split_clients "{model}:shadow:{n}:$request_id" {_mirror_var(n)} {{')
        if percent < 100:
            emit(f"        {percent}% 1;")
            emit('        * "";')
        else:
            emit("        * 1;")
        emit("    }")
        emit("")
    if shadows:
        emit(f"    # The relay forwards a copy to the shadow its {SHADOW_REQUEST_HEADER} header names.")
        emit(f"    map {nginx_header_variable(SHADOW_REQUEST_HEADER)} $dockyard_shadow_upstream {{")
        emit('        default "";')
        for n, _ in shadows:
            emit(f"        {_map_key(n)} {_upstream_name(n)};")
        emit("    }")
        emit("")
        emit("    limit_conn_zone $server_port zone=dockyard_shadow_relay:1m;")
        emit("")
    if rate is not None:
        emit(f"    # Per-client rate limit: {rps} requests/s, burst {burst}, by client address.")
        emit(f"    limit_req_zone $binary_remote_addr zone={RATE_ZONE}:{RATE_ZONE_SIZE} rate={rps}r/s;")
        emit("")

    for n in names:
        emit(f"    upstream {_upstream_name(require_variant_name(n))} {{")
        emit(f"        server {checked_upstreams[n]};")
        emit(f"        keepalive {UPSTREAM_KEEPALIVE};")
        emit(f"        keepalive_timeout {UPSTREAM_IDLE_TIMEOUT};")
        emit("    }")
    emit("")

    # 6. the edge's refusals, as V2 errors
    errors: dict[int, str] = {}
    if not allow_forcing:
        errors[403] = (f"forcing a variant with the {force_header} header is not allowed on this "
                       "ModelDeployment (spec.router.allowVariantForcing is false)")
    errors[413] = f"request body too large: this endpoint accepts at most {max_body}"
    if rate is not None:
        errors[429] = (f"rate limit exceeded: at most {rps} requests per second per client "
                       f"(burst {burst}); retry later")
    errors[502] = "variant $dockyard_variant is unreachable"
    errors[504] = f"variant $dockyard_variant did not answer within {timeout}s"

    emit("    server {")
    emit(f"        listen {listen_port};")
    emit("")
    for status in errors:
        emit(f"        error_page {status} {_error_location(status)};")
    emit("")
    emit(f"        location = {HEALTH_PATH} {{")
    emit("            access_log off;")
    emit("            default_type text/plain;")
    emit('            return 200 "ok\\n";')
    emit("        }")
    emit("")
    emit("        location / {")
    if not allow_forcing:
        emit("            if ($dockyard_force_refused) {")
        emit("                return 403;")
        emit("            }")
    if rate is not None:
        # nginx refuses "burst=0"; no burst parameter is a burst of 0.
        emit(f"            limit_req zone={RATE_ZONE}{f' burst={burst}' if burst else ''} nodelay;")
        emit("            limit_req_status 429;")
        emit("            limit_req_log_level warn;")
    emit("            proxy_pass http://$dockyard_upstream;")
    emit("            proxy_http_version 1.1;")
    emit('            proxy_set_header Connection "";')
    emit("            proxy_set_header Host $host;")
    emit("            proxy_set_header X-Request-Id $request_id;")
    emit("            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
    emit(f'            proxy_set_header {SHADOW_REQUEST_HEADER} "";  # only the relay names a shadow')
    # A POST that fails on a kept-alive connection the server has just closed is retried once
    # on a new one (nginx retries a cached connection's error only with non_idempotent); an
    # inference request has no side effects.
    emit("            proxy_next_upstream error non_idempotent;")
    emit(f"            proxy_connect_timeout {PROXY_CONNECT_TIMEOUT};")
    emit(f"            proxy_read_timeout {timeout}s;")
    emit(f"            proxy_send_timeout {timeout}s;")
    for n, _ in shadows:
        emit(f"            mirror {_mirror_location(n)};")
    if shadows:
        # The shadow gets the body too (inference input); nginx then reads the whole body
        # before proxying, which it does anyway with the default request buffering.
        emit("            mirror_request_body on;")
    headers = [VARIANT_RESPONSE_HEADER, VERSION_RESPONSE_HEADER, MODEL_RESPONSE_HEADER]
    for h in headers:
        emit(f"            proxy_hide_header {h};")
    emit(f"            add_header {VARIANT_RESPONSE_HEADER} $dockyard_variant always;")
    emit(f"            add_header {VERSION_RESPONSE_HEADER} $dockyard_model_version always;")
    if model_name_header:
        emit(f'            add_header {MODEL_RESPONSE_HEADER} "{model}" always;')
    emit("        }")
    for n, _ in shadows:
        emit("")
        emit(f"        # Shadow {n}: the sampled copy goes to the relay, which answers at once; the")
        emit("        # client's connection waits for that answer only, never for the shadow.")
        emit(f"        location = {_mirror_location(n)} {{")
        emit("            internal;")
        emit(f'            if ({_mirror_var(n)} = "") {{')
        emit("                return 204;")
        emit("            }")
        emit(f"            proxy_pass http://127.0.0.1:{relay_port}$request_uri;")
        emit("            proxy_set_header Host $host;")
        emit("            proxy_set_header X-Request-Id $request_id;")
        emit("            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;")
        emit(f"            proxy_set_header {SHADOW_REQUEST_HEADER} {n};")
        emit("            proxy_next_upstream off;")
        for t in ("connect", "send", "read"):
            emit(f"            proxy_{t}_timeout {RELAY_TIMEOUT};")
        emit("        }")
    for status, message in errors.items():
        emit("")
        emit(f"        location = {_error_location(status)} {{")
        emit("            internal;")
        emit("            default_type application/json;")
        if status in (502, 504):  # a variant was chosen: say which, as on its own answers
            emit(f"            add_header {VARIANT_RESPONSE_HEADER} $dockyard_variant always;")
            emit(f"            add_header {VERSION_RESPONSE_HEADER} $dockyard_model_version always;")
        if status == 429:
            emit("            add_header Retry-After 1 always;")
        emit(f"            return {status} {_json_error(message)};")
        emit("        }")
    if shadows:
        emit("    }")
        emit("")
        emit("    # Shadow relay, loopback only: acknowledges each copy at once and forwards it to the")
        emit("    # shadow in a mirror subrequest of its own, whose answer nginx discards.")
        emit("    server {")
        emit(f"        listen 127.0.0.1:{relay_port};")
        emit("        access_log off;")
        emit("")
        emit("        location / {")
        emit(f"            limit_conn dockyard_shadow_relay {RELAY_MAX_COPIES};")
        emit(f"            mirror {RELAY_SHADOW_PATH};")
        emit("            mirror_request_body on;")
        # Through a variable, proxy_pass sends this exact URI (a literal one would replace the
        # location prefix "/" of the copy's URI, sending /x to /_dockyard/ackx: a loop).
        emit(f"            set $dockyard_relay_ack {RELAY_ACK_PATH};")
        emit(f"            proxy_pass http://127.0.0.1:{relay_port}$dockyard_relay_ack;")
        emit("            proxy_pass_request_body off;")
        emit('            proxy_set_header Content-Length "";')
        for t in ("connect", "send", "read"):
            emit(f"            proxy_{t}_timeout {RELAY_TIMEOUT};")
        emit("        }")
        emit("")
        emit(f"        location = {RELAY_ACK_PATH} {{")
        emit("            return 204;")
        emit("        }")
        emit("")
        emit(f"        # The copy itself: headers as the client-facing server sent them ({SHADOW_REQUEST_HEADER},")
        emit("        # X-Request-Id, X-Forwarded-For); carried on after the acknowledged sender hangs up.")
        emit(f"        location = {RELAY_SHADOW_PATH} {{")
        emit("            internal;")
        emit('            if ($dockyard_shadow_upstream = "") {')
        emit("                return 204;")
        emit("            }")
        emit("            proxy_pass http://$dockyard_shadow_upstream$request_uri;")
        emit("            proxy_http_version 1.1;")
        emit('            proxy_set_header Connection "";')
        emit("            proxy_set_header Host $host;")
        emit("            proxy_ignore_client_abort on;")
        emit("            proxy_next_upstream off;")
        emit(f"            proxy_connect_timeout {MIRROR_CONNECT_TIMEOUT};")
        emit(f"            proxy_send_timeout {MIRROR_TIMEOUT};")
        emit(f"            proxy_read_timeout {MIRROR_TIMEOUT};")
        emit("        }")
    emit("    }")
    emit("}")
    return "\n".join(out) + "\n"


def _router_labels(md_name: str, model_name: str) -> dict[str, str]:
    return standard_labels(owner_kind=OWNER_KIND, owner_name=md_name, component=ROUTER_COMPONENT,
                           extra={MODEL_LABEL: model_name})


def router_upstreams(owner_ns: str, md_name: str, spec: ModelDeploymentSpec,
                     cfg: OperatorConfig) -> dict[str, str]:
    """Variant name -> ``<md>-<variant>.<ns>.svc.<domain>:<http port>``."""
    port = http_port(spec.runtime)
    return {v.name: f"{variant_fqdn(owner_ns, md_name, v.name, cfg)}:{port}" for v in spec.variants}


def build_router_service(owner: dict[str, Any], spec: ModelDeploymentSpec, *,
                         selector: dict[str, str], target_port: int | str) -> dict[str, Any]:
    """The user-facing Service ``<md>``: port 80 (``http``) to ``target_port``."""
    md_name, ns = owner_name_ns(owner)
    svc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": router_service_name(md_name),
            "namespace": ns,
            "labels": _router_labels(md_name, spec.model_name),
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": ROUTER_SERVICE_PORT, "targetPort": target_port,
                       "protocol": "TCP", "appProtocol": "http"}],
        },
    }
    return stamp_spec_hash(svc)


def build_router_objects(
    owner: dict[str, Any], spec: ModelDeploymentSpec, resolved: Mapping[str, str], cfg: OperatorConfig
) -> list[dict[str, Any]]:
    """ConfigMap ``<md>-router``, Deployment ``<md>-router`` and Service ``<md>``, in apply order.

    The pod template carries ``dockyard.dev/config-hash`` = hash of nginx.conf, so a config
    change (weights, versions, sticky/force headers) rolls the router pods; the variant
    Deployments never see weights.
    """
    md_name, ns = owner_name_ns(owner)
    config = render_nginx_config(spec, router_upstreams(ns, md_name, spec, cfg), resolved)
    name = router_name(md_name)
    labels = _router_labels(md_name, spec.model_name)
    owner_ref = owner_reference(owner)

    config_map: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": dict(labels), "ownerReferences": [owner_ref]},
        "data": {CONFIG_KEY: config},
    }

    container: dict[str, Any] = {
        "name": "nginx",
        "image": cfg.router_image,
        "imagePullPolicy": cfg.image_pull_policy,
        "command": ["nginx", "-c", CONFIG_PATH, "-e", "stderr", "-g", "daemon off;"],
        "ports": [{"name": "http", "containerPort": ROUTER_CONTAINER_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": HEALTH_PATH, "port": "http"},
            "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": HEALTH_PATH, "port": "http"},
            "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3,
        },
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "lifecycle": drain_lifecycle(),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": dict(labels),
                     "ownerReferences": [dict(owner_ref)]},
        "spec": {
            "replicas": spec.router.replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": router_selector(md_name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {
                    "labels": pod_template_labels(labels),
                    "annotations": {CONFIG_HASH_ANNOTATION: content_hash(config)},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": NGINX_UID,
                        "runAsGroup": NGINX_UID,
                        "fsGroup": NGINX_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": name, "items": [
                            {"key": CONFIG_KEY, "path": CONFIG_KEY}]}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": tmp_size_limit(spec)}},
                    ],
                },
            },
        },
    }
    service = build_router_service(owner, spec, selector=router_selector(md_name),
                                   target_port=ROUTER_CONTAINER_PORT)
    return [stamp_spec_hash(config_map), stamp_spec_hash(deployment), service]
