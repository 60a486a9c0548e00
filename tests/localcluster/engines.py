"""Build the training engines' controllers (Kubeflow Trainer, JobSet) into the build cache.

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
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

from tests.localcluster import build

MODULE = build.REPO / "hack" / "engines"
BINARIES = {
    "trainer-controller-manager": "github.com/kubeflow/trainer/v2/cmd/trainer-controller-manager",
    "jobset": "sigs.k8s.io/jobset",
}


def _dir() -> Path:
    h = hashlib.sha256()
    for name in ("go.mod", "go.sum"):
        h.update(name.encode())
        h.update((MODULE / name).read_bytes())
    h.update(subprocess.run([build._go(), "version"], capture_output=True, text=True, check=True).stdout.encode())
    return build.cache_root() / f"engines-{h.hexdigest()[:12]}"


def build_engines(*, log: bool = True) -> build.BuildResult:
    """Build (or reuse) ``trainer-controller-manager`` and ``jobset``; cold: about 2 min on 2
    cores with a warm module cache."""
    import fcntl

    started = time.monotonic()
    build.cache_root().mkdir(parents=True, exist_ok=True)
    out = _dir()
    with open(build.cache_root() / ".engines.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if log and not all((out / n).is_file() for n in BINARIES):
            print(f"building {', '.join(BINARIES)} into {out}", file=sys.stderr, flush=True)
        built = build._go_build(
            out, list(BINARIES),
            [build._go(), "build", "-trimpath", "-ldflags", "-s -w", "-o", "{OUT}/", *BINARIES.values()],
            MODULE, log,
        )
    return build.BuildResult(out, built, time.monotonic() - started)


if __name__ == "__main__":
    result = build_engines()
    print(f"{result.bin_dir} ({'built' if result.built else 'cached'} in {result.seconds:.1f} s)")
