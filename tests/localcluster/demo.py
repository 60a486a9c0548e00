"""Dockyard's whole loop on the local cluster: ``bash hack/demo.sh`` (which starts the cluster)
runs ``python -m tests.localcluster.demo``.

1. installs the Helm chart as ``helm install`` would (rendered by the Helm engine,
   helm-python-sdk; CRDs first): RBAC, the operator Deployment (running in the cluster under
   its ServiceAccount, watching only the demo namespace, so tests can share the cluster),
   the embedded MLflow Deployment with its PersistentVolumeClaim;
2. applies ``manifests/examples/`` into a namespace with Pod Security ``restricted``;
3. waits for the Dataset, the TrainingRun (a real training Job logging to the in-cluster
   MLflow and registering ``iris-classifier`` with alias ``challenger``), points alias
   ``champion`` at the same version (the examples' ModelDeployment splits champion 80 /
   challenger 20, and a first model has nothing else to be), and waits for the
   ModelDeployment;
4. sends V2 inference requests to the router Service's ClusterIP and prints which variant
   answered each, then how to look around and how to stop.
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from . import controlplane

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "manifests" / "examples"
MODEL = "iris-classifier"
PAYLOAD = {
    "parameters": {"content_type": "pd"},
    "inputs": [
        {"name": "sepal_length", "shape": [1], "datatype": "FP64", "data": [5.9]},
        {"name": "sepal_width", "shape": [1], "datatype": "FP64", "data": [3.0]},
        {"name": "petal_length", "shape": [1], "datatype": "FP64", "data": [5.1]},
        {"name": "petal_width", "shape": [1], "datatype": "FP64", "data": [1.8]},
    ],
}
RESTRICTED = {f"pod-security.kubernetes.io/{m}": "restricted" for m in ("enforce", "warn", "audit")}


class Kubectl:
    def __init__(self, kubeconfig: str, bin_dir: str) -> None:
        self.argv = [str(Path(bin_dir) / "kubectl"), f"--kubeconfig={kubeconfig}"]

    def __call__(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 900) -> str:
        r = subprocess.run([*self.argv, *args], input=input, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
        return r.stdout

    def apply(self, objects: list[dict[str, Any]], namespace: str | None = None) -> None:
        ns = ["-n", namespace] if namespace else []
        self("apply", "--server-side", "--force-conflicts", "--field-manager=dockyard-demo", *ns, "-f", "-",
             input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))


def install_chart(k: Kubectl, namespace: str, release: str = "dockyard",
                  values: dict[str, Any] | None = None, timeout: str = "600s") -> list[dict[str, Any]]:
    """Render the chart with the Helm engine and apply it: CRDs (the chart's crds/, which Helm
    installs first), then every template. Waits for the CRDs and every Deployment."""
    from tests.chart import chartlib

    crds = chartlib.chart_crds()
    k.apply(crds)
    k("wait", "--for=condition=Established", "--timeout=60s",
      *[f"crd/{c['metadata']['name']}" for c in crds])
    k.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}])
    objects = chartlib.render(values or {}, namespace=namespace, release=release)
    k.apply(objects)  # every namespaced template names its namespace
    for obj in objects:
        if obj["kind"] == "Deployment":
            k("-n", namespace, "rollout", "status", f"deployment/{obj['metadata']['name']}", f"--timeout={timeout}")
    return objects


def wait_phase(k: Kubectl, namespace: str, resource: str, phases: tuple[str, ...], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = k.json("-n", namespace, "get", resource)
        if (last.get("status") or {}).get("phase") in phases:
            return last
        time.sleep(2)
    raise TimeoutError(f"{resource} not in {phases} after {timeout:.0f}s: {json.dumps(last.get('status'), indent=1)}")


def service_url(k: Kubectl, namespace: str, name: str) -> str:
    svc = k.json("-n", namespace, "get", "service", name)
    return f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"


def mlflow_admin(k: Kubectl, namespace: str, secret: str = "dockyard-mlflow-auth") -> tuple[str, str]:
    """The embedded MLflow's admin credential, from the Secret the chart generated."""
    data = k.json("-n", namespace, "get", "secret", secret)["data"]
    return tuple(base64.b64decode(data[key]).decode() for key in ("admin-username", "admin-password"))  # type: ignore[return-value]


