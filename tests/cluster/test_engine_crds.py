"""The engines' real CRDs in the real kube-apiserver: they install, and it accepts our TrainJob
and RayJob and refuses the broken ones naming the same field our validator names.

Only the CRDs are installed, not Kubeflow Trainer's, KubeRay's or JobSet's controllers and
admission webhooks. "Accepted" here therefore means the CRD's structural schema and CEL rules
(x-kubernetes-validations) pass, with the server's pruning and defaulting; nothing runs, no
status is written, and the webhooks' checks (the runtime exists, runtimePatches name a
replicatedJob/container of the runtime, RayJob name length, ...) are not exercised.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.plugins.engine_crds import defaulted, engine_crd, requires_go, sample_runtime, validate
from tests.plugins.kube import KubeEnv
from tests.unit.test_engine_crds import BROKEN, broken, minimal_rayjob, minimal_trainjob

pytestmark = [pytest.mark.integration, requires_go]

Obj = dict[str, Any]


@pytest.fixture
def engines(kube: KubeEnv, engine_crds_installed: dict[str, str]) -> KubeEnv:
    """The test's namespace, with the engine CRDs and Trainer's torch-distributed runtime in the
    cluster."""
    try:
        kube.create(sample_runtime())
    except ApiException as e:
        if e.status != 409:
            raise
    return kube


def _json_body(e: ApiException) -> Obj:
    return json.loads(e.body)


def test_engine_crds_are_established(kube: KubeEnv, engine_crds_installed: dict[str, str]) -> None:
    for kind, name in engine_crds_installed.items():
        crd = kube.get("CustomResourceDefinition", name)
        assert crd is not None, name
        conds = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conds.get("Established") == "True" and conds.get("NamesAccepted") == "True", (kind, conds)
        assert crd["spec"]["names"]["kind"] == kind


def test_sample_runtime_is_stored(engines: KubeEnv) -> None:
    runtime = engines.get("ClusterTrainingRuntime", "torch-distributed")
    assert runtime is not None
    assert runtime["spec"]["mlPolicy"]["numNodes"] == 1
    assert runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["name"] == "node"


@pytest.mark.parametrize(("kind", "build"), [("TrainJob", minimal_trainjob), ("RayJob", minimal_rayjob)])
def test_minimal_objects_are_accepted_and_read_back(engines: KubeEnv, kind: str, build: Callable[[], Obj]) -> None:
    obj = build()
    assert validate(obj, engine_crd(kind)) == []
    created = engines.create(obj)  # POST; an error status raises, so this was a 201
    assert created["metadata"]["uid"]
    live = engines.get(kind, obj["metadata"]["name"], api_version=obj["apiVersion"])
    assert live is not None and live["metadata"]["uid"] == created["metadata"]["uid"]
    # The server pruned and defaulted exactly as our validator does.
    assert live["spec"] == defaulted(obj, engine_crd(kind))["spec"]


def test_created_with_status_201(engines: KubeEnv) -> None:
    """The plain client call, to see the status code itself."""
    obj = minimal_trainjob("status-code")
    path = engines.cluster.path("TrainJob", engines.namespace, api_version=obj["apiVersion"])
    api = engines.cluster.api
    m, url, h, b, pp = api.param_serialize(
        method="POST", resource_path=path, header_params={"Content-Type": "application/json",
                                                          "Accept": "application/json"},
        body=obj, auth_settings=["BearerToken"],
    )
    resp = api.call_api(m, url, header_params=h, body=b, post_params=pp, _request_timeout=30)
    resp.read()
    assert resp.status == 201


@pytest.mark.parametrize(("kind", "edit", "field", "word"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_objects_are_refused_naming_the_field(
    engines: KubeEnv, kind: str, edit: Callable[[Obj], None], field: str, word: str
) -> None:
    obj = broken(kind, edit)
    ours = validate(obj, engine_crd(kind))
    assert any(e.startswith(f"{field}:") for e in ours), ours
    with pytest.raises(ApiException) as exc:
        engines.create(obj)
    assert exc.value.status == 422, exc.value.body
    status = _json_body(exc.value)
    assert status["reason"] == "Invalid"
    causes = status["details"]["causes"]
    assert any(c.get("field") == field and word in c.get("message", "") for c in causes), causes
