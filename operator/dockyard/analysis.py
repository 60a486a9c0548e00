"""Canary analysis: a rollout's metrics, queried from Prometheus and judged against thresholds.

Built-in metrics read what MLServer 1.7.1 exposes on its `metrics` port (starlette_exporter,
`app_name="mlserver"`):

* ``rest_server_requests_total{method,path,status_code}`` counts every REST request; ``path`` is
  the route template, so inference is ``/v2/models/{model_name}/infer`` or
  ``/v2/models/{model_name}/versions/{model_version}/infer``. A predict that raises answers
  HTTP 500 and is counted with ``status_code="500"``.
* ``rest_server_request_duration_seconds`` is the matching histogram (prometheus_client's
  default buckets, 5 ms .. 10 s).

MLServer's own ``model_infer_request_success/failure{model,version}`` counters are not used:
their ``version`` label is ``"None"`` for requests that name no version, which is what every
client of the router sends.

Series are selected by the labels the chart's PodMonitor gives the serving Pods (`namespace`,
`modeldeployment`, `variant`, `model_version`) and summed over all Pods of the variant+version.

Rate windows: ``rate()`` needs at least two samples in its window. The window is therefore
``max(interval, 4 x scrape interval)`` (the rule Grafana's ``$__rate_interval`` follows); with
the chart's 30 s PodMonitor interval a 1m analysis looks back 2m. Custom templates get the same
window as ``{{interval}}``.

Errors: a Prometheus that cannot be reached (connection, timeout, 5xx) raises
:class:`PrometheusUnavailable` out of :func:`analyse`, so the caller backs off and retries
without counting a failed check; a query Prometheus refuses (400/422, or a result that is not
one number) is that metric's ``Error`` result, since retrying will not fix it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from .api.rollout import MetricResult, RolloutMetric, template_variables

# Prometheus label names the chart's PodMonitor sets on the serving Pods' series.
LABEL_NAMESPACE = "namespace"
LABEL_MODELDEPLOYMENT = "modeldeployment"
LABEL_VARIANT = "variant"
LABEL_VERSION = "model_version"
REQUESTS_TOTAL = "rest_server_requests_total"
REQUEST_DURATION = "rest_server_request_duration_seconds"
# Both V2 inference routes (with and without a version), as starlette_exporter names them.
INFER_PATH_RE = "/v2/models/[^/]+(/versions/[^/]+)?/infer"
DEFAULT_SCRAPE_INTERVAL_SECONDS = 30  # the chart's metrics.servingPodMonitor.interval
RATE_WINDOW_SCRAPES = 4
_TEMPLATE_VARIABLE = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")  # as dockyard.api.rollout reads them


@dataclass(frozen=True)
class AnalysisTarget:
    """The variant+version under analysis, and the analysis interval."""

    namespace: str
    name: str  # the ModelDeployment
    model: str  # registered model name
    variant: str
    version: str  # resolved model version
    interval_seconds: int
    # How often Prometheus scrapes the serving Pods; widens too-short rate windows.
    scrape_interval_seconds: int = DEFAULT_SCRAPE_INTERVAL_SECONDS

    @property
    def window_seconds(self) -> int:
        return max(1, self.interval_seconds, RATE_WINDOW_SCRAPES * self.scrape_interval_seconds)

    @property
    def window(self) -> str:
        return f"{self.window_seconds}s"


class PrometheusUnavailable(Exception):
    """Prometheus could not answer: connection error, timeout or 5xx. Also the base of
    :class:`PrometheusQueryError`, so `except PrometheusUnavailable` catches every failure."""


class PrometheusQueryError(PrometheusUnavailable):
    """Prometheus refused the query (400 bad_data, 422 execution error) or its result is not
    one number. Retrying the same query will not help."""


class Prometheus:
    """A minimal async client of Prometheus's HTTP API (instant queries only). No retries are
    hidden here: an outage is reported at once and the caller decides when to try again."""

    def __init__(self, url: str, *, timeout: float = 10.0, headers: dict[str, str] | None = None):
        self.url = url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def query_scalar(self, promql: str) -> float | None:
        """Evaluate `promql` now; its one number, or None when the result is empty or NaN.
        A vector of more than one series raises :class:`PrometheusQueryError`."""
        return _one_number(await self._query(promql))

    async def query_vector(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """Evaluate `promql` now; each series' labels and value (NaN series left out)."""
        data = await self._query(promql)
        if data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
            raise PrometheusQueryError(f"the query returned a {data.get('resultType')}; a vector was expected")
        out = []
        for series in data["result"]:
            value = _finite_or_none(series["value"][1])
            if value is not None:
                out.append(({str(k): str(v) for k, v in (series.get("metric") or {}).items()}, value))
        return out

    async def _query(self, promql: str) -> dict[str, Any]:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        # POST form: the query never goes into the URL (long queries, and no escaping issue).
        try:
            async with self._session.post(f"{self.url}/api/v1/query", data={"query": promql}) as resp:
                try:
                    payload: Any = await resp.json(content_type=None)
                except ValueError:
                    payload = None
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PrometheusUnavailable(f"Prometheus {self.url}: {exc.__class__.__name__}: {exc}") from exc
        error = f"{payload.get('errorType', '')}: {payload.get('error', '')}"[:500] if isinstance(payload, dict) else ""
        # 503 is also how Prometheus reports a query that timed out or was cancelled.
        if status >= 500:
            raise PrometheusUnavailable(f"Prometheus {self.url}: HTTP {status} {error}".rstrip())
        if status >= 400 or not isinstance(payload, dict) or payload.get("status") != "success":
            raise PrometheusQueryError(f"Prometheus refused the query (HTTP {status}) {error}".rstrip())
        data: dict[str, Any] = payload.get("data") or {}
        return data


