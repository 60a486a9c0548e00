"""``python -m tests.localcluster build|up|down|env|status`` (what ``hack/controlplane.sh`` runs).

``build`` needs nothing but the standard library (CI starts it with the system Python while the
virtualenv is still being installed); the other commands need the dev virtualenv."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import build


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hack/controlplane.sh", description="A real Kubernetes control plane on this machine.")
    p.add_argument("--dir", type=Path, default=None, help="state directory (default $DOCKYARD_CLUSTER_DIR or /tmp/dockyard-cluster)")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the binaries into the cache (skipped when present)")
    b.add_argument("--force", action="store_true")
    up = sub.add_parser("up", help="start etcd, kube-apiserver, controller-manager, scheduler, node agent, kube-proxy, CoreDNS")
    up.add_argument("--timeout", type=float, default=180.0)
    up.add_argument("--verbose", action="store_true")
    sub.add_parser("down", help="stop everything up started and remove the node's network pieces")
    sub.add_parser("env", help="print `export KUBECONFIG=...` for the running cluster")
    sub.add_parser("status", help="print the running cluster's state as JSON")
    args = p.parse_args(argv)
    if args.cmd == "build":
        r = build.build(force=args.force)
        print(f"{r.bin_dir} ({'built' if r.built else 'cached'} in {r.seconds:.1f} s)")
        return 0
    from . import controlplane

    state_dir = (args.dir or controlplane.default_state_dir()).resolve()
    if args.cmd == "up":
        running = controlplane.running_cluster(state_dir)
        if running is not None:
            print(f"already running: export KUBECONFIG={running.kubeconfig}")
            return 0
        controlplane.stop_recorded(state_dir)  # leftovers of a crashed run
        t0 = time.monotonic()
        cp = controlplane.ControlPlane(state_dir, verbose=args.verbose)
        try:
            state = cp.start(timeout=args.timeout)
        except controlplane.StartupError as e:
            print(f"control plane failed to start: {e}", file=sys.stderr)
            return 1
        # The processes were started in their own sessions: they outlive this command.
        cp.procs.clear()
        timings = ", ".join(f"{k} {v:.1f}s" for k, v in cp.timings.items())
        print(f"up in {time.monotonic() - t0:.1f} s ({timings})")
        print(f"export KUBECONFIG={state.kubeconfig}")
        return 0
    if args.cmd == "down":
        controlplane.stop_recorded(state_dir)
        return 0
    running = controlplane.running_cluster(state_dir)
    if running is None:
        print("no local cluster is running", file=sys.stderr)
        return 1
    if args.cmd == "env":
        print(f"export KUBECONFIG={running.kubeconfig}")
        print(f"export PATH={running.bin_dir}:$PATH")
    else:
        print(json.dumps(running.__dict__, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
