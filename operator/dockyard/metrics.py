"""Prometheus metrics of the operator (names follow Prometheus conventions).

Labels stay low-cardinality: kind/result/phase/operation are small enums; only the
variant-weight gauge carries namespace/name, which is bounded by the number of
ModelDeployments.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

RECONCILE_TOTAL = Counter(
    "dockyard_reconcile_total", "Reconciliations by kind and result.", ["kind", "result"]
)
RECONCILE_DURATION = Histogram(
    "dockyard_reconcile_duration_seconds",
    "Time spent in one reconciliation.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RESOURCES = Gauge("dockyard_resources", "Dockyard objects by kind and phase.", ["kind", "phase"])
TRAINING_DURATION = Histogram(
    "dockyard_training_duration_seconds",
    "Training attempt duration, Job start to end, by result.",
    ["result"],
    buckets=(10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
)
MODEL_VERSIONS_REGISTERED = Counter(
    "dockyard_model_versions_registered_total", "Model versions registered in MLflow.", ["model"]
)
MLFLOW_ERRORS = Counter(
    "dockyard_mlflow_request_errors_total", "Failed MLflow requests by operation.", ["operation"]
)
VARIANT_WEIGHT = Gauge(
    "dockyard_variant_weight",
    "Configured traffic weight (percent) per ModelDeployment variant.",
    ["namespace", "name", "variant", "model_version"],
)

ROLLOUT_PHASES = ("Idle", "Waiting", "Progressing", "AwaitingApproval", "Baking", "Promoted", "RolledBack", "Blocked")
ROLLOUT_PHASE = Gauge(
    "dockyard_rollout_phase", "1 for the rollout phase a ModelDeployment is in, 0 for the others.",
    ["namespace", "name", "phase"],
)
ROLLOUT_STEP = Gauge("dockyard_rollout_step", "Current rollout step (1-based; 0 outside steps).", ["namespace", "name"])
ROLLOUT_CANDIDATE_WEIGHT = Gauge(
    "dockyard_rollout_candidate_weight_percent", "Effective traffic share of the rollout candidate.",
    ["namespace", "name"],
)
ROLLOUT_ANALYSIS = Counter(
    "dockyard_rollout_analysis_total", "Rollout metric checks by outcome (Passed, Failed, Inconclusive, Error).",
    ["namespace", "name", "metric", "result"],
)

DRIFT_SCORE = Gauge(
    "dockyard_drift_score",
    "Drift score of the last window per feature (PSI for numeric, Jensen-Shannon distance for categorical; "
    "feature __prediction__ for the predictions).",
    ["namespace", "name", "variant", "model_version", "feature", "method"],
)
DRIFT_DETECTED = Gauge(
    "dockyard_drift_detected", "1 when the feature's last drift score is above its threshold, else 0.",
    ["namespace", "name", "variant", "model_version", "feature"],
)
DATASET_DRIFT = Gauge(
    "dockyard_dataset_drift", "1 when the variant's last window had dataset drift, 0 when not (absent: inconclusive).",
    ["namespace", "name", "variant", "model_version"],
)
DRIFT_EVALUATIONS = Counter(
    "dockyard_drift_evaluations_total",
    "Drift evaluations per variant by result (Drift, NoDrift, Inconclusive, NoReference, Error).",
    ["namespace", "name", "result"],
)
DRIFT_EVALUATION_DURATION = Histogram(
    "dockyard_drift_evaluation_duration_seconds", "Time to evaluate one ModelDeployment's drift (queries included).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class PhaseTracker:
    """Keeps `dockyard_resources{kind,phase}` exact by remembering each object's phase."""

    def __init__(self) -> None:
        self._phases: dict[tuple[str, str], str] = {}

    def observe(self, kind: str, key: str, phase: str | None) -> None:
        old = self._phases.get((kind, key))
        if old == phase:
            return
        if old is not None:
            RESOURCES.labels(kind=kind, phase=old).dec()
        if phase is None:
            self._phases.pop((kind, key), None)
        else:
            self._phases[(kind, key)] = phase
            RESOURCES.labels(kind=kind, phase=phase).inc()


PHASES = PhaseTracker()


def serve(port: int, registry: CollectorRegistry = REGISTRY) -> None:
    """Expose /metrics on all interfaces (a background thread of prometheus-client)."""
    start_http_server(port, registry=registry)