def _one_number(data: dict[str, Any]) -> float | None:
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list):
        return _finite_or_none(result[1])
    if kind == "vector" and isinstance(result, list):
        if not result:
            return None
        if len(result) > 1:
            series = ", ".join(str(r.get("metric", {})) for r in result[:3])
            raise PrometheusQueryError(
                f"the query returned {len(result)} series ({series}...); it must return one number (use sum() or similar)"
            )
        return _finite_or_none(result[0]["value"][1])
    raise PrometheusQueryError(f"the query returned a {kind}; it must return one number (a scalar or one series)")


def _finite_or_none(raw: Any) -> float | None:
    value = float(raw)  # Prometheus sends "NaN", "+Inf", "-Inf" as strings; float() reads them
    return None if math.isnan(value) else value


# -- queries --------------------------------------------------------------------------------


def promql_string(value: str) -> str:
    """`value` escaped for the inside of a PromQL string literal, whichever quote the literal uses:
    backslash doubled, quotes, backticks and control characters as \\xHH escapes (which both
    "..." and '...' strings decode; a `...` raw string gets no backtick to end early on)."""
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch in "\"'`" or ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def serving_matchers(namespace: str, name: str, variant: str, version: str) -> list[str]:
    """Label matchers of one variant+version's serving series (the PodMonitor's target labels)."""
    labels = {LABEL_NAMESPACE: namespace, LABEL_MODELDEPLOYMENT: name, LABEL_VARIANT: variant, LABEL_VERSION: version}
    return [f'{k}="{promql_string(v)}"' for k, v in labels.items()]


def _selector(target: AnalysisTarget) -> str:
    matchers = serving_matchers(target.namespace, target.name, target.variant, target.version)
    matchers += ['method="POST"', f'path=~"{INFER_PATH_RE}"']
    return "{" + ", ".join(matchers) + "}"


def request_count_query(target: AnalysisTarget) -> str:
    """Inference requests (any status) the variant+version served over the analysis window,
    summed over its Pods. `increase()` extrapolates to the window's edges, so the count is
    approximate by a fraction of a scrape interval's worth of traffic."""
    return f"sum(increase({REQUESTS_TOTAL}{_selector(target)}[{target.window}]))"


def builtin_query(kind: str, target: AnalysisTarget) -> str:
    """PromQL of a built-in metric: ``successRate`` (share of inference requests answered
    without a 5xx, 0..1; NaN, i.e. no data, without requests) or ``latencyP99`` (seconds, over
    all inference requests, interpolated within histogram buckets)."""
    sel, window = _selector(target), target.window
    if kind == "successRate":
        ok = sel[:-1] + ', status_code!~"5.."}'
        return f"sum(rate({REQUESTS_TOTAL}{ok}[{window}])) / sum(rate({REQUESTS_TOTAL}{sel}[{window}]))"
    if kind == "latencyP99":
        return f"histogram_quantile(0.99, sum by (le) (rate({REQUEST_DURATION}_bucket{sel}[{window}])))"
    raise ValueError(f"unknown built-in metric {kind!r}")


