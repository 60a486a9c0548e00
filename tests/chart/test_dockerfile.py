"""Static checks of operator/Dockerfile (no Docker engine on CI)."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field

import pytest

from .chartlib import ROOT, SCENARIOS, find, render

DOCKERFILE = ROOT / "operator" / "Dockerfile"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_dockerfile(text: str) -> dict[str, Stage]:
    """Stages by name (or index) with their instructions; line continuations joined."""
    joined = re.sub(r"\\\n", " ", text)
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instr, _, rest = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", rest.strip(), re.IGNORECASE)
            assert m, line
            current = Stage(name=m.group(2) or str(len(stages)), base=m.group(1))
            stages[current.name] = current
        else:
            assert current is not None, f"instruction before FROM: {line}"
            current.instructions.append((instr, rest.strip()))
    return stages


STAGES = parse_dockerfile(DOCKERFILE.read_text())


def chain(name: str) -> list[Stage]:
    """The stage and its ancestors, root first."""
    out = []
    while name in STAGES:
        out.insert(0, STAGES[name])
        name = STAGES[name].base
    return out


def last(name: str, instr: str) -> str | None:
    found = [rest for stage in chain(name) for i, rest in stage.instructions if i == instr]
    return found[-1] if found else None


def copied_from(name: str) -> list[str]:
    return [m.group(1) for _, rest in STAGES[name].instructions if (m := re.search(r"--from=(\S+)", rest))]


def runs(name: str) -> str:
    """Every RUN of a final stage, including the build stages it copies from."""
    stages = [s for n in [name, *copied_from(name)] for s in chain(n)]
    return "\n".join(rest for s in stages for i, rest in s.instructions if i == "RUN")


def test_targets_operator_and_runtime_exist() -> None:
    assert {"operator", "runtime"} <= set(STAGES)


def test_every_external_base_is_python_312_slim() -> None:
    external = {s.base for s in STAGES.values() if s.base not in STAGES}
    assert external == {"python:3.12-slim"}


@pytest.mark.parametrize("target", ["operator", "runtime"])
def test_target_runs_as_numeric_non_root_user_with_dockyard_entrypoint(target: str) -> None:
    user = last(target, "USER")
    assert user, f"{target}: no USER"
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{target}: USER {user} must be a numeric non-root uid"
    assert uid == "1000"
    entrypoint = last(target, "ENTRYPOINT")
    assert entrypoint and json.loads(entrypoint) == ["dockyard"], entrypoint


def test_each_image_installs_only_its_own_extras() -> None:
    operator_runs = runs("operator")
    runtime_runs = runs("runtime")
    assert re.search(r"pip install[^\n]*\s\.(\s|$)", operator_runs), operator_runs
    assert "[runtime]" not in operator_runs and "[seldon]" not in operator_runs
    assert '".[runtime]"' in runtime_runs or "'.[runtime]'" in runtime_runs
    assert "googleapis-common-protos<1.70" in runtime_runs
    assert "seldon" not in runtime_runs.lower(), "seldon-core (BSL 1.1) must stay opt-in"
    # The pin in the Dockerfile is the one of the runtime extra.
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "googleapis-common-protos<1.70" in extras["runtime"]


def test_copied_sources_exist_and_pass_dockerignore() -> None:
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[0] == "*" or "*" in ignore  # deny by default
    for stage in STAGES.values():
        for instr, rest in stage.instructions:
            if instr == "COPY" and "--from=" not in rest:
                *sources, _dest = rest.split()
                for src in sources:
                    assert (ROOT / src).exists(), src
                    assert f"!{src.rstrip('/')}" in [i.rstrip("/") for i in ignore], (
                        f"{src} is excluded by .dockerignore"
                    )


def test_chart_images_are_the_ones_the_dockerfile_builds() -> None:
    """Default tags are the package version; the operator container relies on ENTRYPOINT."""
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart_yaml = (ROOT / "charts" / "dockyard" / "Chart.yaml").read_text()
    assert re.search(rf'^appVersion: "?{re.escape(version)}"?$', chart_yaml, re.M)
    objects = render(SCENARIOS["default"])
    dep = [d for d in find(objects, "Deployment") if d["metadata"]["name"] == "dockyard-operator"][0]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"ghcr.io/dockyard-dev/dockyard-operator:{version}"
    demo = (ROOT / "hack" / "kind-demo.sh").read_text()
    for target in ("operator", "runtime"):
        assert f"ghcr.io/dockyard-dev/dockyard-{target}:" in demo
        assert f"--target {target}" in demo
