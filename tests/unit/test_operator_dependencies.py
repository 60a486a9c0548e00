"""The operator needs only the base dependencies: MLflow is reached over REST (no mlflow
package), so the operator image does not carry MLflow's dependency tree."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Importing the operator and building its handlers with the runtime-only packages (and the
# tests' synchronous `kubernetes` client: the operator uses kubernetes_asyncio) made
# unimportable: any import of them fails the subprocess.
_PROBE = """
import importlib.abc, sys
BLOCKED = {"mlflow", "sklearn", "pandas", "pyarrow", "mlserver", "seldon_core", "kubernetes"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} imported by the operator")
sys.meta_path.insert(0, Block())
from dockyard import cli, operator_main
from dockyard.config import OperatorConfig
operator_main.build_registry({}, OperatorConfig.from_env())
print("ok")
"""


def test_operator_runs_without_the_runtime_packages() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_base_dependencies_leave_mlflow_to_the_runtime_extra() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {d.split(">")[0].split("=")[0].split("<")[0].strip() for d in project["dependencies"]}
    assert not {"mlflow", "mlflow-skinny"} & base, base
    assert any(d.startswith("mlflow") for d in project["optional-dependencies"]["runtime"])
