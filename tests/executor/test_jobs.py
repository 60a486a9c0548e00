"""The local executor as Job controller + kubelet: Pods, status, env/volumes, backoff, deadline."""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

import pytest
from kubernetes.client import CoreV1Api

from tests.plugins.kube import KubeEnv, condition, has_condition

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _emulator_only(kube: KubeEnv) -> None:
    kube.require_emulator("these tests test the local executor itself")


PY = Path(sys.executable).name  # resolved in the executor's python_bin_dir (.venv/bin)


def job(
    name: str, command: list[str], *, args: list[str] | None = None, backoff: int = 0, **container: object
) -> dict:
    c: dict = {
        "name": "main",
        "image": "ghcr.io/example/dockyard-runtime:1.0",
        "command": command,
        **container,
    }
    if args is not None:
        c["args"] = args
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff,
            "template": {"spec": {"restartPolicy": "Never", "containers": [c]}},
        },
    }


def finished(kube: KubeEnv, name: str, timeout: float = 30.0) -> dict:
    return kube.wait_for_object(
        "Job", name, lambda j: has_condition(j, "Complete") or has_condition(j, "Failed"), timeout=timeout
    )


def pods_of(kube: KubeEnv, job_name: str) -> list[dict]:
    return kube.list("Pod", label_selector=f"job-name={job_name}")


TRAIN = r"""
import os, sys
uri, out = sys.argv[1], sys.argv[2]
data = open(uri.removeprefix("file://")).read()
print("training on", uri, "in", os.getcwd())
print("oops", file=sys.stderr)
with open(out, "w") as f:
    f.write(f"token={os.environ['TOKEN']} pod={os.environ['POD']} rows={len(data.splitlines())} "
            f"mode={os.environ['MODE']} home_ok={os.path.isdir(os.environ['HOME'])}")
"""


def test_job_runs_with_secret_env_configmap_volume_and_termination_message(kube: KubeEnv, executor) -> None:
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                 "data": {"token": base64.b64encode(b"s3cr3t").decode()}})  # fmt: skip
    kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "iris"},
                 "data": {"iris.csv": "a,b\n1,2\n3,4\n", "mode": "fast"}})  # fmt: skip
    j = job(
        "train",
        [PY, "-c", TRAIN],
        args=["file:///data/iris.csv", "/dev/termination-log"],
        env=[
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "iris", "key": "mode"}}},
        ],
        volumeMounts=[{"name": "data", "mountPath": "/data", "readOnly": True}],
    )
    j["spec"]["template"]["spec"]["volumes"] = [
        {"name": "data", "configMap": {"name": "iris", "items": [{"key": "iris.csv", "path": "iris.csv"}]}}
    ]
    created = kube.create(j)

    done = finished(kube, "train")
    st = done["status"]
    assert has_condition(done, "Complete"), st
    assert st["succeeded"] == 1 and not st.get("failed") and not st.get("active")
    assert st["startTime"] and st["completionTime"]

    [pod] = pods_of(kube, "train")
    name = pod["metadata"]["name"]
    assert name.startswith("train-") and len(name) == len("train-") + 5
    labels = pod["metadata"]["labels"]
    assert labels["job-name"] == labels["batch.kubernetes.io/job-name"] == "train"
    assert labels["controller-uid"] == created["metadata"]["uid"]
    [owner] = pod["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "Job",
        "train",
        created["metadata"]["uid"],
        True,
    )
    assert pod["status"]["phase"] == "Succeeded"
    term = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 0 and term["reason"] == "Completed"
    assert term["message"] == f"token=s3cr3t pod={name} rows=3 mode=fast home_ok=True"
    assert term["startedAt"] <= term["finishedAt"]

    out = kube.executor.logs(kube.namespace, name)
    assert "training on file:///" in out and "file:///data/" not in out  # rewritten to the scratch dir
    assert "oops" in out
    # served through the API too (kubectl logs), by the official client
    served = kube.wait_for(lambda: CoreV1Api(kube.api).read_namespaced_pod_log(name, kube.namespace))
    assert "oops" in served and "training on" in served


def test_failing_job_retries_up_to_backoff_limit(kube: KubeEnv, executor) -> None:
    code = "import sys; open(sys.argv[1], 'w').write('bad data'); sys.exit(3)"
    kube.create(job("fails", [PY, "-c", code, "/dev/termination-log"], backoff=1))

    done = finished(kube, "fails")
    cond = condition(done, "Failed")
    assert cond and cond["status"] == "True" and cond["reason"] == "BackoffLimitExceeded", done["status"]
    assert done["status"]["failed"] == 2 and not done["status"].get("succeeded")
    assert not done["status"].get("completionTime")

    pods = pods_of(kube, "fails")
    assert len(pods) == 2
    for p in pods:
        assert p["status"]["phase"] == "Failed"
        term = p["status"]["containerStatuses"][0]["state"]["terminated"]
        assert (term["exitCode"], term["reason"], term["message"]) == (3, "Error", "bad data")


