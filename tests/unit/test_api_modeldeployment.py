"""ModelDeploymentSpec / ModelDeploymentStatus: good specs parse, each bad spec names the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from dockyard.api import ModelDeploymentSpec, ModelDeploymentStatus, Variant
from dockyard.api.modeldeployment import RateLimit, body_size_bytes
from tests.unit import specpath
from tests.unit.specpath import set_path

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "03-modeldeployment.yaml"

GOOD: dict[str, Any] = {
    "modelName": "iris-classifier",
    "variants": [
        {"name": "champion", "alias": "champion", "weight": 80},
        {"name": "challenger", "version": "7", "weight": 20, "replicas": 2},
    ],
    "router": {"type": "builtin", "sticky": {"header": "X-User-Id"}},
}


def with_(path: str, value: Any) -> dict[str, Any]:
    """GOOD with the dotted `path` set to value (None deletes it)."""
    return set_path(GOOD, path, value)


def variants(*weights: int) -> list[dict[str, Any]]:
    return [{"name": f"v{i}", "version": str(i + 1), "weight": w} for i, w in enumerate(weights)]


def error_locs(data: Any) -> list[tuple[Any, ...]]:
    return specpath.error_locs(ModelDeploymentSpec, data)


def test_example_parses() -> None:
    spec = ModelDeploymentSpec.model_validate(yaml.safe_load(EXAMPLE.read_text())["spec"])
    assert [v.name for v in spec.variants] == ["champion", "challenger"]
    assert spec.router.sticky is not None and spec.router.sticky.header == "X-User-Id"
    assert spec.weight_percentages() == {"champion": 80.0, "challenger": 20.0}


def test_defaults() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {"modelName": "m", "variants": [{"name": "a", "version": "1", "weight": 1}]}
    )
    assert spec.runtime == "mlserver"
    assert spec.router.type == "builtin"
    assert spec.router.force_header == "X-Dockyard-Variant"
    assert spec.router.replicas == 1 and spec.router.sticky is None
    # The router's edge: forcing off, 16Mi bodies, 60 s for a variant, no rate limit.
    assert spec.router.allow_variant_forcing is False and spec.router.limits is None
    edge = spec.router.effective_limits()
    assert (edge.effective_max_body_size(), edge.effective_timeout_seconds(), edge.rate_limit) == ("16Mi", 60, None)
    assert spec.alias_refresh_interval == "60s"
    assert spec.variants[0].replicas == 1
    # Unweighted variants default to 1, so they split traffic evenly.
    assert Variant.model_validate({"name": "b", "alias": "x"}).weight == 1
    even = ModelDeploymentSpec.model_validate(
        {"modelName": "m", "variants": [{"name": "a", "version": "1"}, {"name": "b", "version": "2"}]}
    )
    assert even.weight_percentages() == {"a": 50.0, "b": 50.0}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        pytest.param("variants", variants(1), id="single-variant"),
        pytest.param("variants", [{"name": "a", "version": "1"}], id="single-default-weight"),
        pytest.param("variants", variants(*[1] * 10), id="ten-variants"),
        pytest.param("variants", variants(0, 1), id="one-zero-weight"),
        pytest.param("variants", variants(1000, 1), id="max-weight"),
        pytest.param("variants", variants(3, 3, 3), id="weights-not-summing-to-100"),
        pytest.param("variants.0.replicas", 0, id="zero-replicas"),
        pytest.param("variants.0.resources", {"requests": {"cpu": "1"}, "gpus": 1}, id="variant-resources"),
        pytest.param("variants.0.name", "a" * 20, id="name-max-length"),
        pytest.param("variants.0.name", "0", id="name-digit"),
        pytest.param("variants.1.version", "123456789", id="version-large"),
        pytest.param("runtime", "seldon", id="seldon-runtime"),
        pytest.param(
            "router",
            {
                "type": "gateway",
                "gateway": {
                    "parentRefs": [{"name": "gw", "namespace": "infra", "sectionName": "http"}],
                    "hostnames": ["iris.example.com", "*.example.org"],
                },
            },
            id="gateway",
        ),
        pytest.param(
            "router",
            {"type": "istio", "istio": {"hosts": ["iris"], "gateways": ["istio-system/gw"]}},
            id="istio",
        ),
        pytest.param("router", {"type": "seldon"}, id="seldon-router"),
        pytest.param("router", {"forceHeader": "X-Variant", "replicas": 3}, id="router-replicas"),
        pytest.param("router", None, id="no-router"),
        pytest.param("aliasRefreshInterval", "5m", id="refresh-interval"),
        pytest.param("modelName", "Iris_Classifier.v2", id="model-name-mixed"),
        pytest.param("image", "docker.io/seldonio/mlserver:1.7.1", id="image"),
    ],
)
def test_accepts(path: str, value: Any) -> None:
    ModelDeploymentSpec.model_validate(with_(path, value))


def test_unknown_fields_are_refused() -> None:
    """The API server prunes fields its schema does not know, so no corpus file can carry one;
    the model itself refuses them rather than ignore a misspelt field."""
    assert error_locs(with_("traffic", {"a": 1})) == [("traffic",)]


def test_error_messages_name_the_problem() -> None:
    with pytest.raises(
        pydantic.ValidationError, match=r"variant names must be unique \(repeated: champion\)"
    ):
        ModelDeploymentSpec.model_validate(with_("variants.1.name", "champion"))
    with pytest.raises(pydantic.ValidationError, match="at least one variant that is not a shadow needs a weight above 0"):
        ModelDeploymentSpec.model_validate(with_("variants", variants(0, 0)))
    with pytest.raises(
        pydantic.ValidationError, match="variant 'champion': set exactly one of version or alias"
    ):
        ModelDeploymentSpec.model_validate(with_("variants.0.version", "1"))


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        pytest.param((80, 20), [80.0, 20.0], id="80-20"),
        pytest.param((1, 1), [50.0, 50.0], id="equal"),
        pytest.param((1, 1, 2), [25.0, 25.0, 50.0], id="relative"),
        pytest.param((5,), [100.0], id="single"),
        pytest.param((0, 3), [0.0, 100.0], id="zero-weight"),
        pytest.param((1, 2), [100 / 3, 200 / 3], id="thirds"),
    ],
)
def test_weight_percentages(weights: tuple[int, ...], expected: list[float]) -> None:
    spec = ModelDeploymentSpec.model_validate(with_("variants", variants(*weights)))
    got = spec.weight_percentages()
    assert list(got) == [f"v{i}" for i in range(len(weights))]
    assert list(got.values()) == pytest.approx(expected)
    assert sum(got.values()) == pytest.approx(100.0)


def test_status_parses() -> None:
    status = ModelDeploymentStatus.model_validate(
        {
            "phase": "Ready",
            "observedGeneration": 4,
            "conditions": [{"type": "Ready", "status": "True", "reason": "AllVariantsReady"}],
            "endpoint": "http://iris-router.default.svc:8080",
            "variants": [
                {
                    "name": "champion",
                    "resolvedVersion": "6",
                    "modelUri": "models:/iris-classifier/6",
                    "weight": 80,
                    "replicas": 1,
                    "readyReplicas": 1,
                    "endpoint": "http://iris-champion.default.svc:8080",
                },
            ],
            "weights": "champion=80,challenger=20",
        }
    )
    assert status.variants is not None and status.variants[0].resolved_version == "6"
    assert status.to_api()["variants"][0]["readyReplicas"] == 1


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        pytest.param(
            {"variants": [{"resolvedVersion": "1"}]}, ("variants", 0, "name"), id="variant-name-missing"
        ),
        pytest.param(
            {"variants": [{"name": "a", "readyReplicas": "one"}]},
            ("variants", 0, "readyReplicas"),
            id="ready-replicas-type",
        ),
        pytest.param({"observedGeneration": -1}, ("observedGeneration",), id="generation-negative"),
    ],
)
def test_status_rejects(data: dict[str, Any], loc: tuple[Any, ...]) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        ModelDeploymentStatus.model_validate(data)
    assert loc in [tuple(e["loc"]) for e in info.value.errors()]


def test_body_sizes_and_rate_limit_burst() -> None:
    assert body_size_bytes("16Mi") == 16 * 2**20 and body_size_bytes("512Ki") == 512 * 1024
    assert body_size_bytes("256Mi") == 256 * 2**20
    for bad in ("257Mi", "1Gi", "0Mi", "16M", "16mi", "100000Ki", "16Mi\n", "1m; include x"):
        with pytest.raises(ValueError):
            body_size_bytes(bad)
    assert RateLimit(requests_per_second=10).effective_burst() == 10  # one second's worth
    assert RateLimit(requests_per_second=10, burst=0).effective_burst() == 0
