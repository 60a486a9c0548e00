"""The Ray driver of the RayJob test in tests/integration/test_engines_real.py.

Ray's job manager runs it (``python <this file>``, submitted by KubeRay in HTTPMode) on the
Ray head of the job's own cluster; it gets the training contract's environment from the operator (docs/training-contract.md:
``MLFLOW_TRACKING_URI``, ``MLFLOW_RUN_ID``, ``DOCKYARD_DATASET_URI``, ``DOCKYARD_TARGET``, ...),
which the head Pod's Ray processes pass on to the driver.

1. Waits until the head and ``RAY_TRAINER_WORKERS`` (default 2) workers have joined.
2. Reads the Dataset as the built-in trainer does (``dockyard.runtime``) and scores the
   estimator's k-fold cross-validation as ``@ray.remote`` tasks with the ``SPREAD`` strategy,
   one CPU each; every task reports the Ray node id it ran on.
3. Rank 0 (this driver; the worker Pods run only tasks) opens the operator's MLflow run, tags
   the Ray facts (``dockyard.ray.task_nodes``: distinct nodes that ran a fold,
   ``dockyard.ray.worker_nodes``: those of them that are not the driver's, the head) and logs
   the cross-validation scores, then trains, evaluates and logs the model with the built-in
   trainer's own :func:`dockyard.runtime.train.train`, so the operator registers it as it
   does the built-in trainer's.

Only plain tokens reach it (RayJob entrypoint rule): it takes no arguments.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

import ray

FOLDS = 6


@ray.remote(num_cpus=1, scheduling_strategy="SPREAD")
def score_fold(estimator: str, params: dict, x, y, train_idx, test_idx) -> tuple[float, str]:  # type: ignore[no-untyped-def]
    """Fit a fresh estimator on one fold's training rows; its accuracy on the held-out rows and
    the node that ran it."""
    from dockyard.runtime.train import import_estimator

    time.sleep(0.5)  # long enough that SPREAD cannot pile every fold on one idle node
    model = import_estimator(estimator)(**params).fit(x[train_idx], y[train_idx])
    return float(model.score(x[test_idx], y[test_idx])), ray.get_runtime_context().get_node_id()


def wait_for_nodes(count: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while (alive := sum(1 for n in ray.nodes() if n.get("Alive"))) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {alive} of {count} Ray nodes joined within {timeout:.0f}s")
        time.sleep(0.5)


def main() -> int:
    from sklearn.model_selection import StratifiedKFold

    from dockyard.runtime.common import RuntimeFailure, quiet_mlflow
    from dockyard.runtime.data import parse_frame, read_source_bytes
    from dockyard.runtime.train import (
        _fail_run,
        coerce_hyperparameters,
        config_from_env,
        feature_frame,
        import_estimator,
        train,
    )

    environ = os.environ
    cfg = config_from_env(environ)
    workers = int(environ.get("RAY_TRAINER_WORKERS", "2"))
    ray.init()
    wait_for_nodes(1 + workers)

    frame = parse_frame(read_source_bytes(cfg.dataset_uri, environ), cfg.dataset_format, cfg.dataset_uri)
    frame.columns = [str(c) for c in frame.columns]
    x, _ = feature_frame(frame, cfg.target)
    y = frame[cfg.target].to_numpy()
    params = coerce_hyperparameters(import_estimator(cfg.estimator), cfg.hyperparameters)
    folds = StratifiedKFold(FOLDS, shuffle=True, random_state=cfg.random_seed).split(x, y)
    x_ref, y_ref = ray.put(x.to_numpy()), ray.put(y)
    results = ray.get([score_fold.remote(cfg.estimator, params, x_ref, y_ref, tr, te) for tr, te in folds])
    scores = [s for s, _ in results]
    nodes = {n for _, n in results}
    driver_node = ray.get_runtime_context().get_node_id()
    print(f"ray_trainer: {FOLDS} folds on {len(nodes)} nodes ({len(nodes - {driver_node})} workers): {scores}",
          flush=True)

    quiet_mlflow()
    import mlflow

    if cfg.tracking_uri:
        mlflow.set_tracking_uri(cfg.tracking_uri)
    mlflow.start_run(run_id=cfg.run_id)
    try:
        mlflow.set_tags({"dockyard.ray.task_nodes": str(len(nodes)),
                         "dockyard.ray.worker_nodes": str(len(nodes - {driver_node})),
                         "dockyard.ray.version": ray.__version__})
        mlflow.log_metrics({"cv_accuracy_mean": sum(scores) / len(scores), "cv_folds": float(FOLDS)})
        payload = train(cfg, environ)
    except Exception as exc:
        traceback.print_exc()
        _fail_run(cfg.run_id, exc if isinstance(exc, RuntimeFailure) else RuntimeFailure("TrainingFailed", str(exc)))
        return 1
    mlflow.end_run(status="FINISHED")
    print(f"ray_trainer: ok: {payload}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
