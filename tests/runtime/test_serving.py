"""Real serving processes over a fetched model: MLServer (V2) and the seldon-core microservice."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests

from dockyard.runtime.serve import health_paths

from .helpers import (
    IRIS_SAMPLE_ROWS,
    fetch_model,
    free_port,
    seldon_payload,
    start_serving_process,
    stop_process,
    train_and_register,
    v2_infer_payload,
)

pytestmark = [pytest.mark.serving, pytest.mark.integration]
MODEL = "serving-test-model"
EXPECTED = ["setosa", "setosa", "versicolor", "versicolor", "virginica", "virginica"]
assert len(EXPECTED) == len(IRIS_SAMPLE_ROWS)


@pytest.fixture(scope="module")
def registered_version(mlflow_server: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    return train_and_register(
        mlflow_server.uri, MODEL, n_estimators=10, workdir=tmp_path_factory.mktemp("train")
    )


@pytest.fixture(scope="module")
def mlserver(
    mlflow_server: Any, registered_version: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, Path, int]]:
    model_dir = fetch_model(
        mlflow_server.uri, MODEL, registered_version, tmp_path_factory.mktemp("mls"), variant="champion"
    )
    # From here on serving must not need MLflow: take it away while the server starts.
    mlflow_server.stop()
    port = free_port()
    metrics_port = free_port()
    try:
        proc = start_serving_process("mlserver", model_dir, port, metrics_port=metrics_port)
    finally:
        mlflow_server.start()
    try:
        yield port, model_dir, metrics_port
    finally:
        stop_process(proc)


def test_mlserver_v2_inference(mlserver: Any, registered_version: str) -> None:
    port = mlserver[0]
    r = requests.post(f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer", json=v2_infer_payload(), timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_name"] == MODEL
    assert body["model_version"] == registered_version
    assert body["outputs"][0]["data"] == EXPECTED
    # The version-qualified endpoint answers too.
    r = requests.post(
        f"http://127.0.0.1:{port}/v2/models/{MODEL}/versions/{registered_version}/infer",
        json=v2_infer_payload(),
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == EXPECTED


def test_mlserver_metadata_and_health(mlserver: Any, registered_version: str) -> None:
    port, _, metrics_port = mlserver
    meta = requests.get(f"http://127.0.0.1:{port}/v2/models/{MODEL}", timeout=10).json()
    assert meta["name"] == MODEL
    assert meta["versions"] == [registered_version]
    assert [i["name"] for i in meta["inputs"]] == [
        "sepal_length",
        "sepal_width",
        "petal_length",
        "petal_width",
    ]
    for path in health_paths("mlserver").values():
        assert requests.get(f"http://127.0.0.1:{port}{path}", timeout=10).status_code == 200
    metrics = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
    assert metrics.status_code == 200 and "model_infer_request" in metrics.text


def monitor_samples(metrics_port: int) -> list[Any]:
    """The dockyard_monitor_* samples on a metrics port."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    return [s for family in text_string_to_metric_families(text) for s in family.samples
            if s.name.startswith("dockyard_monitor_") and s.name.endswith("_total")]


def monitor_counts(metrics_port: int, metric: str, **match: str) -> float:
    """Sum of one dockyard_monitor_* counter over the samples whose labels include `match`."""
    return sum(s.value for s in monitor_samples(metrics_port)
               if s.name == f"{metric}_total" and all(s.labels.get(k) == v for k, v in match.items()))


# The labels of each monitoring counter (besides model, version, variant): what the operator sums by.
MONITOR_LABELS = {
    "dockyard_monitor_feature_values_total": ("feature", "bucket"),
    "dockyard_monitor_feature_anomalies_total": ("feature", "kind"),
    "dockyard_monitor_predictions_total": ("bucket",),
    "dockyard_monitor_requests_total": ("outcome",),
}


def monitor_series(metrics_port: int, model: str, version: str, variant: str) -> set[tuple[str, ...]]:
    """(counter, its own label values) of every monitoring series of one variant; asserts each
    carries the model, version and variant labels and its own."""
    found = set()
    for s in monitor_samples(metrics_port):
        if s.labels.get("variant") != variant:
            continue
        assert s.labels["model"] == model and s.labels["version"] == version, s
        found.add((s.name, *(s.labels[k] for k in MONITOR_LABELS[s.name])))
    return found


