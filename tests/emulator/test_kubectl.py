"""The real kubectl binary against the emulator."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from .conftest import REPO, TR_PATH, Client, example, wait_for

KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not on PATH")
EXAMPLES = str(REPO / "manifests" / "examples")


@pytest.fixture
def kubectl(kubeconfig, tmp_path):
    def run(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        cmd = [KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache"), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    run.base = [KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache")]
    return run


def set_ready(k: Client, status: str = "True") -> None:
    r = k.patch(
        f"{TR_PATH}/iris-rf/status",
        {
            "status": {
                "phase": "Succeeded",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": status,
                        "reason": "Done",
                        "message": "done",
                        "lastTransitionTime": "2025-01-01T00:00:00Z",
                    }
                ],
            }
        },
    )
    assert r.status_code == 200, r.text


def test_server_side_apply_get_wait_delete(kubectl, k, emu):
    out = kubectl("apply", "--server-side", "-f", EXAMPLES).stdout
    for name in (
        "dataset.dockyard.dev/iris",
        "trainingrun.dockyard.dev/iris-rf",
        "modeldeployment.dockyard.dev/iris",
    ):
        assert f"{name} serverside-applied" in out
    rv = k.get(f"{TR_PATH}/iris-rf").json()["metadata"]["resourceVersion"]
    kubectl("apply", "--server-side", "-f", EXAMPLES)  # idempotent: no change, no new resourceVersion
    assert k.get(f"{TR_PATH}/iris-rf").json()["metadata"]["resourceVersion"] == rv
    mf = k.get(f"{TR_PATH}/iris-rf").json()["metadata"]["managedFields"]
    assert [(m["manager"], m["operation"]) for m in mf] == [("kubectl", "Apply")]

    table = kubectl("get", "dockyard").stdout
    assert "trainingrun.dockyard.dev/iris-rf" in table and "dataset.dockyard.dev/iris" in table
    header = next(line for line in table.splitlines() if "iris-classifier" in line or "MODEL" in line)
    assert header.split()[:2] == ["NAME", "PHASE"]
    tr_table = kubectl("get", "tr").stdout.splitlines()
    assert tr_table[0].split() == ["NAME", "PHASE", "MODEL", "VERSION", "DATASET", "TRIALS", "READY", "AGE"]
    assert tr_table[1].split()[:3] == ["iris-rf", "iris-classifier", "iris"]

    doc = yaml.safe_load(kubectl("get", "tr", "-o", "yaml").stdout)
    assert doc["items"][0]["spec"]["modelName"] == "iris-classifier"
    assert doc["items"][0]["metadata"]["generation"] == 1

    # kubectl wait: not ready yet -> times out; then a status patch makes it succeed
    assert kubectl("wait", "--for=condition=Ready", "tr/iris-rf", "--timeout=1s", check=False).returncode != 0
    watches = emu.counters.get("watch", "trainingruns")
    waiter = subprocess.Popen(
        [*kubectl.base, "wait", "--for=condition=Ready", "tr/iris-rf", "--timeout=20s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # kubectl is watching the object before the condition appears
        wait_for(lambda: emu.counters.get("watch", "trainingruns") > watches, timeout=10)
        assert waiter.poll() is None
        set_ready(k)
        out, err = waiter.communicate(timeout=25)
    finally:
        if waiter.poll() is None:
            waiter.kill()
    assert waiter.returncode == 0, err
    assert "condition met" in out
    assert kubectl("wait", "--for=condition=Ready", "tr/iris-rf", "--timeout=5s").returncode == 0
    assert "True" in kubectl("get", "tr", "iris-rf").stdout.splitlines()[1].split()

    out = kubectl("delete", "-f", EXAMPLES).stdout
    assert 'trainingrun.dockyard.dev "iris-rf" deleted' in out
    assert kubectl("get", "dockyard").stderr.strip().startswith("No resources found")


def test_invalid_object_error_names_the_field(kubectl, tmp_path):
    bad = example("TrainingRun")
    bad["spec"]["modelName"] = "not a valid name!"
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(bad))
    proc = kubectl("apply", "--server-side", "-f", str(f), check=False)
    assert proc.returncode != 0
    # kubectl rebuilds the message from the Status details, as with a real API server
    assert (
        'The TrainingRun "iris-rf" is invalid: spec.modelName: Invalid value: "not a valid name!": '
        "spec.modelName in body should match" in proc.stderr
    )


def test_client_side_apply_create_and_builtin_kinds(kubectl, k, emu, tmp_path):
    f = tmp_path / "cm.yaml"
    f.write_text(
        yaml.safe_dump(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "1"}}
        )
    )
    assert "configmap/cfg created" in kubectl("apply", "-f", str(f)).stdout
    f.write_text(
        yaml.safe_dump(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"a": "2"}}
        )
    )
    assert "configmap/cfg configured" in kubectl("apply", "-f", str(f)).stdout
    assert k.get("/api/v1/namespaces/default/configmaps/cfg").json()["data"] == {"a": "2"}
    assert kubectl("get", "cm", "cfg", "-o", "jsonpath={.data.a}").stdout == "2"
    f.write_text(
        yaml.safe_dump_all(
            [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-x"}},
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "web", "namespace": "team-x"},
                    "spec": {
                        "selector": {"matchLabels": {"app": "web"}},
                        "template": {
                            "metadata": {"labels": {"app": "web"}},
                            "spec": {"containers": [{"name": "web", "image": "nginx"}]},
                        },
                    },
                },
            ]
        )
    )
    kubectl("create", "-f", str(f))
    lines = kubectl("get", "deploy", "-A").stdout.splitlines()
    assert lines[0].split() == ["NAMESPACE", "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert lines[1].split()[:3] == ["team-x", "web", "0/1"]
    kubectl("delete", "namespace", "team-x")  # waits until the namespace is gone
    assert kubectl("get", "ns", "team-x", check=False).returncode != 0
    # kubectl logs reads the pods/log subresource (filled by whoever plays kubelet)
    f.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "main", "image": "python:3.12"}]},
            }
        )
    )
    kubectl("create", "-f", str(f))
    emu.set_pod_log("default", "p", "main", "hello from the pod\n")
    assert kubectl("logs", "p").stdout == "hello from the pod\n"
    # typed imperative commands send protobuf bodies, which the emulator does not decode
    proc = kubectl("create", "namespace", "team-y", check=False)
    assert proc.returncode != 0 and "protobuf" in proc.stderr
