"""The `kube` fixture's helpers work the same on the emulator and on a real cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.plugins.kube import REPO, KubeEnv

pytestmark = pytest.mark.integration


def test_helpers_round_trip(kube: KubeEnv) -> None:
    assert kube.get("Namespace", kube.namespace)["metadata"]["name"] == kube.namespace
    cm = kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "b"}},
                      "data": {"k": "v"}})  # fmt: skip
    assert cm["metadata"]["namespace"] == kube.namespace
    assert [o["metadata"]["name"] for o in kube.list("ConfigMap", label_selector="a=b")] == ["c"]
    assert kube.patch("ConfigMap", "c", {"data": {"k": "w"}})["data"] == {"k": "w"}
    kube.delete("ConfigMap", "c")
    kube.wait_for_deleted("ConfigMap", "c")
    assert kube.get("ConfigMap", "c") is None
    assert kube.delete("ConfigMap", "c") is None  # missing_ok


def test_apply_file_examples_and_status(kube: KubeEnv) -> None:
    examples = Path(REPO / "manifests" / "examples")
    applied = kube.apply_file(examples / "01-dataset.yaml")
    assert [o["kind"] for o in applied] == ["Dataset"]
    ds = kube.get("Dataset", "iris")
    assert ds["metadata"]["namespace"] == kube.namespace and ds["metadata"]["generation"] == 1
    # a discovered (not built-in) kind
    assert kube.cluster.resource("HTTPRoute")[1] == "httproutes"
    kube.patch_status("Dataset", "iris", {"observedGeneration": 1})
    assert kube.wait_for_object(
        "Dataset", "iris", lambda d: (d.get("status") or {}).get("observedGeneration") == 1
    )
