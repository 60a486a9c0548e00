"""The rendered builtin-router config passes the real `nginx -t` (Debian nginx-light)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dockyard.api.modeldeployment import ModelDeploymentSpec
from dockyard.config import OperatorConfig
from dockyard.routers import builtin

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)
pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx binary not installed (apt-get install nginx-light)"
)

OWNER: dict[str, Any] = {
    "apiVersion": "dockyard.dev/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "iris", "namespace": "ml", "uid": "0b9c6d1e-0000-4000-8000-000000000001"},
}


def nginx_t(conf: str, workdir: Path) -> None:
    path = workdir / "nginx.conf"
    path.write_text(conf)
    proc = subprocess.run(
        [NGINX, "-t", "-q", "-p", str(workdir), "-c", str(path), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, f"nginx -t failed:\n{proc.stderr}\n--- config ---\n{conf}"


SPECS = {
    "two-random": {
        "variants": [{"name": "a", "version": "1", "weight": 80}, {"name": "b", "version": "2", "weight": 20}]
    },
    "sticky-thirds-zero": {
        "variants": [
            {"name": "a", "version": "1", "weight": 1},
            {"name": "b", "version": "2", "weight": 1},
            {"name": "c", "version": "3", "weight": 1},
            {"name": "dark", "version": "4", "weight": 0},
        ],
        "router": {"sticky": {"header": "X-User-Id"}, "forceHeader": "X-Force"},
    },
    "single": {"variants": [{"name": "only", "version": "7", "weight": 1}]},
    "map-keywords": {
        "variants": [
            {"name": n, "version": "1", "weight": 1} for n in ("default", "include", "hostnames", "volatile")
        ]
    },
    "tiny-weight": {
        "variants": [
            {"name": "big", "version": "1", "weight": 1000},
            {"name": "tiny", "version": "2", "weight": 1},
        ]
    },
    "ten-variants": {"variants": [{"name": f"v{i}", "version": str(i + 1), "weight": i} for i in range(10)]},
    "edge-limits": {  # forcing on, every limit at its maximum
        "variants": [{"name": "a", "version": "1", "weight": 1}, {"name": "dark", "version": "2", "weight": 0}],
        "router": {
            "allowVariantForcing": True,
            "limits": {"maxBodySize": "256Mi", "timeoutSeconds": 3600,
                       "rateLimit": {"requestsPerSecond": 100000, "burst": 0}},
        },
    },
    "edge-rate-limit-shadow": {  # forcing off (403 before limit_req) with a shadow's mirror
        "variants": [{"name": "a", "version": "1", "weight": 1}, {"name": "s", "version": "2", "shadow": 50}],
        "router": {"limits": {"maxBodySize": "1Ki", "timeoutSeconds": 1, "rateLimit": {"requestsPerSecond": 1}}},
    },
    "shadows": {  # two shadows (a share and all), a map-keyword name: mirror locations and the relay
        "variants": [
            {"name": "a", "version": "1", "weight": 1},
            {"name": "dark", "version": "2", "shadow": 10},
            {"name": "default", "version": "3", "shadow": 100},
        ],
        "router": {"sticky": {"header": "X-User-Id"}},
    },
}


@pytest.mark.parametrize("case", sorted(SPECS))
@pytest.mark.parametrize("model_header", [True, False])
def test_rendered_config_passes_nginx_t(case: str, model_header: bool, tmp_path: Path) -> None:
    spec = ModelDeploymentSpec.model_validate({"modelName": "iris_classifier.v2-x", **SPECS[case]})
    ups = {v.name: f"127.0.0.1:{20000 + i}" for i, v in enumerate(spec.variants)}
    versions = {v.name: v.version or "1" for v in spec.variants}
    conf = builtin.render_nginx_config(
        spec,
        ups,
        versions,
        listen_port=18080,
        pid_path=f"{tmp_path}/nginx.pid",
        temp_dir=str(tmp_path),
        model_name_header=model_header,
    )
    nginx_t(conf, tmp_path)


def test_production_configmap_passes_nginx_t(tmp_path: Path) -> None:
    """The exact ConfigMap content, with only the cluster DNS upstreams (unresolvable here:
    nginx resolves upstream names at load time) and /tmp paths swapped for local ones."""
    spec = ModelDeploymentSpec.model_validate(
        {
            "modelName": "iris-classifier",
            "variants": [
                {"name": "champion", "alias": "champion", "weight": 80},
                {"name": "challenger", "alias": "challenger", "weight": 20},
            ],
            "router": {"sticky": {"header": "X-User-Id"}},
        }
    )
    cm, _, _ = builtin.build_router_objects(
        OWNER, spec, {"champion": "3", "challenger": "4"}, OperatorConfig()
    )
    conf = cm["data"]["nginx.conf"]
    local, n = re.subn(r"server [a-z0-9.-]+\.svc\.cluster\.local:(\d+);", r"server 127.0.0.1:\1;", conf)
    assert n == 2
    local = local.replace(" /tmp/", f" {tmp_path}/")
    assert "/tmp/" not in local.replace(str(tmp_path), "")
    nginx_t(local, tmp_path)


def test_nginx_t_catches_a_broken_config(tmp_path: Path) -> None:
    """The check is real: a config nginx rejects (buckets summing to more than 100%) fails it."""
    with pytest.raises(AssertionError, match="nginx -t failed"):
        nginx_t("events {}\nhttp { split_clients $request_id $x { 60% a; 60% b; } }\n", tmp_path)
