"""Benchmark (not a test): what a converged operator costs, and what a restart costs.

    .venv/bin/python bench/steady_state.py [--target controlplane|emulator] [--minutes 5] [--trainingruns 1000]
        [--datasets 100] [--deployments 50]

Against the local control plane (default; node agent in instant mode) or the API emulator
(its instant kubelet): loads Ready Datasets, Succeeded TrainingRuns (through the
real operator, instant Jobs) and Ready ModelDeployments (pinned versions, builtin router),
waits until the operator has made no API request and no MLflow call for --quiet seconds, then:

1. steady state: runs for --minutes and counts API requests by verb/resource (the emulator's
   counters, every client; or on the control plane the operator's counting proxy) and MLflow
   calls by endpoint (counting proxy). Goal (issue 7): 0 writes and 0 MLflow calls once
   converged;
2. resume: kills the operator (SIGKILL), starts a new one and counts what it costs until quiet
   again: API requests by verb/resource, MLflow calls, time until quiet, peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    WRITE_VERBS,
    Observer,
    Stack,
    add_target_argument,
    code_version,
    cpu_report,
    create_all,
    emulator_ceiling,
    ensure_datasets,
    executor_line,
    fmt_counts,
    loadavg,
    modeldeployment,
    print_header,
    proc_mem_mb,
    run_one_stack,
    run_trainingruns,
    session,
    split_requests,
    trainingrun,
    wait_quiet,
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_target_argument(p)
    p.add_argument("--minutes", type=float, default=5.0, help="length of the steady-state window")
    p.add_argument("--trainingruns", type=int, default=1000)
    p.add_argument("--datasets", type=int, default=100)
    p.add_argument("--deployments", type=int, default=50)
    p.add_argument("--models", type=int, default=10, help="distinct model names (ModelDeployments pin v1/v2)")
    p.add_argument("--workers", type=int, default=16, help="operator DOCKYARD_WORKERS (chart default 16)")
    p.add_argument("--mlflow-workers", type=int, default=2, help="MLflow server workers (chart default 2)")
    p.add_argument("--probe-period", type=float, default=10.0,
                   help="GET the operator's /healthz every N s during the window, as the kubelet's probes do "
                        "(chart: readiness every 10 s, liveness every 20 s); 0 = off")
    p.add_argument("--quiet", type=float, default=10.0, help="seconds without any request that count as converged")
    p.add_argument("--timeout", type=float, default=3600.0, help="for loading")
    p.add_argument("--keep", action="store_true",
                   help="keep the work dir (operator log, MLflow db) and, on the control plane, the namespace")
    args = p.parse_args()
    args.models = max(1, min(args.models, args.trainingruns // 2))
    print_header("steady_state", vars(args))

    return run_one_stack(args, "dockyard-bench-steady-", "bench-steady", measure)


async def measure(stack: Stack, args: argparse.Namespace) -> int:
    async with session() as sess:
        # -- load --------------------------------------------------------------------------
        t0 = time.monotonic()
        ds_names = [f"ds-{i:03d}" for i in range(args.datasets)]
        took = await ensure_datasets(stack, sess, ds_names)
        print(f"load: {args.datasets} Datasets Ready in {took:.1f}s")
        bodies = [trainingrun(f"tr-{i:04d}", ds_names[i % len(ds_names)], f"bench-model-{i % args.models}")
                  for i in range(args.trainingruns)]
        b = await run_trainingruns(stack, sess, bodies, 100, args.timeout)
        phases = b.observer.first("trainingruns", ["Succeeded"])
        print(f"load: {len(phases)}/{args.trainingruns} TrainingRuns Succeeded in {b.t_done_s:.1f}s "
              f"(loadavg {loadavg()})")
        obs = Observer(stack.url, stack.namespace)
        await obs.start(sess, ["modeldeployments"])
        t_md = time.monotonic()
        await create_all(sess, stack.url, stack.namespace, "modeldeployments",
                         [modeldeployment(f"md-{i:03d}", f"bench-model-{i % args.models}")
                          for i in range(args.deployments)], 50)
        await obs.wait(lambda: len(obs.first("modeldeployments", ["Ready"])) >= args.deployments, args.timeout)
        await obs.stop()
        ready = len(obs.first("modeldeployments", ["Ready"]))
        print(f"load: {ready}/{args.deployments} ModelDeployments Ready in {time.monotonic() - t_md:.1f}s")
        quiet, last = await wait_quiet(stack, args.quiet, args.timeout, mlflow=stack.mlflow)
        print(f"load: converged (no API request or MLflow call for {args.quiet:.0f}s: {quiet}) "
              f"{last - t0:.1f}s after the first create; loadavg {loadavg()}")
        rss, hwm = proc_mem_mb(stack.operator_pid)
        print(f"operator memory with {args.datasets + args.trainingruns + args.deployments} objects "
              f"(+ their Jobs/Deployments): VmRSS {rss:.1f} MB, VmHWM {hwm:.1f} MB")

        # -- steady state ----------------------------------------------------------------------
        print(f"\n== steady state: {args.minutes:g} minutes (loadavg before: {loadavg()})")
        c0, m0, cpu0 = stack.counts(), stack.mlflow.proxy.snapshot(), stack.cpu()
        probes = await kubelet_probes(stack, args.minutes * 60, args.probe_period)
        delta, ml, cpu1 = stack.delta(c0), stack.mlflow.proxy.calls_since(m0), stack.cpu()
        op, ex, watches = split_requests(delta, target=stack.target)
        writes = {k: v for k, v in delta.items() if k[0] in WRITE_VERBS}
        print(f"API writes: {sum(writes.values())} [{fmt_counts(writes)}]")
        print(f"API requests other than watches: operator {fmt_counts(op)}")
        print("  " + executor_line(stack.target, ex, "executor"))
        print(f"watch requests (re-established long polls, not writes): {fmt_counts(watches)}")
        print(f"MLflow calls: {sum(ml.values())} [{fmt_counts(ml)}]")
        ping = ml.get("GET experiments/get-by-name", 0)
        print(f"  kubelet-like /healthz probes sent: {probes} (each runs the operator's 'mlflow' probe = GET experiments/get-by-name, "
              f"cached by kopf for 10 s); MLflow calls other than that probe: {sum(ml.values()) - ping}")
        for line in cpu_report(cpu0, cpu1, sum(delta.values()), sum(ml.values())):
            print(line)
        goal = not writes and sum(ml.values()) - ping == 0
        print(f"goal 0 writes and 0 MLflow calls once converged: {'met' if goal else 'MISSED'} "
              f"(writes {sum(writes.values())}, reconcile MLflow calls {sum(ml.values()) - ping}, "
              f"probe MLflow calls {ping})")

        # -- restart ------------------------------------------------------------------------
        print(f"\n== restart: SIGKILL + start (loadavg before: {loadavg()}; operator code now: {code_version()})")
        c0, m0 = stack.counts(), stack.mlflow.proxy.snapshot()
        assert stack.operator is not None
        stack.operator.kill()
        t_start = time.monotonic()
        await asyncio.to_thread(stack.operator.start)
        t_live = time.monotonic()
        cpu0 = stack.cpu()
        quiet, last = await wait_quiet(stack, args.quiet, 600, mlflow=stack.mlflow, since=t_start)
        delta, ml, cpu1 = stack.delta(c0), stack.mlflow.proxy.calls_since(m0), stack.cpu()
        writes = {k: v for k, v in delta.items() if k[0] in WRITE_VERBS}
        print(f"live after {t_live - t_start:.2f}s; last request {last - t_start:.2f}s after start "
              f"(quiet for {args.quiet:.0f}s: {quiet})")
        print(f"API requests: {sum(delta.values())} [{fmt_counts(delta)}]")
        print(f"API writes: {sum(writes.values())} [{fmt_counts(writes)}]")
        print(f"MLflow calls: {sum(ml.values())} [{fmt_counts(ml)}]")
        rss, hwm = proc_mem_mb(stack.operator_pid)
        print(f"new operator: CPU {cpu1.operator:.2f}s since exec, VmRSS {rss:.1f} MB, VmHWM {hwm:.1f} MB")
        for line in cpu_report(cpu0, cpu1, sum(delta.values()), sum(ml.values())):
            print(line)
        print(f"loadavg after: {loadavg()}")
    print("\n" + await asyncio.to_thread(emulator_ceiling, stack, "tr-0000", "tr-0000-train-1"))
    return 0


async def kubelet_probes(stack: Stack, seconds: float, period: float) -> int:
    """Sleep `seconds`, meanwhile GET the operator's /healthz every `period` s (kubelet-like)."""
    if period <= 0:
        await asyncio.sleep(seconds)
        return 0
    assert stack.operator is not None
    end, sent = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(stack.operator.liveness)
        sent += 1
        await asyncio.sleep(max(0.0, min(period, end - time.monotonic())))
    return sent


if __name__ == "__main__":
    sys.exit(main())
