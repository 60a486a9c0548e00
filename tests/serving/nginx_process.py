"""Run the builtin router's nginx config as a real, unprivileged-style local process.

Used by the serving tests and by bench/router.py. The config is rendered by the production
renderer (:func:`dockyard.routers.builtin.render_nginx_config`) with 127.0.0.1 upstreams and
pid/temp paths inside the work directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import requests

from dockyard.api.modeldeployment import ModelDeploymentSpec
from dockyard.routers.builtin import render_nginx_config
from tests.runtime.helpers import free_port

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)


class NginxRouter:
    """nginx in the foreground (`-g 'daemon off;'`) on a free port; `.url`, `.stop()`."""

    def __init__(
        self,
        spec: ModelDeploymentSpec,
        upstreams: Mapping[str, str],
        versions: Mapping[str, str],
        workdir: Path,
        *,
        access_log: bool = False,
    ) -> None:
        if NGINX is None:
            raise RuntimeError("nginx is not installed")
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = render_nginx_config(
            spec,
            upstreams,
            versions,
            listen_port=self.port,
            pid_path=str(workdir / "nginx.pid"),
            temp_dir=str(workdir),
            relay_port=free_port(),  # the shadow relay's loopback port (unused without shadows)
        )
        self.conf_path = workdir / "nginx.conf"
        self.conf_path.write_text(self.conf)
        self.error_log = workdir / "error.log"
        self.access_log = workdir / "access.log"
        self._out = open(self.access_log if access_log else "/dev/null", "wb")  # noqa: SIM115
        # In a cluster nginx runs as uid 101 throughout. Started as root here, its workers
        # would drop to "nobody", who cannot enter pytest's private temp folders.
        directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
        self.proc = subprocess.Popen(
            [
                NGINX,
                "-p",
                str(workdir),
                "-c",
                str(self.conf_path),
                "-e",
                str(self.error_log),
                "-g",
                directives,
            ],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self.stop()
        log = self.error_log.read_text(errors="replace") if self.error_log.exists() else ""
        raise RuntimeError(f"nginx did not start on {self.url}:\n{log}\n--- config ---\n{self.conf}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: fast shutdown of master and workers
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()
