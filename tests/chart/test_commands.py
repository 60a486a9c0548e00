"""Every command the chart puts into a container exists: a `dockyard` subcommand or an
installed console script, with options that command really has."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from dockyard import cli as dockyard_cli

from .chartlib import ROOT, SCENARIOS, render
from .podsecurity import pod_specs
from .test_dockerfile import last

DOCKYARD_SUBCOMMANDS = set(dockyard_cli.DELEGATED) | {"crds", "version"}
# Our images and the Dockerfile target that builds each.
OUR_IMAGES = {"dockyard-operator": "operator", "dockyard-runtime": "runtime"}


def _our_target(image: str) -> str | None:
    repo = re.split(r"[:@]", image.rsplit("/", 1)[-1])[0]
    return OUR_IMAGES.get(repo)


def containers(scenario: str):
    for obj in render(SCENARIOS[scenario]):
        for where, spec in pod_specs(obj):
            for c in spec.get("initContainers", []) + spec["containers"]:
                yield f"{where} {c['name']}", c


def argv_of(container: dict) -> list[str]:
    """The process argv: command + args, or the image ENTRYPOINT + args for our images."""
    if "command" in container:
        return container["command"] + container.get("args", [])
    target = _our_target(container["image"])
    assert target, f"{container['image']}: no command and not one of our images (entrypoint unknown)"
    return json.loads(last(target, "ENTRYPOINT")) + container.get("args", [])


# Python scripts the chart ships in a ConfigMap (mount path -> chart file).
CHART_SCRIPTS = {"/etc/mlflow-auth/bootstrap.py": ROOT / "charts" / "dockyard" / "files" / "mlflow-auth-bootstrap.py"}


def console_scripts() -> set[str]:
    return {ep.name for ep in entry_points(group="console_scripts")}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_container_command_exists(scenario: str) -> None:
    scripts = console_scripts()
    seen = 0
    for where, container in containers(scenario):
        argv = argv_of(container)
        if argv[0] == "python":  # one of the chart's own scripts, which must at least compile
            script = CHART_SCRIPTS[argv[1]]
            compile(script.read_text(), str(script), "exec")
            seen += 1
            continue
        assert argv[0] in scripts, f"{where}: {argv[0]} is not an installed console script"
        if argv[0] == "dockyard":
            assert argv[1] in DOCKYARD_SUBCOMMANDS, f"{where}: dockyard {argv[1]} does not exist"
        seen += 1
    assert seen >= 1


def test_mlflow_server_options_exist() -> None:
    from mlflow.cli import cli as mlflow_cli

    mlflow_containers = [c for _, c in containers("default") if c.get("command") == ["mlflow"]]
    mlflow_containers += [c for _, c in containers("everything-else") if c.get("command") == ["mlflow"]]
    assert len(mlflow_containers) == 2
    for container in mlflow_containers:
        sub, *options = container["args"]
        command = mlflow_cli.commands[sub]
        known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
        for option in options:
            if option.startswith("--"):
                assert option.split("=", 1)[0] in known, f"mlflow {sub} has no option {option}"


def test_operator_options_exist() -> None:
    if importlib.util.find_spec("dockyard.operator_main") is None:
        pytest.skip("dockyard.operator_main is not written yet")
    dockyard = Path(sys.executable).parent / "dockyard"
    help_text = subprocess.run(
        [str(dockyard), "operator", "--help"], capture_output=True, text=True, timeout=120
    ).stdout
    for scenario in ("default", "namespaced", "everything-else"):
        for _, container in containers(scenario):
            argv = argv_of(container)
            if argv[:2] != ["dockyard", "operator"]:
                continue
            for option in argv[2:]:
                assert option.split("=", 1)[0] in help_text, f"dockyard operator has no option {option}"


def test_operator_env_is_read_by_the_operator() -> None:
    """Every DOCKYARD_* variable the chart sets is read somewhere in the operator package."""
    source = "\n".join(p.read_text() for p in (ROOT / "operator" / "dockyard").rglob("*.py"))
    for scenario in SCENARIOS:
        for where, container in containers(scenario):
            for env in container.get("env", []):
                if env["name"].startswith("DOCKYARD_"):
                    assert f'"{env["name"]}"' in source, f"{where}: {env['name']} is not read by the operator"
