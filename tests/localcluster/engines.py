"""Build the training engines' controllers (Kubeflow Trainer, JobSet, KubeRay) and the Ray
virtualenv into the build cache.

``hack/engines/go.mod`` pins them as Go ``tool`` dependencies, with their hashes in its
committed ``go.sum``: ``github.com/kubeflow/trainer/v2/cmd/trainer-controller-manager`` at
v2.3.0 and ``sigs.k8s.io/jobset`` (its main package is the module root) at v0.12.0, the
versions whose CRDs ``hack/controlplane/crds`` pins. Same conventions as
:mod:`tests.localcluster.build`: ``CGO_ENABLED=0``, ``-mod=readonly`` (go checks every
download against go.sum, a missing hash is an error), a cache directory named by a hash of
go.mod, go.sum and the Go version, built in a temporary directory and moved into place, a
lock so concurrent callers build once.

One module for both: Trainer v2.3.0 requires ``sigs.k8s.io/jobset v0.12.0`` itself, so the
module graph holds exactly that JobSet; minimal version selection lifts JobSet's own
``k8s.io/*`` v0.36.0 to Trainer's v0.36.2 (patch releases of the same minor).

KubeRay's ``ray-operator`` (v1.6.2, the pin of hack/controlplane/crds) has a module of its own,
``hack/engines/kuberay``: in Trainer's module graph controller-runtime is lifted to v0.24.1 and
ray-operator's ``pkg/webhooks`` no longer builds. Same conventions, its own cache directory
(``kuberay-<hash>``) and lock.

The Ray image's software (``rayproject/ray:2.52.0`` in :mod:`tests.localcluster.images`) is a
virtualenv with ``ray[default]==2.52.0`` from PyPI (about 30 s, 343 MB), built by
:func:`build_ray_venv` into ``<cache>/ray-2.52.0-<hash>/venv``: outside ``/tmp``, which the
Pods of Dockyard mount an emptyDir over. A ``.pth`` file makes this repository's virtualenv
(Dockyard's runtime, MLflow, scikit-learn) importable after Ray's own packages, so a Ray
driver can log to MLflow as Dockyard's built-in trainer does; the hash covers the pin, the
Python version and that virtualenv's path (found from ``sys.prefix``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from tests.localcluster import build

MODULE = build.REPO / "hack" / "engines"
BINARIES = {
    "trainer-controller-manager": "github.com/kubeflow/trainer/v2/cmd/trainer-controller-manager",
    "jobset": "sigs.k8s.io/jobset",
}
KUBERAY_MODULE = MODULE / "kuberay"
KUBERAY_BINARIES = {"ray-operator": "github.com/ray-project/kuberay/ray-operator"}

RAY_VERSION = "2.52.0"
RAY_REQUIREMENT = f"ray[default]=={RAY_VERSION}"


def _module_hash(module: Path) -> str:
    h = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        h.update(name.encode())
        h.update((module / name).read_bytes())
    h.update(subprocess.run([build._go(), "version"], capture_output=True, text=True, check=True).stdout.encode())
    return h.hexdigest()[:12]


def _dir() -> Path:
    return build.cache_root() / f"engines-{_module_hash(MODULE)}"


def _kuberay_dir() -> Path:
    return build.cache_root() / f"kuberay-{_module_hash(KUBERAY_MODULE)}"


def _build_module(module: Path, out: Path, binaries: dict[str, str], lock_name: str, log: bool) -> build.BuildResult:
    """Build (or reuse) ``binaries`` (name -> main package) of ``module`` into ``out``."""
    import fcntl

    started = time.monotonic()
    build.cache_root().mkdir(parents=True, exist_ok=True)
    with open(build.cache_root() / lock_name, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if log and not all((out / n).is_file() for n in binaries):
            print(f"building {', '.join(binaries)} into {out}", file=sys.stderr, flush=True)
        built = build._go_build(
            out, list(binaries),
            [build._go(), "build", "-trimpath", "-ldflags", "-s -w", "-o", "{OUT}/", *binaries.values()],
            module, log,
        )
    return build.BuildResult(out, built, time.monotonic() - started)


def build_engines(*, log: bool = True) -> build.BuildResult:
    """Build (or reuse) ``trainer-controller-manager`` and ``jobset``; cold: about 2 min on 2
    cores with a warm module cache."""
    return _build_module(MODULE, _dir(), BINARIES, ".engines.lock", log)


def build_kuberay(*, log: bool = True) -> build.BuildResult:
    """Build (or reuse) KubeRay's ``ray-operator`` from hack/engines/kuberay; cold: about
    1.5 min on 2 cores with a warm module cache."""
    return _build_module(KUBERAY_MODULE, _kuberay_dir(), KUBERAY_BINARIES, ".kuberay.lock", log)


def _repo_site_packages() -> str:
    """This repository's virtualenv's site-packages (Dockyard's runtime and its dependencies),
    from the running interpreter: a clone at another path has its own."""
    return sysconfig.get_paths(vars={"base": sys.prefix, "platbase": sys.prefix})["purelib"]


def ray_venv_dir() -> Path:
    """Where the Ray virtualenv is (or will be) built; its ``bin`` goes first on the Ray image's
    PATH. Computed without building, so the image catalog can name it."""
    h = hashlib.sha256()
    for part in (RAY_REQUIREMENT, sys.version, sys.base_prefix, _repo_site_packages()):
        h.update(part.encode() + b"\0")
    return build.cache_root() / f"ray-{RAY_VERSION}-{h.hexdigest()[:12]}" / "venv"


def build_ray_venv(*, log: bool = True) -> build.BuildResult:
    """Build (or reuse) the Ray virtualenv: ``python -m venv`` from this interpreter's base
    Python, ``pip install ray[default]==2.52.0`` from PyPI, and a ``.pth`` file that appends
    this repository's site-packages. Built in place (the scripts' shebangs name the path) under
    a lock; ``ok``, written last, marks a finished build. Raises ``RuntimeError`` when pip fails (no PyPI)."""
    import fcntl

    started = time.monotonic()
    venv = ray_venv_dir()
    marker = venv.parent / "ok"
    venv.parent.parent.mkdir(parents=True, exist_ok=True)
    with open(build.cache_root() / ".ray-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file() and (venv / "bin" / "python").exists():
            return build.BuildResult(venv / "bin", False, time.monotonic() - started)
        if log:
            print(f"building a virtualenv with {RAY_REQUIREMENT} into {venv}", file=sys.stderr, flush=True)
        base_python = os.path.join(sys.base_prefix, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}")
        # Built at its final path (the scripts' shebangs name it), then the marker is written.
        shutil.rmtree(venv.parent, ignore_errors=True)
        venv.parent.mkdir(parents=True)
        try:
            subprocess.run([base_python, "-m", "venv", str(venv)], check=True, capture_output=True, text=True)
            proc = subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                 "--no-input", "--only-binary=:all:", RAY_REQUIREMENT],
                capture_output=True, text=True, timeout=900,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"pip install {RAY_REQUIREMENT} failed (exit {proc.returncode}):\n"
                                   f"{proc.stderr.strip()[-3000:]}")
            site = subprocess.run(
                [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                check=True, capture_output=True, text=True,
            ).stdout.strip()
            # Appended after Ray's own site-packages (Ray's pins win), as a site directory so its
            # own .pth files (the editable install of Dockyard) are read too.
            Path(site, "zz-dockyard-repo-venv.pth").write_text(
                f"import site; site.addsitedir({_repo_site_packages()!r})\n")
        except BaseException:
            shutil.rmtree(venv.parent, ignore_errors=True)
            raise
        marker.write_text(RAY_REQUIREMENT + "\n")
    return build.BuildResult(venv / "bin", True, time.monotonic() - started)


if __name__ == "__main__":
    for fn in (build_engines, build_kuberay, build_ray_venv):
        result = fn()
        print(f"{result.bin_dir} ({'built' if result.built else 'cached'} in {result.seconds:.1f} s)")