def set_alias(mlflow_url: str, admin: tuple[str, str], model: str, alias: str, version: str) -> None:
    body = json.dumps({"name": model, "alias": alias, "version": version}).encode()
    login = base64.b64encode(":".join(admin).encode()).decode()
    req = urllib.request.Request(f"{mlflow_url}/api/2.0/mlflow/registered-models/alias", data=body, method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Basic {login}"})
    urllib.request.urlopen(req, timeout=30).read()


def wait_reachable(url: str, timeout: float = 60) -> None:
    """kube-proxy programs a Service's endpoints shortly after its Pods turn Ready."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def send(url: str, n: int) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    data = json.dumps(PAYLOAD).encode()
    for _ in range(n):
        req = urllib.request.Request(f"{url}/v2/models/{MODEL}/infer", data=data,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                json.loads(r.read())
                variant = r.headers.get("X-Dockyard-Variant", "?")
                counts[f"{variant} (version {r.headers.get('X-Dockyard-Model-Version', '?')})"] += 1
        except OSError as e:
            counts[f"error: {e}"] += 1
    return counts


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hack/demo.sh")
    p.add_argument("--namespace", default="dockyard", help="the chart's release namespace")
    p.add_argument("--workload-namespace", default="dockyard-demo")
    p.add_argument("--requests", type=int, default=200)
    args = p.parse_args(argv)
    state = controlplane.running_cluster()
    if state is None:
        print("no local cluster is running: hack/controlplane.sh up", file=sys.stderr)
        return 1
    k = Kubectl(state.kubeconfig, state.bin_dir)
    started = time.monotonic()

    step(f"1/4 helm chart into namespace {args.namespace}: operator (watching {args.workload_namespace}) "
         "and the embedded MLflow")
    # The workload namespace first: the chart's namespaced scope puts a Role into it.
    k.apply([{"apiVersion": "v1", "kind": "Namespace",
              "metadata": {"name": args.workload_namespace, "labels": RESTRICTED}}])
    install_chart(k, args.namespace, values={"watch": {"namespaces": [args.workload_namespace]}})
    mlflow_url = service_url(k, args.namespace, "dockyard-mlflow")
    print(f"operator and MLflow are running; MLflow at {mlflow_url}")

    step(f"2/4 manifests/examples/ into namespace {args.workload_namespace} (Pod Security: restricted)")
    docs = [d for f in sorted(EXAMPLES.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    k.apply(docs, args.workload_namespace)
    print(k("-n", args.workload_namespace, "get", "dockyard"))

    step("3/4 wait for profiling, training, registration and serving")
    ds = wait_phase(k, args.workload_namespace, "dataset/iris", ("Ready", "Invalid", "Failed"), 600)
    print(f"Dataset iris: {ds['status']['phase']} version {ds['status'].get('version', '')[:19]}..."
          f" rows {ds['status'].get('rows')}")
    tr = wait_phase(k, args.workload_namespace, "trainingrun/iris-rf", ("Succeeded", "Failed", "Rejected"), 1200)
    st = tr["status"]
    if st["phase"] != "Succeeded":
        print(json.dumps(st, indent=1), file=sys.stderr)
        return 1
    print(f"TrainingRun iris-rf: {MODEL} version {st['modelVersion']} registered, "
          f"metrics {json.dumps(st.get('metrics'))}")
    set_alias(mlflow_url, mlflow_admin(k, args.namespace), MODEL, "champion", st["modelVersion"])
    print(f"alias champion -> version {st['modelVersion']} (set through the MLflow REST API, as its admin)")
    md = wait_phase(k, args.workload_namespace, "modeldeployment/iris", ("Ready",), 900)
    print(f"ModelDeployment iris: {md['status']['phase']}, weights {md['status'].get('weights')}, "
          f"endpoint {md['status'].get('endpoint')}")

    step(f"4/4 {args.requests} V2 inference requests through the router Service")
    router = service_url(k, args.workload_namespace, "iris")
    wait_reachable(router)
    counts = send(router, args.requests)
    for variant, n in counts.most_common():
        print(f"  {variant}: {n} ({100.0 * n / args.requests:.1f}%)")
    print(f"\nDone in {time.monotonic() - started:.0f} s. Everything keeps running:")
    print(f"  export KUBECONFIG={state.kubeconfig}")
    print(f"  export PATH={state.bin_dir}:$PATH      # kubectl {Path(state.bin_dir).name.split('-')[1]}")
    print(f"  kubectl -n {args.workload_namespace} get dockyard")
    print(f"  curl -s -H 'Content-Type: application/json' -d '{json.dumps(PAYLOAD)}' \\\n"
          f"    {router}/v2/models/{MODEL}/infer")
    print(f"  MLflow UI: {mlflow_url} (user admin; password: kubectl -n {args.namespace} get secret "
          "dockyard-mlflow-auth -o jsonpath='{.data.admin-password}' | base64 -d)")
    print("  stop: hack/controlplane.sh down")
    return 0 if sum(n for v, n in counts.items() if not v.startswith("error")) == args.requests else 1


if __name__ == "__main__":
    sys.exit(main())
