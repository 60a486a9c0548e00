"""hack/ scripts: the kind demo passes shellcheck and does the nine steps."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from .chartlib import ROOT

DEMO = ROOT / "hack" / "kind-demo.sh"


def test_kind_demo_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck; .ci/run installs it)")
    result = subprocess.run([shellcheck, "--severity=style", "-x", str(DEMO)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kind_demo_is_strict_and_executable() -> None:
    text = DEMO.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert DEMO.stat().st_mode & 0o111


def test_kind_demo_does_the_nine_steps_in_order() -> None:
    text = DEMO.read_text()
    steps = [
        r"kind create cluster",
        r"docker build [^\n]*--target operator",
        r"docker build [^\n]*--target runtime",
        r"kind load docker-image",
        r"helm upgrade --install",
        r"apply -f [^\n]*manifests/examples/",
        r"--for=jsonpath='\{\.status\.phase\}'=Succeeded",
        r"set_registered_model_alias\([^\n]*\"champion\"",
        r"--for=condition=Ready",
        r"port-forward [^\n]*svc/",
        r"/v2/models/\$\{MODEL\}/infer",
        r"x-dockyard-variant",
        r"observed split",
    ]
    position = 0
    for step in steps:
        match = re.compile(step).search(text, position)
        assert match, f"step not found (in order): {step}"
        position = match.end()
    assert 'REQUESTS="${REQUESTS:-200}"' in text


def test_kind_demo_syntax() -> None:
    result = subprocess.run(["bash", "-n", str(DEMO)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


STUBS = {
    # kind: no existing cluster; create and load succeed.
    "kind": 'echo "kind $*" >>"$CALLS"\n[ "$1" = get ] && exit 0\nexit 0\n',
    "docker": 'echo "docker $*" >>"$CALLS"\n',
    "helm": 'echo "helm $*" >>"$CALLS"\n',
    "kubectl": r"""echo "kubectl $*" >>"$CALLS"
case "$*" in
  *"get trainingrun/iris-rf -o jsonpath={.status.modelVersion}"*) printf 3 ;;
  *"get modeldeployment/iris -o jsonpath={.status.endpoint}"*) printf 'http://iris.default.svc.cluster.local' ;;
  *port-forward*) exec sleep 30 ;;
esac
exit 0
""",
    # curl: the router answers; every 5th user gets "challenger" (80/20).
    "curl": r"""echo "curl $*" >>"$CALLS"
user=""; prev=""
for arg in "$@"; do
  if [ "$prev" = "-H" ]; then case "$arg" in X-User-Id:*) user="${arg##*-}" ;; esac; fi
  prev="$arg"
done
case " $* " in
  *" -D - "*)
    variant=champion
    [ $((user % 5)) -eq 0 ] && variant=challenger
    printf 'HTTP/1.1 200 OK\r\nx-dockyard-variant: %s\r\nX-Dockyard-Model-Version: 3\r\n\r\n' "$variant" ;;
esac
exit 0
""",
}


def test_kind_demo_runs_the_steps_against_stub_tools(tmp_path) -> None:
    """The script end to end with docker/kind/helm/kubectl/curl replaced by recording stubs:
    the calls come in order, the router Service is taken from status.endpoint, and the
    printed split counts the X-Dockyard-Variant response headers."""
    import os
    import shutil as sh

    repo = tmp_path / "repo"
    (repo / "hack").mkdir(parents=True)
    (repo / "charts" / "dockyard").mkdir(parents=True)
    (repo / "manifests" / "examples").mkdir(parents=True)
    sh.copy2(DEMO, repo / "hack" / "kind-demo.sh")
    sh.copy2(ROOT / "charts" / "dockyard" / "Chart.yaml", repo / "charts" / "dockyard" / "Chart.yaml")
    (repo / "manifests" / "examples" / "00-iris-data.yaml").write_text("# stub\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STUBS.items():
        stub = bin_dir / name
        stub.write_text("#!/usr/bin/env bash\n" + body)
        stub.chmod(0o755)
    calls = tmp_path / "calls.log"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls), "REQUESTS": "50"}
    result = subprocess.run(
        ["bash", str(repo / "hack" / "kind-demo.sh")], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = calls.read_text()
    for expected in [
        "kind create cluster --name dockyard",
        "docker build -f",
        "--target operator -t ghcr.io/dockyard-dev/dockyard-operator:0.1.0",
        "--target runtime -t ghcr.io/dockyard-dev/dockyard-runtime:0.1.0",
        "kind load docker-image --name dockyard ghcr.io/dockyard-dev/dockyard-operator:0.1.0",
        "helm upgrade --install dockyard",
        "apply -f",
        "wait --for=jsonpath={.status.phase}=Succeeded trainingrun/iris-rf",
        "exec deploy/dockyard-mlflow -c mlflow -- python -c",
        "wait --for=condition=Ready modeldeployment/iris",
        "port-forward svc/iris 8088:80",
        "/v2/models/iris-classifier/infer",
    ]:
        assert expected in log, expected
    assert log.count("X-User-Id: demo-user-") == 50
    out = result.stdout
    assert re.search(r"champion\s+40 requests\s+80\.0%", out), out[-1500:]
    assert re.search(r"challenger\s+10 requests\s+20\.0%", out), out[-1500:]
    assert re.search(r"failed\s+0 requests", out)