def expected_series(model_dir: Path) -> set[tuple[str, ...]]:
    """Every series the reference profile fetch-model put next to the model can produce:
    numeric features have bins "0".."k", categorical ones their categories and "__other__"."""
    profile = json.loads((model_dir / "reference-profile.json").read_text())

    def buckets(column: dict[str, Any]) -> list[str]:
        if column["kind"] == "numeric":
            return [str(i) for i in range(len(column["fractions"]))]
        return [*column["categories"], "__other__"]

    series: set[tuple[str, ...]] = {("dockyard_monitor_requests_total", "counted"),
                                    ("dockyard_monitor_requests_total", "mismatch")}
    for name, column in profile["features"].items():
        series |= {("dockyard_monitor_feature_values_total", name, b) for b in buckets(column)}
        kinds = ["missing", "out_of_range", "invalid"] if column["kind"] == "numeric" else ["missing", "unseen"]
        series |= {("dockyard_monitor_feature_anomalies_total", name, k) for k in kinds}
    series |= {("dockyard_monitor_predictions_total", b) for b in buckets(profile["prediction"])}
    return series


def assert_counts_traffic(count: Callable[..., float], send: Callable[[Sequence[Sequence[float]]], int]) -> None:
    """`send(rows)` answers 200 and lands in the reference buckets: every feature value and
    prediction counted once, and a tripled petal length counted as out of range."""
    for feature in ("sepal_length", "petal_length"):
        assert count("dockyard_monitor_feature_anomalies", feature=feature, kind="invalid") == 0
    before = {m: count(m) for m in ("dockyard_monitor_feature_values", "dockyard_monitor_predictions")}
    counted = count("dockyard_monitor_requests", outcome="counted")
    for _ in range(5):
        assert send(IRIS_SAMPLE_ROWS) == 200
    rows = 5 * len(IRIS_SAMPLE_ROWS)
    assert count("dockyard_monitor_requests", outcome="counted") == counted + 5
    assert count("dockyard_monitor_feature_values") - before["dockyard_monitor_feature_values"] == 4 * rows
    assert count("dockyard_monitor_predictions") - before["dockyard_monitor_predictions"] == rows
    assert count("dockyard_monitor_predictions", bucket="virginica") >= 10  # 2 of each 6 rows
    # Three times the petal length: beyond anything the model was trained on.
    out_of_range = count("dockyard_monitor_feature_anomalies", feature="petal_length", kind="out_of_range")
    assert send([[r[0], r[1], 3 * r[2], r[3]] for r in IRIS_SAMPLE_ROWS]) == 200
    assert count("dockyard_monitor_feature_anomalies", feature="petal_length", kind="out_of_range") >= (
        out_of_range + 4)  # 4.7*3 and up exceed the training maximum (6.9)


def test_mlserver_counts_live_traffic_into_the_reference_buckets(mlserver: Any, registered_version: str) -> None:
    """Monitoring (issue 13): every request's features and predictions land in the version's
    reference buckets, labelled by model, version and variant; out-of-range values and payloads
    that do not fit are counted, and never break serving."""
    port, model_dir, metrics_port = mlserver
    url = f"http://127.0.0.1:{port}/v2/models/{MODEL}/infer"
    labels = {"model": MODEL, "version": registered_version, "variant": "champion"}

    def count(metric: str, **match: str) -> float:
        return monitor_counts(metrics_port, metric, **labels, **match)

    # Every series the profile allows is exported from the start, at 0 until traffic lands in it
    # (increase() would not see the first increments of a series appearing mid-window).
    assert monitor_series(metrics_port, MODEL, registered_version, "champion") == expected_series(model_dir)
    assert_counts_traffic(count, lambda rows: requests.post(url, json=v2_infer_payload(rows), timeout=30).status_code)

    # A payload without the model's features: refused as before, counted as a mismatch.
    mismatch = count("dockyard_monitor_requests", outcome="mismatch")
    bad = {"inputs": [{"name": "colour", "shape": [1], "datatype": "BYTES", "data": ["red"]}]}
    assert requests.post(url, json=bad, timeout=30).status_code >= 400
    assert count("dockyard_monitor_requests", outcome="mismatch") == mismatch + 1
    assert requests.post(url, json=v2_infer_payload(), timeout=30).status_code == 200


