"""Benchmark (not a test): reconcile latency of TrainingRuns.

    .venv/bin/python bench/reconcile_latency.py [--target controlplane|emulator] [--count 100]
        [--concurrency 100] [--workers 16]

Against the local control plane (default; node agent in instant mode) or the API emulator
with its instant kubelet (Jobs succeed at once either way), a real MLflow
server behind the counting proxy, and the real operator as a separate process: create N
TrainingRuns (at most --concurrency requests in flight) and measure, per TrainingRun,

* create -> its training Job exists (seen on a watch of Jobs),
* create -> status.phase Running (seen on a watch of TrainingRuns),

from the moment the create request was sent (also from when it was acknowledged, which leaves
out the API server's own queueing of the creates). Prints p50/p95/p99/max, the API requests and
MLflow calls per TrainingRun, and where the CPU went (operator, MLflow, and the emulator and
executor threads or the cluster's processes).
Goal (issue 7): p50 <= 50 ms, p99 <= 250 ms on the 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    Stack,
    add_target_argument,
    cpu_report,
    dist_line,
    ensure_datasets,
    executor_line,
    fmt_counts,
    loadavg,
    percentile,
    print_header,
    run_one_stack,
    run_trainingruns,
    session,
    split_requests,
    trainingrun,
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_argument(p)
    p.add_argument("--count", type=int, default=100, help="TrainingRuns to create")
    p.add_argument("--concurrency", type=int, default=100, help="create requests in flight at once")
    p.add_argument("--workers", type=int, default=16, help="operator DOCKYARD_WORKERS (chart default 16)")
    p.add_argument("--mlflow-workers", type=int, default=2, help="MLflow server workers (chart default 2)")
    p.add_argument("--warmup", type=int, default=5, help="TrainingRuns run to completion before measuring")
    p.add_argument("--models", type=int, default=10, help="distinct model names the TrainingRuns register")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--keep", action="store_true",
                   help="keep the work dir (operator log, MLflow db) and, on the control plane, the namespace")
    args = p.parse_args()
    print_header("reconcile_latency", vars(args))

    return run_one_stack(args, "dockyard-bench-latency-", "bench-latency", measure)


async def measure(stack: Stack, args: argparse.Namespace) -> int:
    async with session() as sess:
        took = await ensure_datasets(stack, sess, ["iris"])
        print(f"setup: Dataset iris Ready in {took:.2f}s")
        if args.warmup:
            warm = [trainingrun(f"warmup-{i}", "iris", f"bench-model-{i % args.models}") for i in range(args.warmup)]
            await run_trainingruns(stack, sess, warm, args.warmup, args.timeout)
            print(f"setup: {args.warmup} warm-up TrainingRuns done; loadavg now {loadavg()}")
        bodies = [trainingrun(f"tr-{i:04d}", "iris", f"bench-model-{i % args.models}") for i in range(args.count)]
        b = await run_trainingruns(stack, sess, bodies, args.concurrency, args.timeout)

    print(f"== results (loadavg after: {loadavg()})")
    if not b.complete:
        print(f"WARNING: not every TrainingRun finished within {args.timeout}s")
    obs = b.observer
    running = obs.first("trainingruns", ["Running", "Registering", "Succeeded", "Rejected", "Failed"])
    sent = {n: t[0] for n, t in b.created.items()}
    acked = {n: t[1] for n, t in b.created.items()}
    to_job = [obs.jobs[n] - sent[n] for n in sent if n in obs.jobs]
    to_running = [running[n] - sent[n] for n in sent if n in running]
    print(dist_line("create -> Job", to_job))
    print(dist_line("create -> phase Running", to_running))
    print(dist_line("create acked -> Job", [obs.jobs[n] - acked[n] for n in acked if n in obs.jobs]))
    print(dist_line("create acked -> Running", [running[n] - acked[n] for n in acked if n in running]))
    print(dist_line("create request itself", [acked[n] - sent[n] for n in sent]))
    print(f"all {b.n} Jobs exist after {b.t_all_jobs - b.t0:.2f}s; all Succeeded after {b.t_done_s:.2f}s")
    op, ex, _ = split_requests(b.counts_done, b.bench_own, target=b.target)
    print(f"operator API requests per TrainingRun (create -> Succeeded): {sum(op.values()) / b.n:.1f} "
          f"[{fmt_counts(op)}]")
    print(executor_line(b.target, ex, "executor API requests (kubelet/Job controller stand-in)"))
    ml = sum(b.mlflow_done.values())
    print(f"MLflow calls per TrainingRun: {ml / b.n:.1f} [{fmt_counts(b.mlflow_done)}]")
    ml_jobs = sum(b.mlflow_jobs.values())
    print(f"  of which before the last Job existed: {ml_jobs} [{fmt_counts(b.mlflow_jobs)}]")
    print(dist_line(f"API probe GET ({stack.api_name})", b.api_probe))
    print(dist_line("MLflow call (via proxy)", b.mlflow_latency))
    print(f"  MLflow p50 by endpoint (ms): {stack.mlflow.proxy.p50_by_endpoint(b.t0)}")
    n_rec, s_rec = b.reconciles
    print(f"operator TrainingRun reconciles: {n_rec:.0f} ({n_rec / b.n:.1f} per TR), "
          f"mean {1000 * s_rec / max(n_rec, 1):.1f} ms wall each (awaits included)")
    requests = sum(v for v in b.counts_done.values())
    for line in cpu_report(b.cpu_start, b.cpu_done, requests, ml):
        print(line)
    print(f"operator peak RSS (VmHWM): {b.peak_rss_mb:.1f} MB")
    p50, p99 = percentile(to_job, 50), percentile(to_job, 99)
    print(f"goal create->Job p50 <= 50 ms: {'met' if p50 <= 0.050 else 'MISSED'} ({p50 * 1000:.0f} ms); "
          f"p99 <= 250 ms: {'met' if p99 <= 0.250 else 'MISSED'} ({p99 * 1000:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
