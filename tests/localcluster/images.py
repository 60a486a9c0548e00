"""What the node agent runs for an image reference.

Images are never pulled: there is no registry and no container engine here. Every container
runs on the host's filesystem (an overlay per container, see :mod:`tests.localcluster.shim`),
and this table gives each image we know the configuration its real build has: entrypoint,
default command, environment (notably ``PATH``, which points at this repository's virtualenv
where the real image has ``/opt/venv``), working directory and user. An image that is not
in the table fails the way an unreachable registry does: ``ErrImagePull``, then
``ImagePullBackOff``.

``rayproject/ray:2.52.0`` is the Ray virtualenv :func:`tests.localcluster.engines.build_ray_venv`
builds in the build cache (first on ``PATH``; it sees this repository's virtualenv after its
own packages), with the real image's ``ray`` user (uid 1000) and ``/home/ray`` replaced by
``/tmp``. The agent does not build it: the fixture that needs it does, before any Pod starts.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = str(Path(sys.executable).parent)
# What the Python images' "filesystem" needs from the host: the virtualenv and the repository
# (the editable install points into it). The Ray virtualenv lives in the build cache, outside
# the directories the shim empties, so it needs no mount of its own.
SOFTWARE = (sys.prefix, str(Path(__file__).resolve().parents[2]))
STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ImageConfig:
    pattern: str  # regex on the reference without registry host (e.g. "dockyard-runtime:0.1.0")
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str = ""
    user: tuple[int, int] | None = None  # the image's USER (uid, gid); None = root


_PYTHON_ENV = {
    "PATH": f"{VENV_BIN}:{STD_PATH}",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
}


def _ray_bin() -> str:
    from tests.localcluster.engines import ray_venv_dir

    return str(ray_venv_dir() / "bin")


CATALOG: tuple[ImageConfig, ...] = (
    # operator/Dockerfile, target runtime
    ImageConfig(
        r"(^|/)dockyard-runtime([:@]|$)",
        entrypoint=("dockyard",),
        cmd=("--help",),
        env={**_PYTHON_ENV, "MLSERVER_PARALLEL_WORKERS": "0"},
        working_dir="/tmp",
        user=(1000, 1000),
    ),
    # operator/Dockerfile, target operator
    ImageConfig(
        r"(^|/)dockyard-operator([:@]|$)",
        entrypoint=("dockyard",),
        cmd=("operator", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"),
        env=_PYTHON_ENV,
        working_dir="/tmp",
        user=(1000, 1000),
    ),
    # The builtin router's nginx (Debian's nginx-light stands in for the Alpine build).
    ImageConfig(
        r"(^|/)nginx(-unprivileged)?([:@]|$)",
        cmd=("nginx", "-g", "daemon off;"),
        env={"PATH": STD_PATH},
        user=(101, 101),
    ),
    # The chart's embedded MLflow server.
    ImageConfig(r"(^|/)mlflow([:@]|$)", env={**_PYTHON_ENV, "HOME": "/tmp"}),
    # Bring-your-own trainers in tests use a plain Python image.
    ImageConfig(r"(^|/)python([:@]|$)", cmd=("python3",), env={**_PYTHON_ENV, "HOME": "/root"}),
    # KubeRay's Pods (RayJob/RayCluster): Ray 2.52.0, the version the Ray venv pins.
    ImageConfig(
        r"(^|/)rayproject/ray:2\.52\.0([-@]|$)",
        env={**_PYTHON_ENV, "PATH": f"{_ray_bin()}:{VENV_BIN}:{STD_PATH}"},
        working_dir="/tmp",
        user=(1000, 100),  # the real image's USER ray (uid 1000, gid 100, "users")
    ),
)


def _strip_registry(ref: str) -> str:
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return rest
    return ref


def lookup(ref: str) -> ImageConfig | None:
    name = _strip_registry(ref)
    for cfg in CATALOG:
        if re.search(cfg.pattern, name):
            return cfg
    return None