def render_query(template: str, target: AnalysisTarget) -> str:
    """Fill a custom PromQL template's {{variables}}. Values are escaped for a PromQL string
    literal (put them inside quotes); {{interval}} is the rate window, e.g. ``30s``. An unknown
    variable raises ValueError (the API refuses such templates already)."""
    values = {
        "namespace": promql_string(target.namespace),
        "name": promql_string(target.name),
        "variant": promql_string(target.variant),
        "version": promql_string(target.version),
        "model": promql_string(target.model),
        "interval": target.window,
    }
    unknown = sorted({v for v in template_variables(template) if v not in values})
    if unknown:
        raise ValueError(f"unknown template variable(s): {', '.join(unknown)}")
    out, pos = [], 0
    # One pass over the template: a value containing "{{x}}" is not substituted again.
    for m in _TEMPLATE_VARIABLE.finditer(template):
        out.append(template[pos:m.start()])
        out.append(values[m.group(1)])
        pos = m.end()
    out.append(template[pos:])
    return "".join(out)


# -- analysis -------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _judge(metric: RolloutMetric, value: float | None) -> MetricResult:
    base: dict[str, Any] = {"name": metric.name, "min": metric.min, "max": metric.max}
    if value is None:
        return MetricResult(**base, result="Inconclusive", message=f"{metric.name}: no data")
    # status is JSON: an infinite value (p99 beyond the highest bucket) is said, not stored.
    stored = value if math.isfinite(value) else None
    if metric.min is not None and value < metric.min:
        return MetricResult(**base, value=stored, result="Failed",
                            message=f"{metric.name} = {_fmt(value)} below min {_fmt(metric.min)}")
    if metric.max is not None and value > metric.max:
        return MetricResult(**base, value=stored, result="Failed",
                            message=f"{metric.name} = {_fmt(value)} above max {_fmt(metric.max)}")
    return MetricResult(**base, value=stored, result="Passed")


# The dataDrift built-in: the share of watched features drifted in the target's window, or
# None when the window is inconclusive (computed by the monitoring plumbing, same Prometheus).
DriftShare = Callable[[AnalysisTarget], Awaitable[float | None]]


async def analyse(
    prom: Prometheus, metrics: list[RolloutMetric], target: AnalysisTarget, min_requests: int,
    drift_share: DriftShare | None = None,
) -> list[MetricResult]:
    """One analysis of `target`: a result per metric, in order.

    With fewer than `min_requests` inference requests in the window every metric is
    Inconclusive (nothing to judge). A metric without data is Inconclusive; one whose query
    Prometheus refuses is Error; one outside [min, max] is Failed. Raises
    :class:`PrometheusUnavailable` (not a query error) when Prometheus cannot be reached."""
    def every(result: Literal["Inconclusive", "Error"], message: str) -> list[MetricResult]:
        return [MetricResult(name=m.name, min=m.min, max=m.max, result=result, message=message) for m in metrics]

    if min_requests > 0:
        try:
            count = await prom.query_scalar(request_count_query(target))
        except PrometheusQueryError as exc:
            return every("Error", f"request count: {exc}")
        seen = round(count or 0.0)
        if seen < min_requests:
            return every("Inconclusive", f"{seen} requests in {target.window} < minRequests {min_requests}")
    results = []
    for metric in metrics:
        try:
            if metric.builtin == "dataDrift":
                value = await drift_share(target) if drift_share is not None else None
            else:
                query = builtin_query(metric.builtin, target) if metric.builtin else render_query(
                    metric.query or "", target)
                value = await prom.query_scalar(query)
        except PrometheusQueryError as exc:
            results.append(MetricResult(name=metric.name, min=metric.min, max=metric.max, result="Error",
                                        message=f"{metric.name}: {exc}"))
            continue
        results.append(_judge(metric, value))
    return results
