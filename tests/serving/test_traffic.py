"""The real traffic test: two registered model versions, two real model servers, real nginx.

Path under test, end to end and unmodified: a real MLflow server -> `dockyard train` registers
two versions -> `dockyard fetch-model` downloads each -> `dockyard serve` runs each (MLServer,
and seldon-core for the short seldon test) -> the production renderer
(`render_nginx_config`) writes the router config with 127.0.0.1 upstreams -> real nginx ->
V2 inference requests.

Every response is checked to be a real prediction from the variant its header names: the
router's `X-Dockyard-Model-Version` must equal the `model_version` MLServer itself reports
in the body (seldon: `meta.tags.version`).
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from dockyard.api.modeldeployment import ModelDeploymentSpec
from tests.runtime.helpers import (
    IRIS_SAMPLE_ROWS,
    IRIS_SPECIES,
    fetch_model,
    free_port,
    seldon_payload,
    start_serving_process,
    stop_process,
    train_and_register,
    v2_infer_payload,
)
from tests.serving.nginx_process import NGINX, NginxRouter

pytestmark = [pytest.mark.serving, pytest.mark.skipif(NGINX is None, reason="nginx binary not installed")]

MODEL = "iris-ab-traffic"
WEIGHTS = {"champion": 80, "challenger": 20}
CLIENT_THREADS = 8


@dataclass
class Backend:
    variant: str
    version: str
    port: int
    proc: Any

    @property
    def upstream(self) -> str:
        return f"127.0.0.1:{self.port}"


def spec_for(runtime: str, *, sticky: bool) -> ModelDeploymentSpec:
    router: dict[str, Any] = {"type": "builtin"}
    if sticky:
        router["sticky"] = {"header": "X-User-Id"}
    return ModelDeploymentSpec.model_validate(
        {
            "modelName": MODEL,
            "runtime": runtime,
            "variants": [{"name": n, "alias": n, "weight": w} for n, w in WEIGHTS.items()],
            "router": router,
        }
    )


@pytest.fixture(scope="module")
def versions(mlflow_server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two real versions: champion a 5-tree forest, challenger a 25-tree forest."""
    work = tmp_path_factory.mktemp("train")
    trees = {"champion": 5, "challenger": 25}
    # Two `dockyard train` processes at once; one experiment each (creating the same
    # experiment from two threads races in MLflow).
    with ThreadPoolExecutor(2) as pool:
        futures = {
            v: pool.submit(
                train_and_register,
                mlflow_server.uri,
                MODEL,
                n_estimators=n,
                alias=v,
                workdir=work / v,
                experiment_name=f"traffic-test-{v}",
            )
            for v, n in trees.items()
        }
        out = {v: f.result() for v, f in futures.items()}
    assert out["champion"] != out["challenger"]
    return out


def start_backends(runtime: str, mlflow_uri: str, versions: dict[str, str], root: Path) -> dict[str, Backend]:
    """fetch-model + serve for both variants, the two variants in parallel."""

    def one(variant: str) -> Backend:
        dest = fetch_model(
            mlflow_uri, MODEL, versions[variant], root / variant, variant=variant, runtime=runtime
        )
        port = free_port()
        proc = start_serving_process(runtime, dest, port, variant=variant, timeout=240)
        return Backend(variant, versions[variant], port, proc)

    with ThreadPoolExecutor(2) as pool:
        futures = {v: pool.submit(one, v) for v in WEIGHTS}
    backends: dict[str, Backend] = {}
    errors = []
    for v, f in futures.items():
        try:
            backends[v] = f.result()
        except Exception as exc:
            errors.append(exc)
    if errors:
        stop_backends(backends)
        raise errors[0]
    return backends


@pytest.fixture(scope="module")
def mlserver_backends(
    mlflow_server: Any, versions: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Backend]]:
    backends = start_backends("mlserver", mlflow_server.uri, versions, tmp_path_factory.mktemp("mlserver"))
    yield backends
    stop_backends(backends)


def stop_backends(backends: dict[str, Backend], timeout: float = 20) -> None:
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda b: stop_process(b.proc, timeout), backends.values()))


def start_router(runtime: str, backends: dict[str, Backend], workdir: Path, *, sticky: bool) -> NginxRouter:
    return NginxRouter(
        spec_for(runtime, sticky=sticky),
        {v: b.upstream for v, b in backends.items()},
        {v: b.version for v, b in backends.items()},
        workdir,
    )


@pytest.fixture(scope="module")
def random_router(
    mlserver_backends: dict[str, Backend], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NginxRouter]:
    router = start_router(
        "mlserver", mlserver_backends, tmp_path_factory.mktemp("nginx-random"), sticky=False
    )
    yield router
    router.stop()


@pytest.fixture(scope="module")
def sticky_router(
    mlserver_backends: dict[str, Backend], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NginxRouter]:
    router = start_router("mlserver", mlserver_backends, tmp_path_factory.mktemp("nginx-sticky"), sticky=True)
    yield router
    router.stop()


# -- clients -----------------------------------------------------------------------------------

_local = threading.local()


def session() -> requests.Session:
    if not hasattr(_local, "session"):
        _local.session = requests.Session()
    return _local.session