def test_active_deadline_kills_the_process(kube: KubeEnv, executor) -> None:
    code = "import os, time; print(os.getpid(), flush=True); time.sleep(120)"
    j = job("slow", [PY, "-c", code], backoff=3)
    j["spec"]["activeDeadlineSeconds"] = 2
    kube.create(j)

    pod = kube.wait_for(lambda: pods_of(kube, "slow"), message="pod created")[0]
    pid = int(
        kube.wait_for(
            lambda: kube.executor.logs(kube.namespace, pod["metadata"]["name"]).strip(), message="pid"
        )
    )
    done = finished(kube, "slow", timeout=20)
    cond = condition(done, "Failed")
    assert cond and cond["reason"] == "DeadlineExceeded", done["status"]
    assert done["status"]["failed"] == 1
    kube.wait_for(lambda: not _alive(pid), timeout=10, message=f"process {pid} killed")
    kube.wait_for(lambda: not pods_of(kube, "slow"), timeout=10, message="active pod deleted")


def test_deleting_a_job_kills_its_process(kube: KubeEnv, executor) -> None:
    code = "import os, time; print(os.getpid(), flush=True); time.sleep(120)"
    kube.create(job("doomed", [PY, "-c", code]))
    pod = kube.wait_for(lambda: pods_of(kube, "doomed"), message="pod created")[0]
    pid = int(
        kube.wait_for(
            lambda: kube.executor.logs(kube.namespace, pod["metadata"]["name"]).strip(), message="pid"
        )
    )
    assert kube.get("Job", "doomed")["status"]["active"] == 1
    kube.delete("Job", "doomed")
    kube.wait_for(lambda: not _alive(pid), timeout=10, message=f"process {pid} killed")


def test_missing_secret_keeps_pod_pending_until_created(kube: KubeEnv, executor) -> None:
    code = "import os, sys; open(sys.argv[1], 'w').write(os.environ['A_X'] + os.environ['B'])"
    kube.create(job("waits", [PY, "-c", code, "/dev/termination-log"],
                    envFrom=[{"prefix": "A_", "secretRef": {"name": "late"}}],
                    env=[{"name": "B", "value": "-$(A_X)"}]))  # fmt: skip

    def waiting_reason() -> str | None:
        pods = pods_of(kube, "waits")
        statuses = (pods[0].get("status") or {}).get("containerStatuses") if pods else None
        return statuses and (statuses[0]["state"].get("waiting") or {}).get("reason")

    assert kube.wait_for(waiting_reason) == "CreateContainerConfigError"
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "late"},
                 "stringData": {"X": "1"}})  # fmt: skip
    done = finished(kube, "waits")
    assert has_condition(done, "Complete")
    [pod] = pods_of(kube, "waits")
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"] == "1-1"


def test_unknown_command_fails_to_start(kube: KubeEnv, executor) -> None:
    kube.create(job("nocmd", ["definitely-not-a-binary-xyz"]))
    done = finished(kube, "nocmd")
    assert has_condition(done, "Failed")
    term = pods_of(kube, "nocmd")[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 128 and term["reason"] == "StartError"
    assert "executable file not found" in term["message"]


def test_instant_mode(kube: KubeEnv) -> None:
    results = {"ok": (0, '{"accuracy": 0.93}'), "bad": (1, "gate failed")}
    seen: list[str] = []

    def hook(j: dict) -> tuple[int, str]:
        seen.append(j["metadata"]["name"])
        return results[j["metadata"]["name"]]

    kube.start_executor(mode="instant", instant_result=hook)
    # the command would fail if it ran
    kube.create(job("ok", ["false"]))
    kube.create(job("bad", ["true"], backoff=1))

    ok = finished(kube, "ok")
    assert has_condition(ok, "Complete") and ok["status"]["succeeded"] == 1
    term = pods_of(kube, "ok")[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term == {**term, "exitCode": 0, "reason": "Completed", "message": '{"accuracy": 0.93}'}

    bad = finished(kube, "bad")
    assert condition(bad, "Failed")["reason"] == "BackoffLimitExceeded"
    assert len(pods_of(kube, "bad")) == 2
    assert sorted(seen) == ["bad", "bad", "ok"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie not yet reaped counts as dead
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_executor_survives_dropped_watches_and_expired_history(kube: KubeEnv, instant_executor) -> None:
    kube.emulator.faults.drop_watches()
    kube.emulator.faults.expire_history()
    kube.create(job("after-drop", ["true"]))
    assert has_condition(finished(kube, "after-drop"), "Complete")
    kube.emulator.faults.fail_next("PATCH", r"/jobs/after-error/status", 500)
    kube.create(job("after-error", ["true"]))
    assert has_condition(finished(kube, "after-error"), "Complete")