@pytest.fixture(scope="module")
def seldon(
    mlflow_server: Any, registered_version: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, int, Path]]:
    if importlib.util.find_spec("seldon_core") is None:
        pytest.skip("seldon-core (opt-in extra, BSL 1.1) is not installed")
    model_dir = fetch_model(
        mlflow_server.uri,
        MODEL,
        registered_version,
        tmp_path_factory.mktemp("seldon"),
        variant="challenger",
        runtime="seldon",
    )
    port, metrics_port = free_port(), free_port()
    proc = start_serving_process("seldon", model_dir, port, metrics_port=metrics_port, timeout=240)
    try:
        yield port, metrics_port, model_dir
    finally:
        stop_process(proc)


def test_seldon_predictions_carry_variant_tags(seldon: tuple[int, int, Path], registered_version: str) -> None:
    port, _, _ = seldon
    r = requests.post(f"http://127.0.0.1:{port}/api/v1.0/predictions", json=seldon_payload(), timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["data"]["ndarray"] == EXPECTED
    assert body["meta"]["tags"] == {"model": MODEL, "version": registered_version, "variant": "challenger"}


def test_seldon_health_metadata_and_metrics(seldon: tuple[int, int, Path], registered_version: str) -> None:
    port, metrics_port, _ = seldon
    for path in health_paths("seldon").values():
        assert requests.get(f"http://127.0.0.1:{port}{path}", timeout=10).status_code == 200
    status = requests.get(f"http://127.0.0.1:{port}/health/status", timeout=10).json()
    assert status["jsonData"]["status"] == "ok" and status["jsonData"]["variant"] == "challenger"
    meta = requests.get(f"http://127.0.0.1:{port}/api/v1.0/metadata", timeout=10).json()
    assert meta["name"] == MODEL and meta["versions"] == [registered_version]
    assert meta["custom"]["variant"] == "challenger"
    requests.post(
        f"http://127.0.0.1:{port}/api/v1.0/predictions", json=seldon_payload(), timeout=30
    ).raise_for_status()
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    assert "dockyard_predictions_total" in text


def test_seldon_counts_live_traffic_as_mlserver_does(
    seldon: tuple[int, int, Path], mlserver: Any, registered_version: str
) -> None:
    """The opt-in seldon runtime exports the same monitoring counters as MLServer (seldon adds
    labels of its own, e.g. method and worker_id, which the operator's sums ignore)."""
    port, metrics_port, model_dir = seldon
    url = f"http://127.0.0.1:{port}/api/v1.0/predictions"
    labels = {"model": MODEL, "version": registered_version, "variant": "challenger"}

    def count(metric: str, **match: str) -> float:
        return monitor_counts(metrics_port, metric, **labels, **match)

    # Same series, names and labels as MLServer's, all there before traffic could reach them.
    assert monitor_series(metrics_port, MODEL, registered_version, "challenger") == expected_series(model_dir)
    assert monitor_series(mlserver[2], MODEL, registered_version, "champion") == expected_series(model_dir)
    assert_counts_traffic(count, lambda rows: requests.post(url, json=seldon_payload(rows), timeout=30).status_code)

    # Columns without names are predicted (and counted) by the position of the model's signature.
    counted = count("dockyard_monitor_requests", outcome="counted")
    unnamed = {"data": {"ndarray": [list(r) for r in IRIS_SAMPLE_ROWS]}}
    assert requests.post(url, json=unnamed, timeout=30).status_code == 200
    assert count("dockyard_monitor_requests", outcome="counted") == counted + 1

    # A payload without the model's features: refused as before, counted as a mismatch (reported
    # with the next call, since seldon asks a refused request for no metrics), and serving goes on.
    mismatch = count("dockyard_monitor_requests", outcome="mismatch")
    bad = {"data": {"names": ["colour"], "ndarray": [["red"]]}}
    assert requests.post(url, json=bad, timeout=30).status_code >= 400
    r = requests.post(url, json=seldon_payload(), timeout=30)
    assert r.status_code == 200 and r.json()["data"]["ndarray"] == EXPECTED
    assert count("dockyard_monitor_requests", outcome="mismatch") == mismatch + 1