def v2_infer(url: str, versions: dict[str, str], headers: dict[str, str] | None = None) -> str:
    """One V2 inference through the router; returns the variant after checking the answer."""
    r = session().post(
        f"{url}/v2/models/{MODEL}/infer", json=v2_infer_payload(), headers=headers or {}, timeout=30
    )
    assert r.status_code == 200, r.text[:500]
    variant = r.headers["X-Dockyard-Variant"]
    assert variant in versions, variant
    assert r.headers["X-Dockyard-Model-Version"] == versions[variant]
    body = r.json()
    assert body["model_name"] == MODEL
    assert body["model_version"] == versions[variant], "the header names a variant that did not answer"
    (output,) = body["outputs"]
    assert len(output["data"]) == len(IRIS_SAMPLE_ROWS)
    assert set(output["data"]) <= set(IRIS_SPECIES)
    assert output["data"][0] == "setosa"  # every forest gets the first iris right
    return variant


def seldon_predict(url: str, versions: dict[str, str], headers: dict[str, str] | None = None) -> str:
    r = session().post(
        f"{url}/api/v1.0/predictions", json=seldon_payload(), headers=headers or {}, timeout=30
    )
    assert r.status_code == 200, r.text[:500]
    variant = r.headers["X-Dockyard-Variant"]
    assert variant in versions, variant
    assert r.headers["X-Dockyard-Model-Version"] == versions[variant]
    body = r.json()
    assert body["meta"]["tags"]["variant"] == variant
    assert body["meta"]["tags"]["version"] == versions[variant]
    predictions = body["data"]["ndarray"]
    assert len(predictions) == len(IRIS_SAMPLE_ROWS)
    assert set(predictions) <= set(IRIS_SPECIES)
    return variant


def fire(call: Callable[[], str], n: int) -> collections.Counter[str]:
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        return collections.Counter(pool.map(lambda _: call(), range(n)))


def share(counts: collections.Counter[str], variant: str) -> float:
    return 100.0 * counts[variant] / sum(counts.values())


# -- MLServer ------------------------------------------------------------------------------------


def test_weighted_split_2000_requests(
    random_router: NginxRouter, mlserver_backends: dict[str, Backend], versions: dict[str, str]
) -> None:
    counts = fire(lambda: v2_infer(random_router.url, versions), 2000)
    assert sum(counts.values()) == 2000
    # 80/20 over 2000 independent draws: sd = 0.89 points, so +-3 points is 3.4 sd.
    assert abs(share(counts, "champion") - 80.0) <= 3.0, counts
    assert abs(share(counts, "challenger") - 20.0) <= 3.0, counts


def test_sticky_user_always_gets_the_same_variant(
    sticky_router: NginxRouter, versions: dict[str, str]
) -> None:
    def user_variants(user: int) -> set[str]:
        return {v2_infer(sticky_router.url, versions, {"X-User-Id": f"user-{user}"}) for _ in range(5)}

    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        per_user = dict(zip(range(50), pool.map(user_variants, range(50)), strict=True))
    assert all(len(v) == 1 for v in per_user.values()), per_user
    assigned = collections.Counter(next(iter(v)) for v in per_user.values())
    assert set(assigned) == {"champion", "challenger"}, assigned  # P(all 50 on champion) = 0.8^50 ~ 1e-5


def test_sticky_router_without_the_header_splits_at_random(
    sticky_router: NginxRouter, versions: dict[str, str]
) -> None:
    counts = fire(lambda: v2_infer(sticky_router.url, versions), 400)
    # 400 draws: sd 2 points; 4 sd.
    assert abs(share(counts, "champion") - 80.0) <= 8.0, counts


def test_force_header(random_router: NginxRouter, versions: dict[str, str]) -> None:
    for variant in WEIGHTS:
        forced = fire(lambda v=variant: v2_infer(random_router.url, versions, {"X-Dockyard-Variant": v}), 40)
        assert forced == {variant: 40}
    ignored = fire(
        lambda: v2_infer(random_router.url, versions, {"X-Dockyard-Variant": "no-such-variant"}), 100
    )
    assert sum(ignored.values()) == 100 and ignored["champion"] > ignored["challenger"]


# -- seldon runtime (short) ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def seldon_router(
    mlflow_server: Any, versions: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NginxRouter]:
    pytest.importorskip("seldon_core", reason="the opt-in seldon extra is not installed")
    backends = start_backends("seldon", mlflow_server.uri, versions, tmp_path_factory.mktemp("seldon"))
    try:
        router = start_router("seldon", backends, tmp_path_factory.mktemp("nginx-seldon"), sticky=True)
        yield router
        router.stop()
    finally:
        # seldon-core-microservice's parent process lingers ~20 s after SIGTERM although
        # gunicorn has exited; nothing is lost by a SIGKILL after 5 s.
        stop_backends(backends, timeout=5)


def test_seldon_runtime_split_and_headers(seldon_router: NginxRouter, versions: dict[str, str]) -> None:
    n = 200
    counts = fire(lambda: seldon_predict(seldon_router.url, versions), n)
    # 200 draws at 80/20: sd = sqrt(0.8*0.2/200) = 2.83 points; +-10 points is 3.5 sd
    # (two-sided p ~ 4e-4), tight enough to catch a broken split (e.g. 50/50 is 10.6 sd off).
    tolerance = 10.0
    assert tolerance >= 3.5 * 100 * math.sqrt(0.8 * 0.2 / n)
    assert abs(share(counts, "champion") - 80.0) <= tolerance, counts
    assert seldon_predict(seldon_router.url, versions, {"X-Dockyard-Variant": "challenger"}) == "challenger"
    same = {seldon_predict(seldon_router.url, versions, {"X-User-Id": "alice"}) for _ in range(5)}
    assert len(same) == 1
