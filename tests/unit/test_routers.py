"""Unit tests for the routers: weight normalisation, the nginx renderer, HTTPRoute,
VirtualService, SeldonDeployment, and hostile strings (API model and renderer)."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pydantic
import pytest

from dockyard.api.modeldeployment import (
    IstioRouter,
    ModelDeploymentSpec,
    RateLimit,
    RouterLimits,
    RouterSpec,
    StickySession,
    Variant,
)
from dockyard.config import OperatorConfig
from dockyard.routers import builtin, gateway, istio, seldon
from dockyard.routers.common import format_percent, normalise_weights
from tests.serving.golden import assert_golden_text

OWNER: dict[str, Any] = {
    "apiVersion": "dockyard.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "iris", "namespace": "ml", "uid": "0b9c6d1e-0000-4000-8000-000000000001"},
}
CFG = OperatorConfig()


def spec_of(weights: dict[str, int], **router: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {
            "modelName": "iris-classifier",
            "variants": [
                {"name": n, "version": str(i + 1), "weight": w} for i, (n, w) in enumerate(weights.items())
            ],
            "router": router,
        }
    )


def local(spec: ModelDeploymentSpec) -> tuple[dict[str, str], dict[str, str]]:
    ups = {v.name: f"127.0.0.1:{9001 + i}" for i, v in enumerate(spec.variants)}
    return ups, {v.name: v.version or "1" for v in spec.variants}


def split_shares(conf: str) -> dict[str, int]:
    """Parse split_clients back into 10000ths; the '*' entry gets the rest."""
    block = re.search(r"split_clients [^{]*\{(.*?)\}", conf, re.S)
    assert block
    shares: dict[str, int] = {}
    star = None
    for line in block.group(1).strip().splitlines():
        m = re.fullmatch(r"\s*([0-9]+)\.([0-9]{2})% ([a-z0-9-]+);", line)
        if m:
            shares[m.group(3)] = int(m.group(1)) * 100 + int(m.group(2))
            continue
        m = re.fullmatch(r"\s*\* ([a-z0-9-]+);\s+# ([0-9.]+)%", line)
        assert m, line
        star = m.group(1)
        shares[star] = 10000 - sum(shares.values())
        assert format_percent(shares[star]) == m.group(2) + "%"
    assert star is not None
    return shares


# -- weight normalisation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "total", "expected"),
    [
        ([("a", 80), ("b", 20)], 10000, {"a": 8000, "b": 2000}),
        ([("a", 8), ("b", 2)], 100, {"a": 80, "b": 20}),
        ([("only", 7)], 100, {"only": 100}),
        ([("a", 1), ("b", 1), ("c", 1)], 100, {"a": 34, "b": 33, "c": 33}),
        ([("a", 1), ("b", 1), ("c", 1)], 10000, {"a": 3334, "b": 3333, "c": 3333}),
        ([("a", 0), ("b", 1), ("c", 1), ("d", 1)], 100, {"a": 0, "b": 34, "c": 33, "d": 33}),
        ([("a", 2), ("b", 1)], 100, {"a": 67, "b": 33}),
        ([("a", 1), ("b", 2)], 100, {"a": 33, "b": 67}),
        ([("a", 0), ("b", 5)], 10000, {"a": 0, "b": 10000}),
        # a tiny positive weight keeps one unit instead of rounding to 0
        ([("big", 1000), ("tiny", 1)], 100, {"big": 99, "tiny": 1}),
        ([("big", 1000), ("t1", 1), ("t2", 1)], 100, {"big": 98, "t1": 1, "t2": 1}),
    ],
)
def test_normalise_weights(weights: list[tuple[str, int]], total: int, expected: dict[str, int]) -> None:
    assert normalise_weights(weights, total) == expected


def test_normalise_weights_properties() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        n = rng.randint(1, 10)
        weights = [(f"v{i}", rng.choice([0, 0, 1, 2, 3, 7, 33, 100, 999, 1000])) for i in range(n)]
        if not any(w for _, w in weights):
            weights[0] = ("v0", 1)
        total_w = sum(w for _, w in weights)
        for total in (100, 10000):
            units = normalise_weights(weights, total)
            assert sum(units.values()) == total
            assert normalise_weights(weights, total) == units  # deterministic
            for name, w in weights:
                exact = w * total / total_w
                if w == 0:
                    assert units[name] == 0
                else:
                    assert units[name] >= 1
                    # within one unit of the exact share, plus what the minimum-1 rule moved
                    assert abs(units[name] - exact) < 1 + sum(
                        1 for _, x in weights if x and x * total < total_w
                    )


@pytest.mark.parametrize("bad", [[], [("a", 0)], [("a", -1), ("b", 2)], [("a", 1), ("a", 1)]])
def test_normalise_weights_rejects(bad: list[tuple[str, int]]) -> None:
    with pytest.raises(ValueError):
        normalise_weights(bad, 100)


# -- the nginx renderer --------------------------------------------------------------------------


def test_render_split_sums_to_100_and_matches_weights() -> None:
    spec = spec_of({"a": 1, "b": 1, "c": 1})
    conf = builtin.render_nginx_config(spec, *local(spec))
    assert split_shares(conf) == {"a": 3334, "b": 3333, "c": 3333}
    assert "33.34% a;" in conf and "33.33% b;" in conf and "* c;  # 33.33%" in conf


def test_render_weight_zero_has_no_bucket_but_is_forceable() -> None:
    spec = spec_of({"main": 9, "dark": 0, "canary": 1}, allowVariantForcing=True)
    conf = builtin.render_nginx_config(spec, *local(spec))
    assert split_shares(conf) == {"main": 9000, "canary": 1000}
    assert not re.search(r"^\s*0\.00% ", conf, re.M)  # nginx reads 0% as "the rest"
    force_map = re.search(r"map \$http_x_dockyard_variant \$dockyard_forced \{(.*?)\}", conf, re.S)
    assert force_map and "\\dark dark;" in force_map.group(1)
    assert "upstream dockyard-variant-dark {" in conf


def test_render_single_variant() -> None:
    spec = spec_of({"only": 5})
    conf = builtin.render_nginx_config(spec, *local(spec))
    assert split_shares(conf) == {"only": 10000}


def test_render_random_by_default_sticky_when_asked() -> None:
    spec = spec_of({"a": 80, "b": 20})
    conf = builtin.render_nginx_config(spec, *local(spec))
    assert 'split_clients "iris-classifier:$request_id" $dockyard_split {' in conf
    assert "$http_x_user_id" not in conf
    sticky = spec_of({"a": 80, "b": 20}, sticky={"header": "X-User-Id"})
    conf = builtin.render_nginx_config(sticky, *local(sticky))
    assert 'split_clients "iris-classifier:$dockyard_split_key" $dockyard_split {' in conf
    # A request without the header (or with an empty one) falls back to the random key.
    assert re.search(
        r'map \$http_x_user_id \$dockyard_split_key \{\s*"" \$request_id;\s*default \$http_x_user_id;', conf
    )


def test_render_force_header_response_headers_and_paths() -> None:
    spec = spec_of({"a": 80, "b": 20}, forceHeader="X-Force-Variant", allowVariantForcing=True)
    conf = builtin.render_nginx_config(
        spec,
        *local(spec),
        listen_port=18080,
        pid_path="/run/x/nginx.pid",
        temp_dir="/var/tmp/ng",
        model_name_header=False,
    )
    assert "map $http_x_force_variant $dockyard_forced {" in conf
    assert "listen 18080;" in conf and "pid /run/x/nginx.pid;" in conf
    assert "proxy_temp_path /var/tmp/ng/proxy_temp;" in conf
    assert "add_header X-Dockyard-Variant $dockyard_variant always;" in conf
    assert "add_header X-Dockyard-Model-Version $dockyard_model_version always;" in conf
    assert "X-Dockyard-Model " not in conf
    assert "location = /healthz {" in conf
    assert "proxy_pass http://$dockyard_upstream;" in conf  # no URI part: the path is passed as is
    assert "access_log /dev/stdout dockyard;" in conf


def test_render_map_keywords_are_escaped() -> None:
    spec = spec_of({"default": 1, "include": 1, "hostnames": 1, "volatile": 1}, allowVariantForcing=True)
    conf = builtin.render_nginx_config(spec, *local(spec))
    for name in ("default", "include", "hostnames", "volatile"):
        assert f"\\{name} {name};" in conf
    assert not re.search(r"^\s*include\s", conf, re.M)


def test_golden_nginx_conf() -> None:
    spec = spec_of({"champion": 80, "challenger": 20, "shadow": 0}, sticky={"header": "X-User-Id"})
    ups = builtin.router_upstreams("ml", "iris", spec, CFG)
    assert ups["champion"] == "iris-champion.ml.svc.cluster.local:8080"
    assert_golden_text(
        "nginx-sticky.conf",
        builtin.render_nginx_config(spec, ups, {"champion": "3", "challenger": "4", "shadow": "1"}),
    )


def test_router_objects() -> None:
    """The objects' fields are in the golden file builtin-mlserver-sticky.yaml; here: they agree
    with each other and with the spec."""
    spec = spec_of({"champion": 80, "challenger": 20}, replicas=3)
    versions = {"champion": "3", "challenger": "4"}
    cm, dep, svc = builtin.build_router_objects(OWNER, spec, versions, CFG)
    assert cm["data"]["nginx.conf"] == builtin.render_nginx_config(
        spec, builtin.router_upstreams("ml", "iris", spec, CFG), versions
    )
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert dep["spec"]["replicas"] == 3


# -- hostile strings -----------------------------------------------------------------------------
# The API refuses them (corpus: tests/data/invalid/modeldeployment-*-{name,header,version}*.yaml);
# the renderer must refuse them too when a spec reaches it unvalidated.

HOSTILE_VARIANTS = ["a;b", "x\n}", "x\n", "A", "a b", "a$b", "-a", "a}", 'a"b', "ä", "a" * 21, ""]
HOSTILE_HEADERS = [
    "X User",
    "X-User\n",
    "X-User\r\nX: y",
    "$x",
    "X_User",
    "X-User;",
    "1X",
    "X-User}",
    "",
    "X" * 65,
]
HOSTILE_MODELS = [
    'iris"; include /etc/passwd; #',
    "iris'",
    "iris\n",
    "ir is",
    "$iris",
    "iris;",
    "{iris}",
    "-iris",
]


def _bypassed(
    *, variant: str = "a", model: str = "iris", force: str = "X-Dockyard-Variant", sticky: str | None = None
) -> ModelDeploymentSpec:
    """A spec built without validation: what the renderer must still refuse."""
    router = RouterSpec.model_construct(
        type="builtin",
        force_header=force,
        replicas=1,
        gateway=None,
        istio=None,
        sticky=StickySession.model_construct(header=sticky) if sticky is not None else None,
    )
    variants = [
        Variant.model_construct(name=variant, version="1", alias=None, weight=1, replicas=1, resources=None)
    ]
    return ModelDeploymentSpec.model_construct(
        model_name=model,
        variants=variants,
        runtime="mlserver",
        router=router,
        alias_refresh_interval="60s",
        image=None,
    )


@pytest.mark.parametrize("name", [n for n in HOSTILE_VARIANTS if n and n != "a" * 21])
def test_renderer_rejects_hostile_variant_names(name: str) -> None:
    spec = _bypassed(variant=name)
    with pytest.raises(ValueError, match="refusing"):
        builtin.render_nginx_config(spec, {name: "127.0.0.1:9001"}, {name: "1"})


@pytest.mark.parametrize("header", HOSTILE_HEADERS)
def test_renderer_rejects_hostile_headers(header: str) -> None:
    for spec in (_bypassed(force=header), _bypassed(sticky=header)):
        with pytest.raises(ValueError, match="refusing"):
            builtin.render_nginx_config(spec, {"a": "127.0.0.1:9001"}, {"a": "1"})


@pytest.mark.parametrize("model", HOSTILE_MODELS)
def test_renderer_rejects_hostile_model_names(model: str) -> None:
    with pytest.raises(ValueError, match="refusing"):
        builtin.render_nginx_config(_bypassed(model=model), {"a": "127.0.0.1:9001"}, {"a": "1"})


@pytest.mark.parametrize(
    "upstream",
    [
        "evil;}",
        "127.0.0.1:99999",
        "127.0.0.1:0",
        "host:80\n",
        "a b:80",
        "host",
        "http://host:80",
        "host:80;include /etc/passwd",
        "[::1]:80",
        "HOST:80",
        ":80",
    ],
)
def test_renderer_rejects_hostile_upstreams(upstream: str) -> None:
    spec = spec_of({"a": 1})
    with pytest.raises(ValueError, match="refusing"):
        builtin.render_nginx_config(spec, {"a": upstream}, {"a": "1"})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pid_path": "/tmp/x.pid; include /etc/passwd"}, "refusing"),
        ({"pid_path": "relative.pid"}, "refusing"),
        ({"temp_dir": "/tmp/../etc"}, "refusing"),
        ({"temp_dir": "/tmp/a b"}, "refusing"),
        ({"listen_port": 0}, "refusing"),
        ({"listen_port": 70000}, "refusing"),
    ],
)
def test_renderer_rejects_bad_paths_and_ports(kwargs: dict[str, Any], match: str) -> None:
    spec = spec_of({"a": 1})
    with pytest.raises(ValueError, match=match):
        builtin.render_nginx_config(spec, {"a": "127.0.0.1:9001"}, {"a": "1"}, **kwargs)


def test_renderer_rejects_mismatched_inputs() -> None:
    spec = spec_of({"a": 1, "b": 1})
    with pytest.raises(ValueError, match="upstreams"):
        builtin.render_nginx_config(spec, {"a": "127.0.0.1:1"}, {"a": "1", "b": "2"})
    with pytest.raises(ValueError, match="upstreams"):
        builtin.render_nginx_config(
            spec, {"a": "127.0.0.1:1", "b": "127.0.0.1:2", "c": "127.0.0.1:3"}, {"a": "1", "b": "2"}
        )
    with pytest.raises(ValueError, match="resolved version"):
        builtin.render_nginx_config(spec, {"a": "127.0.0.1:1", "b": "127.0.0.1:2"}, {"a": "1"})
    with pytest.raises(ValueError, match="model version"):
        builtin.render_nginx_config(spec, {"a": "127.0.0.1:1", "b": "127.0.0.1:2"}, {"a": "1", "b": "2;"})


# -- gateway ----------------------------------------------------------------------------------------


def test_http_route() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {
            "modelName": "iris-classifier",
            "runtime": "seldon",
            "variants": [
                {"name": "a", "version": "1", "weight": 3},
                {"name": "b", "version": "2", "weight": 0},
            ],
            "router": {
                "type": "gateway",
                "gateway": {
                    "parentRefs": [
                        {"name": "public", "namespace": "gw", "sectionName": "http"},
                        {"name": "internal"},
                    ],
                    "hostnames": ["iris.example.com", "*.models.example.com"],
                },
            },
        }
    )
    (route,) = gateway.build_router_objects(OWNER, spec, {"a": "1", "b": "2"}, CFG)
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1" and route["kind"] == "HTTPRoute"
    assert route["metadata"]["name"] == "iris"
    assert route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "public",
            "namespace": "gw",
            "sectionName": "http",
        },
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "internal"},
    ]
    assert route["spec"]["hostnames"] == ["iris.example.com", "*.models.example.com"]
    (rule,) = route["spec"]["rules"]
    assert [(b["name"], b["port"], b["weight"]) for b in rule["backendRefs"]] == [
        ("iris-a", 9000, 3),
        ("iris-b", 9000, 0),
    ]


# -- istio ------------------------------------------------------------------------------------------


# The VirtualService for weights 1/1/1/0 is the golden file tests/golden/serving/istio.yaml.


def test_virtual_service_hosts_and_gateways() -> None:
    spec = spec_of(
        {"a": 1},
        type="istio",
        istio={
            "hosts": ["iris.example.com", "*.ml.example.com"],
            "gateways": ["istio-system/public", "mesh"],
        },
    )
    (_, vs) = istio.build_router_objects(OWNER, spec, {"a": "1"}, CFG)
    assert vs["spec"]["hosts"] == ["iris.example.com", "*.ml.example.com"]
    assert vs["spec"]["gateways"] == ["istio-system/public", "mesh"]
    assert vs["spec"]["http"][-1]["route"][0]["weight"] == 100


@pytest.mark.parametrize(
    "istio_cfg",
    [
        {"hosts": ["*"]},
        {"hosts": ["a b"]},
        {"hosts": ["iris\n"]},
        {"gateways": ["a/b/c"]},
        {"gateways": ["x;y"]},
        {"gateways": ["*"]},
    ],
)
def test_virtual_service_rejects_hostile_hosts(istio_cfg: dict[str, Any]) -> None:
    # The API refuses them (corpus: modeldeployment-istio-*.yaml); the builder refuses them again
    # when handed an unvalidated spec (defence in depth).
    valid = spec_of({"a": 1}, type="istio")
    unvalidated = valid.model_copy(
        update={"router": valid.router.model_copy(update={"istio": IstioRouter.model_construct(**istio_cfg)})}
    )
    with pytest.raises(ValueError, match="refusing"):
        istio.build_router_objects(OWNER, unvalidated, {"a": "1"}, CFG)


# -- seldon -----------------------------------------------------------------------------------------


def test_seldon_deployment() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {
            "modelName": "iris-classifier",
            "variants": [
                {
                    "name": "a",
                    "version": "1",
                    "weight": 2,
                    "replicas": 2,
                    "resources": {"limits": {"memory": "1Gi"}},
                },
                {"name": "b", "version": "2", "weight": 1},
                {"name": "c", "version": "3", "weight": 0, "replicas": 0},
            ],
            "router": {"type": "seldon"},
        }
    )
    uris = {
        "a": "s3://bucket/1/r1/artifacts/model",
        "b": "s3://bucket/1/r2/artifacts/model",
        "c": "gs://bucket/m/3",
    }
    (sdep,) = seldon.build_router_objects(OWNER, spec, {"a": "1", "b": "2", "c": "3"}, CFG, model_uris=uris)
    assert sdep["apiVersion"] == "machinelearning.seldon.io/v1" and sdep["kind"] == "SeldonDeployment"
    assert sdep["spec"]["protocol"] == "v2"
    preds = sdep["spec"]["predictors"]
    assert [(p["name"], p["replicas"], p["traffic"]) for p in preds] == [
        ("a", 2, 67),
        ("b", 1, 33),
        ("c", 0, 0),
    ]
    assert sum(p["traffic"] for p in preds) == 100
    assert preds[0]["graph"] == {
        "name": "model",
        "type": "MODEL",
        "implementation": "MLFLOW_SERVER",
        "modelUri": uris["a"],
        "children": [],
    }
    assert preds[1]["labels"]["dockyard.dev/model-version"] == "2"
    comp = preds[0]["componentSpecs"][0]["spec"]
    assert comp["securityContext"]["runAsNonRoot"] is True
    assert comp["containers"][0]["name"] == "model"
    assert comp["containers"][0]["resources"] == {"limits": {"memory": "1Gi"}}
    assert comp["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_seldon_runtime_protocol() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {
            "modelName": "m",
            "runtime": "seldon",
            "variants": [{"name": "a", "version": "1", "weight": 1}],
            "router": {"type": "seldon"},
        }
    )
    (sdep,) = seldon.build_router_objects(OWNER, spec, {"a": "1"}, CFG, model_uris={"a": "s3://b/m"})
    assert sdep["spec"]["protocol"] == "seldon"
    assert sdep["spec"]["predictors"][0]["traffic"] == 100


@pytest.mark.parametrize("uri", ["s3://b/m\n", "s3://b/m x", 's3://b/"m', "no-scheme", "", "s3://b/m;rm"])
def test_seldon_rejects_hostile_model_uris(uri: str) -> None:
    spec = spec_of({"a": 1}, type="seldon")
    with pytest.raises(ValueError, match="refusing"):
        seldon.build_router_objects(OWNER, spec, {"a": "1"}, CFG, model_uris={"a": uri})
    with pytest.raises(ValueError, match="model URI"):
        seldon.build_router_objects(OWNER, spec, {"a": "1"}, CFG, model_uris={})


# -- shadow variants ---------------------------------------------------------------------------------


def shadow_spec(router: dict[str, Any], *, shadow: int = 10) -> ModelDeploymentSpec:
    """Live a/b at 3:1 and a shadow ``dark`` whose declared weight (50) must be ignored."""
    return ModelDeploymentSpec.model_validate({
        "modelName": "iris-classifier",
        "variants": [
            {"name": "a", "version": "1", "weight": 3},
            {"name": "b", "version": "2", "weight": 1},
            {"name": "dark", "version": "3", "weight": 50, "shadow": shadow},
        ],
        "router": router,
    })


VERSIONS3 = {"a": "1", "b": "2", "dark": "3"}


def test_nginx_mirrors_a_share_to_the_shadow_which_never_answers() -> None:
    spec = shadow_spec({"allowVariantForcing": True})
    conf = builtin.render_nginx_config(spec, *local(spec))
    assert split_shares(conf) == {"a": 7500, "b": 2500}  # the shadow's weight 50 is ignored
    # An independent per-request draw (salted by the shadow's name) selects the mirrored share.
    assert re.search(r'split_clients "iris-classifier:shadow:dark:\$request_id" \$dockyard_mirror_dark '
                     r'\{\s*10% 1;\s*\* "";\s*\}', conf)
    location_root = re.search(r"location / \{(.*?)\}", conf, re.S)
    assert location_root and "mirror /_dockyard/mirror/dark;" in location_root.group(1)
    mirror = re.search(r"location = /_dockyard/mirror/dark \{(.*?)\n        \}", conf, re.S)
    assert mirror
    body = mirror.group(1)
    assert "internal;" in body
    assert re.search(r'if \(\$dockyard_mirror_dark = ""\) \{\s*return 204;', body)  # unsampled: no connection
    # A sampled copy goes to the relay on loopback, never straight to the shadow (whose
    # slowness would then hold the client's keep-alive connection).
    assert f"proxy_pass http://127.0.0.1:{builtin.RELAY_PORT}$request_uri;" in body
    assert "proxy_set_header X-Dockyard-Shadow dark;" in body
    assert "proxy_next_upstream off;" in body
    assert "dockyard-variant-dark" not in body
    # The relay: loopback only, acknowledges at once, forwards to the shadow its header names
    # and keeps going after the acknowledged sender hangs up.
    relay = conf[conf.index(f"listen 127.0.0.1:{builtin.RELAY_PORT};"):]
    assert re.search(rf"location / \{{\s*limit_conn dockyard_shadow_relay {builtin.RELAY_MAX_COPIES};\s*"
                     r"mirror /_dockyard/shadow;\s*mirror_request_body on;\s*"
                     r"set \$dockyard_relay_ack /_dockyard/ack;\s*"
                     rf"proxy_pass http://127.0.0.1:{builtin.RELAY_PORT}\$dockyard_relay_ack;", relay)
    assert re.search(r"location = /_dockyard/ack \{\s*return 204;\s*\}", relay)
    forward = re.search(r"location = /_dockyard/shadow \{(.*?)\n        \}", relay, re.S)
    assert forward and "internal;" in forward.group(1)
    assert "proxy_pass http://$dockyard_shadow_upstream$request_uri;" in forward.group(1)
    assert "proxy_ignore_client_abort on;" in forward.group(1)
    assert re.search(r"map \$http_x_dockyard_shadow \$dockyard_shadow_upstream \{\s*default \"\";\s*"
                     r"\\dark dockyard-variant-dark;\s*\}", conf)
    # Neither the force header nor the response headers can name the shadow.
    for block in ("dockyard_forced", "dockyard_upstream", "dockyard_model_version"):
        found = re.search(r"map \S+ \$" + block + r" \{(.*?)\}", conf, re.S)
        assert found and "dark" not in found.group(1), block


def test_nginx_full_shadow_is_always_mirrored() -> None:
    spec = shadow_spec({}, shadow=100)
    conf = builtin.render_nginx_config(spec, *local(spec))
    assert re.search(r"\$dockyard_mirror_dark \{\s*\* 1;\s*\}", conf)


def test_nginx_relay_only_with_shadows_and_on_its_own_port() -> None:
    plain = ModelDeploymentSpec.model_validate({"modelName": "iris-classifier", "variants": [
        {"name": "a", "version": "1", "weight": 1}]})
    conf = builtin.render_nginx_config(plain, *local(plain))
    assert "mirror" not in conf and "127.0.0.1" not in conf.replace("server 127.0.0.1:", "")
    spec = shadow_spec({})
    with pytest.raises(ValueError, match="relay port"):
        builtin.render_nginx_config(spec, *local(spec), listen_port=9000, relay_port=9000)


def test_routers_take_the_live_split_from_the_spec_they_are_given() -> None:
    """A rollout hands the routers a copy of the spec with its effective weights: every router
    must follow that copy (``live_weights()``), shadows staying at 0."""
    base = shadow_spec({})
    effective = base.model_copy(update={"variants": [
        v.model_copy(update={"weight": w}) for v, w in zip(base.variants, (1, 1, 7), strict=True)
    ]})
    conf = builtin.render_nginx_config(effective, *local(effective))
    assert split_shares(conf) == {"a": 5000, "b": 5000}
    gw = effective.model_copy(update={"router": RouterSpec(type="gateway")})
    (route,) = gateway.build_router_objects(OWNER, gw, VERSIONS3, CFG)
    assert [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]] == [
        ("iris-a", 1), ("iris-b", 1)]
    vs_spec = effective.model_copy(update={"router": RouterSpec(type="istio")})
    (_, vs) = istio.build_router_objects(OWNER, vs_spec, VERSIONS3, CFG)
    assert [d["weight"] for d in vs["spec"]["http"][-1]["route"]] == [50, 50]
    sd_spec = shadow_spec({"type": "seldon"}, shadow=100)
    sd_spec = sd_spec.model_copy(update={"variants": [
        v.model_copy(update={"weight": w}) for v, w in zip(sd_spec.variants, (1, 1, 7), strict=True)
    ]})
    uris = {n: f"s3://b/{n}" for n in VERSIONS3}
    (sdep,) = seldon.build_router_objects(OWNER, sd_spec, VERSIONS3, CFG, model_uris=uris)
    assert [p["traffic"] for p in sdep["spec"]["predictors"]] == [50, 50, 0]


def test_http_route_mirrors_the_shadow() -> None:
    spec = shadow_spec({"type": "gateway", "gateway": {"parentRefs": [{"name": "gw"}]}})
    (route,) = gateway.build_router_objects(OWNER, spec, VERSIONS3, CFG)
    (rule,) = route["spec"]["rules"]
    assert [b["name"] for b in rule["backendRefs"]] == ["iris-a", "iris-b"]  # the shadow takes no live traffic
    assert rule["filters"] == [{
        "type": "RequestMirror",
        "requestMirror": {
            "backendRef": {"group": "", "kind": "Service", "name": "iris-dark", "port": 8080},
            "percent": 10,
        },
    }]


def test_virtual_service_mirrors_the_shadow_on_every_route() -> None:
    spec = shadow_spec({"type": "istio", "allowVariantForcing": True})
    (_, vs) = istio.build_router_objects(OWNER, spec, VERSIONS3, CFG)
    routes = vs["spec"]["http"]
    assert [r["name"] for r in routes] == ["force-a", "force-b", "weighted"]  # no force route to a shadow
    hosts = [d["destination"]["host"] for d in routes[-1]["route"]]
    assert hosts == ["iris-a.ml.svc.cluster.local", "iris-b.ml.svc.cluster.local"]
    for route in routes:
        assert route["mirrors"] == [{
            "destination": {"host": "iris-dark.ml.svc.cluster.local", "port": {"number": 8080}},
            "percentage": {"value": 10.0},
        }]
    assert routes[0]["mirrors"] is not routes[1]["mirrors"]


def test_seldon_shadow_predictor() -> None:
    spec = shadow_spec({"type": "seldon"}, shadow=100)
    uris = {n: f"s3://b/{n}" for n in VERSIONS3}
    (sdep,) = seldon.build_router_objects(OWNER, spec, VERSIONS3, CFG, model_uris=uris)
    preds = {p["name"]: p for p in sdep["spec"]["predictors"]}
    assert preds["dark"]["shadow"] is True and preds["dark"]["traffic"] == 0
    assert "shadow" not in preds["a"] and preds["a"]["traffic"] + preds["b"]["traffic"] == 100
    # The API refuses a partial shadow with seldon (corpus: modeldeployment-seldon-shadow-*.yaml);
    # the builder refuses it again when handed an unvalidated spec.
    partial = spec.model_copy(update={"variants": [*spec.variants[:2], spec.variants[2].model_copy(
        update={"shadow": 10})]})
    with pytest.raises(ValueError, match="Seldon mirrors every request"):
        seldon.build_router_objects(OWNER, partial, VERSIONS3, CFG, model_uris=uris)


# -- the router's edge: forcing, body size, timeout, rate limit --------------------------------------


def error_answers(conf: str) -> dict[int, tuple[dict[str, Any], str]]:
    """The builtin router's own refusals: status -> (JSON body, with nginx variables left as
    written, and the whole internal location)."""
    answers = {}
    pages = dict(re.findall(r"error_page (\d+) (\S+);", conf))
    for status, path in pages.items():
        location = re.search(rf"location = {re.escape(path)} \{{(.*?)\n        \}}", conf, re.S)
        assert location, path
        body = location.group(1)
        assert "internal;" in body and "default_type application/json;" in body
        returned = re.search(rf"return {status} '(.*)';", body)
        assert returned, body
        answers[int(status)] = (json.loads(returned.group(1)), body)
    return answers


def root_location(conf: str) -> str:
    found = re.search(r"location / \{(.*?)\n        \}", conf, re.S)
    assert found
    return found.group(1)


def test_edge_defaults_forcing_off_16mi_60s_no_rate_limit() -> None:
    spec = spec_of({"main": 9, "dark": 0})
    conf = builtin.render_nginx_config(spec, *local(spec))
    assert "client_max_body_size 16m;" in conf
    assert "proxy_read_timeout 60s;" in root_location(conf) and "limit_req" not in conf
    answers = error_answers(conf)
    assert sorted(answers) == [403, 413, 502, 504]
    # The V2 error shape: one "error" string, saying what to change.
    assert all(list(body) == ["error"] and isinstance(body["error"], str) for body, _ in answers.values())
    assert "allowVariantForcing" in answers[403][0]["error"]
    assert "16Mi" in answers[413][0]["error"]
    assert "60s" in answers[504][0]["error"]
    # Gateway errors name the variant that was chosen, as its own answers do.
    assert "add_header X-Dockyard-Variant $dockyard_variant always;" in answers[504][1]


def test_edge_limits_are_rendered() -> None:
    spec = spec_of({"a": 1}, limits={"maxBodySize": "512Ki", "timeoutSeconds": 5,
                                     "rateLimit": {"requestsPerSecond": 20, "burst": 5}})
    conf = builtin.render_nginx_config(spec, *local(spec))
    assert "client_max_body_size 512k;" in conf  # nginx's k is 1024 bytes
    root = root_location(conf)
    assert "proxy_read_timeout 5s;" in root and "proxy_send_timeout 5s;" in root
    assert re.search(r"limit_req_zone \$binary_remote_addr zone=(\S+):\S+ rate=20r/s;", conf)
    assert "limit_req zone=dockyard_clients burst=5 nodelay;" in root and "limit_req_status 429;" in root
    answers = error_answers(conf)
    assert sorted(answers) == [403, 413, 429, 502, 504]
    assert "20 requests per second" in answers[429][0]["error"]
    assert "add_header Retry-After 1 always;" in answers[429][1]
    assert "512Ki" in answers[413][0]["error"] and "5s" in answers[504][0]["error"]


def test_forcing_off_refuses_the_header_before_anything_else() -> None:
    """The force header is refused before the rate limit counts the request and before any
    proxying (mirrors included), and nothing maps a forced value to a variant."""
    spec = spec_of({"main": 9, "dark": 0}, limits={"rateLimit": {"requestsPerSecond": 5}})
    spec.variants.append(Variant(name="shadow", version="3", shadow=100))
    conf = builtin.render_nginx_config(spec, *local(spec))
    root = root_location(conf)
    assert re.match(r"\s*if \(\$dockyard_force_refused\) \{\s*return 403;\s*\}", root)
    assert root.index("return 403;") < root.index("limit_req ") < root.index("proxy_pass") < root.index("mirror ")
    assert re.search(r'map \$http_x_dockyard_variant \$dockyard_force_refused \{\s*"" "";\s*default 1;\s*\}', conf)
    assert "$dockyard_forced" not in conf
    # A client cannot name a shadow to the relay either: only the mirror location sets the header.
    assert 'proxy_set_header X-Dockyard-Shadow "";' in root


@pytest.mark.parametrize("allow", [False, True])
def test_sticky_never_lands_on_weight_zero(allow: bool) -> None:
    """The sticky hash picks among weighted buckets only; without forcing, nothing else can pick a
    variant, so a weight-0 variant has no way in at all."""
    spec = spec_of({"main": 3, "dark": 0, "canary": 1}, sticky={"header": "X-User-Id"},
                   allowVariantForcing=allow)
    conf = builtin.render_nginx_config(spec, *local(spec))
    assert split_shares(conf) == {"main": 7500, "canary": 2500}
    routed = re.search(r"map \$dockyard_variant \$dockyard_upstream \{(.*?)\}", conf, re.S)
    assert routed
    assert ("dockyard-variant-dark" in routed.group(1)) is allow  # forcing on: reachable by name only
    if not allow:
        assert re.search(r"map \$dockyard_split \$dockyard_variant \{\s*default \$dockyard_split;\s*\}", conf)


def test_tmp_volume_holds_several_maximal_bodies() -> None:
    assert builtin.tmp_size_limit(spec_of({"a": 1})) == "256Mi"
    assert builtin.tmp_size_limit(spec_of({"a": 1}, limits={"maxBodySize": "256Mi"})) == "1024Mi"
    (_, dep, _) = builtin.build_router_objects(OWNER, spec_of({"a": 1}, limits={"maxBodySize": "100Mi"}),
                                               {"a": "1"}, CFG)
    (tmp,) = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "tmp"]
    assert tmp["emptyDir"]["sizeLimit"] == "400Mi"


@pytest.mark.parametrize("allow", [False, True])
def test_http_route_never_matches_a_header_and_carries_the_timeout(allow: bool) -> None:
    spec = spec_of({"a": 1, "dark": 0}, type="gateway", allowVariantForcing=allow, limits={"timeoutSeconds": 7})
    (route,) = gateway.build_router_objects(OWNER, spec, {"a": "1", "dark": "2"}, CFG)
    (rule,) = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert rule["timeouts"] == {"request": "7s"}


def test_virtual_service_renders_force_routes_only_when_allowed() -> None:
    off = spec_of({"a": 1, "dark": 0}, type="istio")
    (_, vs) = istio.build_router_objects(OWNER, off, {"a": "1", "dark": "2"}, CFG)
    (weighted,) = vs["spec"]["http"]  # the header picks nothing: one weighted route, without dark
    assert weighted["name"] == "weighted" and "match" not in weighted
    assert [d["destination"]["host"] for d in weighted["route"]] == ["iris-a.ml.svc.cluster.local"]
    assert weighted["timeout"] == "60s"
    on = spec_of({"a": 1, "dark": 0}, type="istio", allowVariantForcing=True, limits={"timeoutSeconds": 9})
    (_, vs) = istio.build_router_objects(OWNER, on, {"a": "1", "dark": "2"}, CFG)
    assert [r["name"] for r in vs["spec"]["http"]] == ["force-a", "force-dark", "weighted"]
    assert {r["timeout"] for r in vs["spec"]["http"]} == {"9s"}


@pytest.mark.parametrize(
    ("router", "message"),
    [
        ({"type": "gateway", "limits": {"maxBodySize": "1Mi"}}, "builtin router only"),
        ({"type": "istio", "limits": {"rateLimit": {"requestsPerSecond": 1}}}, "builtin router only"),
        ({"type": "seldon", "limits": {"timeoutSeconds": 5}}, "not supported by router.type seldon"),
    ],
)
def test_limits_a_router_cannot_enforce_are_refused(router: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        spec_of({"a": 1}, **router)


@pytest.mark.parametrize(
    "limits",
    [
        RouterLimits.model_construct(max_body_size="1m; include /etc/passwd", timeout_seconds=None, rate_limit=None),
        RouterLimits.model_construct(max_body_size=None, timeout_seconds=0, rate_limit=None),
        RouterLimits.model_construct(max_body_size=None, timeout_seconds="5s; x", rate_limit=None),
        RouterLimits.model_construct(max_body_size=None, timeout_seconds=None,
                                     rate_limit=RateLimit.model_construct(requests_per_second="1r/s", burst=None)),
    ],
)
def test_renderer_rejects_unvalidated_limits(limits: RouterLimits) -> None:
    spec = spec_of({"a": 1})
    bypassed = spec.model_copy(update={"router": spec.router.model_copy(update={"limits": limits})})
    with pytest.raises(ValueError, match="refusing"):
        builtin.render_nginx_config(bypassed, *local(bypassed))
