"""The Argo CD health check (hack/argocd-health.lua), run by a real Lua interpreter."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from .chartlib import ROOT

SCRIPT = ROOT / "hack" / "argocd-health.lua"
LUA = next((shutil.which(n) for n in ("lua5.4", "lua5.3", "lua", "luajit") if shutil.which(n)), None)


def to_lua(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nil"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string literal is a valid Lua string literal here
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    return "{" + ", ".join(f"[{json.dumps(k)}] = {to_lua(v)}" for k, v in value.items()) + "}"


def health(obj: dict) -> tuple[str, str]:
    if LUA is None:
        pytest.skip("no Lua interpreter (apt-get install lua5.4)")
    harness = (
        f"obj = {to_lua(obj)}\n"
        f"local check = assert(loadfile({json.dumps(str(SCRIPT))}))\n"
        "local hs = check()\n"
        "io.write(hs.status, '\\t', hs.message or '')\n"
    )
    result = subprocess.run([LUA, "-"], input=harness, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    status, _, message = result.stdout.partition("\t")
    return status, message


def cr(kind: str, status: dict | None, generation: int = 2) -> dict:
    obj = {
        "apiVersion": "dockyard.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "generation": generation},
    }
    if status is not None:
        obj["status"] = status
    return obj


def ready(status: str, reason: str = "Reconciled", message: str = "") -> list[dict]:
    return [{"type": "Ready", "status": status, "reason": reason, "message": message}]


@pytest.mark.parametrize("kind", ["Dataset", "TrainingRun", "ModelDeployment"])
@pytest.mark.parametrize(
    "status, expected",
    [
        (None, "Progressing"),
        ({"observedGeneration": 1, "phase": "Ready", "conditions": ready("True")}, "Progressing"),  # stale
        (
            {"observedGeneration": 2, "phase": "Ready", "conditions": ready("True", message="serving v3")},
            "Healthy",
        ),
        (
            {"observedGeneration": 2, "phase": "Running", "conditions": ready("False", "Running")},
            "Progressing",
        ),
        ({"observedGeneration": 2, "phase": "Pending", "conditions": ready("Unknown")}, "Progressing"),
        (
            {"observedGeneration": 2, "phase": "Failed", "conditions": ready("False", "JobFailed", "boom")},
            "Degraded",
        ),
        (
            {"observedGeneration": 2, "phase": "Invalid", "conditions": ready("False", "InvalidSpec")},
            "Degraded",
        ),
        (
            {"observedGeneration": 2, "phase": "Rejected", "conditions": ready("False", "QualityGateFailed")},
            "Degraded",
        ),
        (
            {
                "observedGeneration": 2,
                "phase": "Degraded",
                "conditions": ready("False", "VariantUnavailable"),
            },
            "Degraded",
        ),
        ({"observedGeneration": 2, "conditions": ready("False", "InvalidSpec", "bad")}, "Degraded"),
        ({"observedGeneration": 2}, "Progressing"),
    ],
)
def test_health(kind: str, status: dict | None, expected: str) -> None:
    assert health(cr(kind, status))[0] == expected


def test_message_comes_from_the_ready_condition() -> None:
    status = {
        "observedGeneration": 2,
        "phase": "Failed",
        "conditions": ready("False", "JobFailed", "training Job failed"),
    }
    assert health(cr("TrainingRun", status)) == ("Degraded", "training Job failed")
    assert health(cr("Dataset", {"observedGeneration": 2, "phase": "Validating"})) == (
        "Progressing",
        "Phase: Validating",
    )


def test_observability_doc_argocd_cm_carries_the_script_for_the_three_kinds() -> None:
    import yaml

    doc = (ROOT / "docs" / "observability.md").read_text()
    section = doc.split("<!-- section: observability -->")[1].split("<!-- /section: observability -->")[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```yaml\n")[1:]]
    configmaps = [
        d
        for d in (yaml.safe_load(b) for b in blocks)
        if d and d.get("metadata", {}).get("name") == "argocd-cm"
    ]
    assert len(configmaps) == 1, "docs/observability.md has no argocd-cm snippet"
    lines = SCRIPT.read_text().splitlines()
    code = "\n".join(lines[next(i for i, line in enumerate(lines) if not line.startswith("--")) :]).strip()
    for kind in ("Dataset", "TrainingRun", "ModelDeployment"):
        assert configmaps[0]["data"][f"resource.customizations.health.dockyard.dev_{kind}"].strip() == code


def test_a_rollout_in_flight_is_progressing_and_a_rollback_is_degraded() -> None:
    serving = {"phase": "Ready", "observedGeneration": 2, "conditions": ready("True")}
    rolling = {**serving, "rollout": {"phase": "Progressing", "summary": "2/3 25%", "message": "step 2/3"}}
    assert health(cr("ModelDeployment", rolling)) == ("Progressing", "Rollout Progressing 2/3 25%: step 2/3")
    back = {**serving, "rollout": {"phase": "RolledBack", "message": "success-rate = 0.7 below min 0.99"}}
    assert health(cr("ModelDeployment", back)) == ("Degraded", "Rollout RolledBack: success-rate = 0.7 below min 0.99")
    done = {**serving, "rollout": {"phase": "Promoted", "message": "promoted"}}
    assert health(cr("ModelDeployment", done))[0] == "Healthy"
