"""The local cluster itself: the real control plane plus the node agent behave as a cluster does.

These run only on ``--cluster=controlplane`` (the default): they check what the node agent and
the launcher promise (Pod network, Services, DNS, security context, statuses as a kubelet
reports them, logs through the apiserver, volumes), with the real Job, Deployment and
ReplicaSet controllers, scheduler and admission doing their part.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.plugins.kube import KubeEnv, has_condition

pytestmark = pytest.mark.integration

IMAGE = "python:3.12-slim"  # the node agent's catalog runs it with the test virtualenv's Python
RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]}}


@pytest.fixture(autouse=True)
def _local_cluster_only(kube: KubeEnv) -> None:
    if kube.cluster.kind != "controlplane":
        pytest.skip("tests the local control plane and node agent (--cluster=controlplane)")


def container(name: str, command: list[str], **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": IMAGE, "command": command, "securityContext": RESTRICTED_CONTAINER, **extra}


def job(name: str, *containers: dict[str, Any], **pod: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {"restartPolicy": "Never", "securityContext": RESTRICTED_POD,
                                  "containers": list(containers), **pod}},
        },
    }


def python(code: str) -> list[str]:
    return ["python3", "-c", code]


def finished_job(kube: KubeEnv, name: str, timeout: float = 60) -> dict[str, Any]:
    return kube.wait_for_object(
        "Job", name, lambda j: has_condition(j, "Complete") or has_condition(j, "Failed"), timeout=timeout
    )


def job_pod(kube: KubeEnv, name: str) -> dict[str, Any]:
    pods = kube.list("Pod", label_selector=f"job-name={name}")
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def terminated(pod: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return dict(pod["status"]["containerStatuses"][index]["state"]["terminated"])


def kubectl(kube: KubeEnv, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", f"--kubeconfig={kube.kubeconfig}", "-n", kube.namespace, *args],
                          capture_output=True, text=True, check=check, timeout=60)


def web_deployment(replicas: int = 2) -> list[dict[str, Any]]:
    serve = python(
        "import http.server, socket\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = socket.gethostname().encode()\n"
        "        self.send_response(200); self.end_headers(); self.wfile.write(body)\n"
        "    def log_message(self, *a): pass\n"
        "http.server.ThreadingHTTPServer(('', 8080), H).serve_forever()\n"
    )
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "securityContext": RESTRICTED_POD,
                        "containers": [container("web", serve, ports=[{"containerPort": 8080}],
                                                 readinessProbe={"httpGet": {"path": "/", "port": 8080},
                                                                 "periodSeconds": 2})],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    ]


def test_kubectl_reports_the_pinned_server_version(kube: KubeEnv) -> None:
    from tests.localcluster import build

    out = json.loads(kubectl(kube, "version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"] == build.kube_version()
    assert out["clientVersion"]["gitVersion"] == build.kube_version()


def test_services_dns_and_pod_network(kube: KubeEnv) -> None:
    """Two replicas behind a Service: a Pod reaches it by short and full DNS name through
    kube-proxy, both replicas answer, and the host reaches the ClusterIP too."""
    for obj in web_deployment():
        kube.apply(obj)
    kube.wait_for_object("Deployment", "web", lambda d: (d.get("status") or {}).get("readyReplicas") == 2, timeout=60)
    kube.wait_service_settled("web")  # kube-proxy serves both endpoints before the client counts them
    fqdn = f"web.{kube.namespace}.svc.cluster.local"
    # wait_service_settled read kube-proxy's ruleset, so no request may fail; errors are
    # reported, not raised, so a failure says what the Pod saw.
    probe = python(
        "import json, socket, time, urllib.request\n"
        "out = {'ips': [], 'seen': [], 'errors': []}\n"
        "try:\n"
        f"    out['ips'] = [socket.gethostbyname('web'), socket.gethostbyname('{fqdn}')]\n"
        "    seen, deadline = set(), time.monotonic() + 30\n"
        "    while len(seen) < 2 and time.monotonic() < deadline:  # kube-proxy picks at random\n"
        "        try:\n"
        "            seen.add(urllib.request.urlopen('http://web/', timeout=5).read().decode())\n"
        "        except OSError as e:\n"
        "            out['errors'].append(repr(e))\n"
        "    out['seen'] = sorted(seen)\n"
        "except OSError as e:\n"
        "    out['errors'].append(repr(e))\n"
        "out['errors'] = out['errors'][:10]  # the message is capped at 4 KiB\n"
        "open('/dev/termination-log', 'w').write(json.dumps(out))\n"
    )
    kube.apply(job("client", container("client", probe)))
    finished = finished_job(kube, "client")
    result = json.loads(terminated(job_pod(kube, "client"))["message"])
    assert has_condition(finished, "Complete"), result
    assert not result["errors"], result
    svc = kube.get("Service", "web")
    assert svc is not None
    assert result["ips"] == [svc["spec"]["clusterIP"]] * 2
    pods = sorted(p["metadata"]["name"] for p in kube.list("Pod", label_selector="app=web"))
    assert result["seen"] == pods  # both replicas answered, each under its own hostname
    from_host = urllib.request.urlopen(f"http://{svc['spec']['clusterIP']}/", timeout=5).read().decode()
    assert from_host in pods


def test_exit_codes_and_termination_messages(kube: KubeEnv) -> None:
    kube.apply(job("fails", container("main", python(
        "import sys; open('/dev/termination-log','w').write('bad input'); sys.exit(3)"))))
    kube.apply(job("fallback", container("main", python("import sys; print('line one'); print('last words'); sys.exit(1)"),
                                         terminationMessagePolicy="FallbackToLogsOnError")))
    for name in ("fails", "fallback"):
        assert has_condition(finished_job(kube, name), "Failed")
    t = terminated(job_pod(kube, "fails"))
    assert (t["exitCode"], t["reason"], t["message"]) == (3, "Error", "bad input")
    t = terminated(job_pod(kube, "fallback"))
    assert t["exitCode"] == 1 and t["message"].strip().endswith("last words")
    assert job_pod(kube, "fallback")["status"]["phase"] == "Failed"


def test_runtime_refusals_are_reported_like_a_kubelet(kube: KubeEnv) -> None:
    """A missing executable is a StartError (exit 128), an image the node cannot get is
    ErrImagePull / ImagePullBackOff, a missing Secret is CreateContainerConfigError."""
    kube.apply(job("noexec", container("main", ["/no/such/binary"])))
    assert has_condition(finished_job(kube, "noexec"), "Failed")
    t = terminated(job_pod(kube, "noexec"))
    assert t["exitCode"] == 128 and t["reason"] == "StartError"
    assert 'exec: "/no/such/binary"' in t["message"]

    kube.apply(job("noimage", {**container("main", ["true"]), "image": "registry.example.com/team/unknown:1"}))
    kube.apply(job("nosecret", container("main", ["true"], env=[
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}}])))

    def waiting(name: str) -> str | None:
        pods = kube.list("Pod", label_selector=f"job-name={name}")
        statuses = (pods[0].get("status") or {}).get("containerStatuses") if pods else None
        return ((statuses or [{}])[0].get("state") or {}).get("waiting", {}).get("reason") if statuses else None

    kube.wait_for(lambda: waiting("noimage") in ("ErrImagePull", "ImagePullBackOff"), timeout=30, message="ErrImagePull")
    kube.wait_for(lambda: waiting("nosecret") == "CreateContainerConfigError", timeout=30,
                  message="CreateContainerConfigError")
    assert job_pod(kube, "noimage")["status"]["phase"] == "Pending"


def test_security_context_is_enforced_in_the_container(kube: KubeEnv) -> None:
    code = (
        "import os, json\n"
        "out = {'uid': os.getuid(), 'gid': os.getgid(), 'groups': sorted(os.getgroups())}\n"
        "try:\n    open('/etc/x', 'w'); out['root'] = 'writable'\n"
        "except OSError as e:\n    out['root'] = e.strerror\n"
        "open('/scratch/f', 'w').write('ok'); out['volume'] = open('/scratch/f').read()\n"
        "out['hostname'] = open('/etc/hostname').read().strip()\n"
        "open('/dev/termination-log', 'w').write(json.dumps(out))\n"
    )
    spec = job("whoami", container("main", python(code), volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}]),
               volumes=[{"name": "scratch", "emptyDir": {}}])
    spec["spec"]["template"]["spec"]["securityContext"] = {**RESTRICTED_POD, "fsGroup": 2000}
    kube.apply(spec)
    assert has_condition(finished_job(kube, "whoami"), "Complete")
    pod = job_pod(kube, "whoami")
    out = json.loads(terminated(pod)["message"])
    assert (out["uid"], out["gid"]) == (1000, 1000) and 2000 in out["groups"]
    assert out["root"] == "Read-only file system"
    assert out["volume"] == "ok"
    assert out["hostname"] == pod["metadata"]["name"]


def test_pod_security_admission_refuses_a_privileged_pod(kube: KubeEnv) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "root"},
           "spec": {"containers": [{"name": "c", "image": IMAGE, "command": ["true"]}]}}
    with pytest.raises(ApiException) as err:
        kube.create(pod)
    assert err.value.status == 403 and "violates PodSecurity" in err.value.body


def test_crash_loop_logs_and_graceful_deletion(kube: KubeEnv) -> None:
    crash = python("import sys, time; print('starting', flush=True); time.sleep(0.2); sys.exit(2)")
    kube.apply({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "crash"},
        "spec": {"selector": {"matchLabels": {"app": "crash"}}, "template": {
            "metadata": {"labels": {"app": "crash"}},
            "spec": {"securityContext": RESTRICTED_POD, "containers": [container("main", crash)]}}},
    })

    def status() -> dict[str, Any] | None:
        pods = kube.list("Pod", label_selector="app=crash")
        cs = (pods[0].get("status") or {}).get("containerStatuses") if pods else None
        return cs[0] if cs else None

    st = kube.wait_for(lambda: (s := status()) and s["restartCount"] >= 1 and s, timeout=60, message="a restart")
    assert st["lastState"]["terminated"]["exitCode"] == 2
    kube.wait_for(lambda: ((status() or {}).get("state") or {}).get("waiting", {}).get("reason") == "CrashLoopBackOff",
                  timeout=30, message="CrashLoopBackOff")
    pod = kube.list("Pod", label_selector="app=crash")[0]["metadata"]["name"]
    assert "starting" in kubectl(kube, "logs", pod, "--previous").stdout  # through the apiserver
    started = time.monotonic()
    kube.delete("Deployment", "crash")
    kube.wait_for(lambda: not kube.list("Pod", label_selector="app=crash"), timeout=60, message="Pods gone")
    assert time.monotonic() - started < 30


def test_persistent_volume_claims_are_provisioned_and_keep_data(kube: KubeEnv) -> None:
    kube.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
    mount = {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]
    kube.apply(job("write", container("main", python("open('/data/x', 'w').write('kept')"), **mount), volumes=volumes))
    assert has_condition(finished_job(kube, "write"), "Complete")
    kube.apply(job("read", container("main", python(
        "open('/dev/termination-log', 'w').write(open('/data/x').read())"), **mount), volumes=volumes))
    assert has_condition(finished_job(kube, "read"), "Complete")
    assert terminated(job_pod(kube, "read"))["message"] == "kept"
    pvc = kube.get("PersistentVolumeClaim", "data")
    assert pvc is not None and pvc["status"]["phase"] == "Bound"


def test_exec_probes_run_as_the_containers_uid_and_report_their_output(kube: KubeEnv) -> None:
    """The node agent's exec probe enters a running container (its mount, UTS and network
    namespaces and root) as the container's numeric uid/gid and keeps the command's output:
    util-linux 2.38's nsenter refuses ``-S follow`` and, with the output discarded, every exec
    probe failed without a word (KubeRay's head and workers for Ray < 2.53 never got Ready).
    Runs the agent's own probe code against a process in namespaces of its own."""
    import asyncio
    import os
    import shutil
    from types import SimpleNamespace

    from tests.localcluster.nodeagent import PodWorker

    if os.geteuid() != 0 or shutil.which("nsenter") is None or shutil.which("unshare") is None:
        pytest.skip("needs root, nsenter and unshare (as the node agent does)")
    container = subprocess.Popen(["unshare", "--mount", "--uts", "--net", "sleep", "60"])
    try:
        worker = SimpleNamespace(procs={"main": container}, creds={"main": (1000, 100)})

        def probe(script: str) -> tuple[bool, str]:
            return asyncio.run(PodWorker._exec_probe(worker, {"name": "main"}, ["sh", "-c", script], 5.0))  # type: ignore[arg-type]

        kube.wait_for(lambda: probe("true")[0], timeout=10, interval=0.1, message="the probe to pass")
        assert probe('echo "$(id -u):$(id -g)"; ip -o link | wc -l') == (True, "1000:100\n1")  # its netns: lo only
        ok, output = probe("echo not healthy >&2; exit 3")
        assert not ok and output == "not healthy"
        assert probe("exit 4") == (False, "command ['sh', '-c', 'exit 4'] exited with 4")
    finally:
        container.kill()
        container.wait()
