"""dockyard.analysis without Prometheus: template rendering, escaping, rate windows.
(Queries against a real Prometheus: tests/integration/test_analysis.py.)"""

from __future__ import annotations

import re

import pytest

from dockyard.analysis import AnalysisTarget, builtin_query, promql_string, render_query, request_count_query


def target(**kw: object) -> AnalysisTarget:
    base: dict[str, object] = {"namespace": "shop", "name": "iris", "model": "iris-model", "variant": "canary",
                               "version": "7", "interval_seconds": 60, "scrape_interval_seconds": 15}
    return AnalysisTarget(**{**base, **kw})  # type: ignore[arg-type]


def go_unquote(body: str) -> str:
    """What PromQL's string lexer makes of a literal's inside; only \\\\ and \\xHH escapes
    may occur (anything else after a backslash fails here)."""
    def one(m: re.Match[str]) -> str:
        assert m[1] == "\\" or m[1].startswith("x"), m[0]
        return "\\" if m[1] == "\\" else chr(int(m[1][1:], 16))

    return re.sub(r"\\(x[0-9a-f]{2}|.)", one, body, flags=re.S)


def test_variables_are_filled_once() -> None:
    t = target(variant="{{namespace}}")  # a value that looks like a variable stays a value
    got = render_query('x{ns="{{namespace}}",v="{{ variant }}",m="{{model}}",n="{{name}}",ver="{{version}}"}[{{interval}}]', t)
    assert got == 'x{ns="shop",v="{{namespace}}",m="iris-model",n="iris",ver="7"}[60s]'


@pytest.mark.parametrize("hostile", ['a"} or vector(1) or x{b="', "a'} or vector(1)", "a`b", "back\\slash\\",
                                     "new\nline", "\\x22", "ü"])
def test_values_cannot_end_any_string_literal(hostile: str) -> None:
    escaped = promql_string(hostile)
    assert not set(escaped) & set("\"'`\n")
    # No unescaped backslash run ends early: the escapes decode back to the value exactly.
    assert go_unquote(escaped) == hostile
    for quote in "\"'":
        rendered = render_query(f"up{{namespace={quote}{{{{namespace}}}}{quote}}}", target(namespace=hostile))
        inside = rendered.removeprefix(f"up{{namespace={quote}").removesuffix(f"{quote}}}")
        assert quote not in inside and go_unquote(inside) == hostile


def test_unknown_variable_is_refused() -> None:
    with pytest.raises(ValueError, match="pod"):
        render_query('up{pod="{{pod}}"}', target())


@pytest.mark.parametrize(("interval", "scrape", "window"), [(60, 15, "60s"), (5, 1, "5s"), (5, 15, "60s"), (30, 30, "120s")])
def test_rate_window_spans_at_least_four_scrapes(interval: int, scrape: int, window: str) -> None:
    t = target(interval_seconds=interval, scrape_interval_seconds=scrape)
    assert t.window == window
    assert render_query("{{interval}}", t) == window
    for query in (request_count_query(t), builtin_query("successRate", t), builtin_query("latencyP99", t)):
        assert re.findall(r"\[(\w+)\]", query) and set(re.findall(r"\[(\w+)\]", query)) == {window}


def test_builtins_select_the_variant_version_and_inference_routes() -> None:
    sel = ('{namespace="shop", modeldeployment="iris", variant="canary", model_version="7", method="POST", '
           'path=~"/v2/models/[^/]+(/versions/[^/]+)?/infer"')
    assert request_count_query(target()) == f"sum(increase(rest_server_requests_total{sel}}}[60s]))"
    assert builtin_query("successRate", target()) == (
        f'sum(rate(rest_server_requests_total{sel}, status_code!~"5.."}}[60s])) / '
        f"sum(rate(rest_server_requests_total{sel}}}[60s]))")
    assert builtin_query("latencyP99", target()) == (
        f"histogram_quantile(0.99, sum by (le) (rate(rest_server_request_duration_seconds_bucket{sel}}}[60s])))")
    with pytest.raises(ValueError, match="errorRate"):
        builtin_query("errorRate", target())


def test_default_scrape_interval_is_the_charts() -> None:
    import yaml

    from tests.chart.chartlib import ROOT

    values = yaml.safe_load((ROOT / "charts" / "dockyard" / "values.yaml").read_text())
    t = AnalysisTarget(namespace="n", name="m", model="x", variant="v", version="1", interval_seconds=60)
    assert values["metrics"]["servingPodMonitor"]["interval"] == values["prometheus"]["scrapeInterval"] == "30s"
    assert t.scrape_interval_seconds == 30 and t.window == "120s"


def test_data_drift_is_judged_from_the_monitoring_share_and_inconclusive_without_a_verdict() -> None:
    """The dataDrift built-in asks the monitoring plumbing, not a PromQL of its own."""
    import asyncio

    from dockyard.analysis import AnalysisTarget, analyse
    from dockyard.api.rollout import RolloutMetric

    class Requests:  # Prometheus answering the request count only
        async def query_scalar(self, promql: str) -> float:
            return 500.0

    target = AnalysisTarget(namespace="ns", name="iris", model="m", variant="canary", version="4", interval_seconds=60)
    metric = RolloutMetric(name="drift", builtin="dataDrift", max=0.25)
    asked: list[AnalysisTarget] = []

    def share(value: float | None):  # type: ignore[no-untyped-def]
        async def drift_share(t: AnalysisTarget) -> float | None:
            asked.append(t)
            return value
        return drift_share

    def run(value: float | None) -> str:
        (result,) = asyncio.run(analyse(Requests(), [metric], target, 10, drift_share=share(value)))  # type: ignore[arg-type]
        return result.result

    assert (run(0.5), run(0.0), run(None)) == ("Failed", "Passed", "Inconclusive")
    assert asked == [target] * 3
