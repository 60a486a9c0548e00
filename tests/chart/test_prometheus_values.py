"""prometheus.* values reach the operator as the settings it reads (DOCKYARD_PROMETHEUS_*)."""

from __future__ import annotations

import os
from typing import Any
from unittest import mock

from dockyard.config import OperatorConfig

from .chartlib import render


def operator_env(values: dict[str, Any]) -> dict[str, str]:
    dep = next(o for o in render(values) if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-operator"))
    (container,) = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "operator"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_prometheus_url_and_scrape_interval_configure_the_operator() -> None:
    env = operator_env({"prometheus": {"url": "http://prometheus-operated.monitoring:9090", "scrapeInterval": "1m"}})
    with mock.patch.dict(os.environ, env, clear=True):
        cfg = OperatorConfig.from_env()
    assert cfg.prometheus_url == "http://prometheus-operated.monitoring:9090"
    assert cfg.prometheus_scrape_interval_seconds == 60


def test_no_prometheus_by_default() -> None:
    env = operator_env({})
    assert "DOCKYARD_PROMETHEUS_URL" not in env
    with mock.patch.dict(os.environ, env, clear=True):
        cfg = OperatorConfig.from_env()
    assert cfg.prometheus_url == "" and cfg.prometheus_scrape_interval_seconds == 30
