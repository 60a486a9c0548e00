"""Benchmark (not a test): a burst of TrainingRuns applied at once.

    .venv/bin/python bench/burst.py [--target controlplane|emulator] [--counts 100,300,1000] [--workers 16]

For each count: a fresh namespace and operator process (and, on the emulator target, a fresh
emulator; one MLflow server and, on the control plane, one cluster for all), one Ready
Dataset, then N TrainingRuns created at once. Prints the time until every training Job exists
and until every TrainingRun is Succeeded (from the first create sent), CR/s, the operator's
peak RSS (VmHWM), and where the CPU went.

The comparison that matters: a client limited to 20 requests/s (the client-go /
controller-runtime default, QPS=20) needs at least N*W/20 seconds when each TrainingRun costs
W API writes, whatever its concurrency. W is counted with request counters: the emulator's
(the executor's Pod/Job status writes and our creates subtracted) or, on the control plane,
the counting proxy the operator talks through (its requests only).
Goals (issue 7): 1000 Jobs in <= 20 s; operator RSS <= 150 MB with 1000 objects.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    WRITE_VERBS,
    Batch,
    Mlflow,
    Stack,
    add_target_argument,
    api_name,
    bench_target,
    cleanup,
    cpu_report,
    dist_line,
    emulator_ceiling,
    ensure_datasets,
    executor_line,
    fmt_counts,
    loadavg,
    print_header,
    run_trainingruns,
    session,
    split_requests,
    trainingrun,
    workdir,
)

QPS = 20.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_argument(p)
    p.add_argument("--counts", default="100,300,1000", help="comma-separated burst sizes")
    p.add_argument("--workers", type=int, default=16, help="operator DOCKYARD_WORKERS (chart default 16)")
    p.add_argument("--mlflow-workers", type=int, default=2, help="MLflow server workers (chart default 2)")
    p.add_argument("--models", type=int, default=10, help="distinct model names the TrainingRuns register")
    p.add_argument("--timeout", type=float, default=1800.0, help="per burst")
    p.add_argument("--no-ceiling", dest="ceiling", action="store_false",
                   help="skip measuring the emulator's own request ceiling after each burst (emulator target)")
    p.add_argument("--keep", action="store_true",
                   help="keep the work dir (operator logs, MLflow db) and, on the control plane, the namespaces")
    args = p.parse_args()
    counts = [int(c) for c in args.counts.split(",") if c.strip()]
    print_header("burst", {**vars(args), "qps_budget": QPS})

    root = workdir("dockyard-bench-burst-")
    rows = []
    try:
        with bench_target(args.target, root) as cluster:
            mlflow = Mlflow.start(root, args.mlflow_workers)
            try:
                for n in counts:
                    stack = Stack(root / f"burst-{n}", f"bench-burst-{n}", mlflow, workers=args.workers,
                                  cluster=cluster, keep=args.keep)
                    try:
                        stack.start()
                        print(f"\n== burst of {n} TrainingRuns (loadavg before: {loadavg()})")
                        b = asyncio.run(burst(stack, n, args))
                        rows.append(report(b))
                        if args.ceiling:
                            print(emulator_ceiling(stack, "tr-0000", "tr-0000-train-1"))
                    finally:
                        stack.stop()
            finally:
                mlflow.stop()
    finally:
        cleanup(root, args.keep)

    print("\n== summary")
    print(f"{'N':>6} {'all Jobs s':>10} {'Jobs/s':>7} {'all Succeeded s':>15} {'CR/s':>6} {'RSS MB':>7} "
          f"{'W/TR':>5} {'20QPS min s':>11} {'ratio':>6}")
    for r in rows:
        print(f"{r['n']:>6} {r['jobs_s']:>10.2f} {r['jobs_rate']:>7.1f} {r['done_s']:>15.2f} {r['done_rate']:>6.1f} "
              f"{r['rss']:>7.1f} {r['w']:>5.1f} {r['qps_min']:>11.1f} {r['ratio']:>6.2f}")
    print("ratio = measured time until all Succeeded / minimum time of a 20-QPS client making the same "
          "writes (< 1: faster than that client could ever be)")
    return 0


async def burst(stack: Stack, n: int, args: argparse.Namespace) -> Batch:
    async with session() as sess:
        await ensure_datasets(stack, sess, ["iris"])
        bodies = [trainingrun(f"tr-{i:04d}", "iris", f"bench-model-{i % args.models}") for i in range(n)]
        return await run_trainingruns(stack, sess, bodies, n, args.timeout)


def report(b: Batch) -> dict[str, float]:
    n = b.n
    if not b.complete:
        print("WARNING: not every TrainingRun finished within the timeout")
    jobs_s, done_s = b.t_jobs_s, b.t_done_s
    print(f"all {n} Jobs exist after {jobs_s:.2f}s ({n / jobs_s:.1f} Jobs/s); all Succeeded after {done_s:.2f}s "
          f"({n / done_s:.1f} CR/s)")
    to_job = [b.observer.jobs[k] - t[0] for k, t in b.created.items() if k in b.observer.jobs]
    print(dist_line("create -> Job", to_job))
    print(dist_line("create request itself", [t[1] - t[0] for t in b.created.values()]))
    print(dist_line(f"API probe GET ({api_name(b.target)})", b.api_probe))
    print(dist_line("MLflow call (via proxy)", b.mlflow_latency))
    print(f"operator peak RSS (VmHWM): {b.peak_rss_mb:.1f} MB")

    op_done, ex_done, _ = split_requests(b.counts_done, b.bench_own, target=b.target)
    op_jobs, _, _ = split_requests(b.counts_jobs, b.bench_own, target=b.target)
    w_done = sum(v for (verb, _), v in op_done.items() if verb in WRITE_VERBS) / n
    w_done_no_events = sum(v for (verb, res), v in op_done.items() if verb in WRITE_VERBS and res != "events") / n
    r_done = sum(v for (verb, _), v in op_done.items() if verb not in WRITE_VERBS) / n
    w_jobs = sum(v for (verb, _), v in op_jobs.items() if verb in WRITE_VERBS) / n
    print(f"operator requests, create -> all Succeeded: {fmt_counts(op_done)}")
    print(executor_line(b.target, ex_done, "executor requests (kubelet/Job controller stand-in)"))
    print(f"per TrainingRun: W={w_done:.2f} writes ({w_done_no_events:.2f} without Events), R={r_done:.2f} reads; "
          f"until the last Job existed: {w_jobs:.2f} writes")
    ml = sum(b.mlflow_done.values())
    print(f"MLflow calls per TrainingRun: {ml / n:.1f} [{fmt_counts(b.mlflow_done)}]")
    qps_min = n * w_done / QPS
    qps_min_all = n * (w_done + r_done) / QPS
    qps_min_jobs = n * w_jobs / QPS
    print(f"20-QPS client budget: >= {qps_min:.1f}s for N*W/20 writes (ours {done_s:.2f}s, ratio {done_s / qps_min:.2f}); "
          f">= {qps_min_all:.1f}s counting reads too (ratio {done_s / qps_min_all:.2f}); "
          f"Jobs: >= {qps_min_jobs:.1f}s (ours {jobs_s:.2f}s, ratio {jobs_s / qps_min_jobs:.2f})")
    requests = sum(b.counts_done.values())
    for line in cpu_report(b.cpu_start, b.cpu_done, requests, ml):
        print(line)
    n_rec, s_rec = b.reconciles
    print(f"operator TrainingRun reconciles: {n_rec:.0f} ({n_rec / n:.1f} per TR), mean {1000 * s_rec / max(n_rec, 1):.0f} ms "
          f"wall each")
    if n >= 1000:
        print(f"goal 1000 Jobs <= 20 s: {'met' if jobs_s <= 20 else 'MISSED'} ({jobs_s:.1f}s); "
              f"RSS <= 150 MB: {'met' if b.peak_rss_mb <= 150 else 'MISSED'} ({b.peak_rss_mb:.0f} MB)")
    sys.stdout.flush()
    return {"n": n, "jobs_s": jobs_s, "jobs_rate": n / jobs_s, "done_s": done_s, "done_rate": n / done_s,
            "rss": b.peak_rss_mb, "w": w_done, "qps_min": qps_min, "ratio": done_s / qps_min}


if __name__ == "__main__":
    sys.exit(main())
