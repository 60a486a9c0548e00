"""Small helpers shared by the runtime entrypoints: the termination message and env access."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Kubernetes keeps at most 4096 bytes of a container's termination message.
TERMINATION_LIMIT = 4096
DEFAULT_TERMINATION_LOG = "/dev/termination-log"

# Exit codes shared by every entrypoint.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class RuntimeFailure(Exception):
    """A failure with a machine-readable reason (the `reason` of the termination JSON)."""

    def __init__(self, reason: str, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.exit_code = exit_code


def dumps(obj: Any) -> str:
    """Compact JSON, ASCII only, so len(text) == bytes written."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True, allow_nan=False, default=str)


def shorten(text: str, limit: int) -> str:
    """Cut `text` to at most `limit` characters, marking the cut."""
    text = str(text)
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 3)] + "..."


def fit_message(obj: dict[str, Any], field: str = "message", limit: int = TERMINATION_LIMIT) -> str:
    """Serialize `obj`, shortening its string `field` until the JSON fits in `limit` bytes."""
    text = dumps(obj)
    if len(text) < limit or not isinstance(obj.get(field), str):
        return text
    over = len(text) - limit + 1
    value = obj[field]
    # Escapes can make the encoded field longer than the raw one; loop until it fits.
    while len(text) >= limit and value:
        value = shorten(value, max(0, len(value) - over - 16))
        text = dumps({**obj, field: value})
    return text


def write_termination_message(path: str | os.PathLike[str] | None, text: str) -> None:
    """Write the termination message; never raise (a missing /dev/termination-log outside
    Kubernetes must not turn a success into a failure)."""
    if len(text.encode()) >= TERMINATION_LIMIT:  # callers keep under the limit; be safe anyway
        text = dumps({"ok": False, "reason": "MessageTooLarge", "message": "termination message overflow"})
    target = Path(path or DEFAULT_TERMINATION_LOG)
    try:
        target.write_text(text)
    except OSError as exc:
        print(f"dockyard: could not write termination message to {target}: {exc}", file=sys.stderr)


def env_str(environ: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    """An env var with empty treated as unset."""
    value = environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def quiet_mlflow() -> None:
    """MLflow defaults for Pods: no usage telemetry leaves the cluster unless asked for."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def termination_path(environ: Mapping[str, str], override: str | None = None) -> str:
    return override or env_str(environ, "DOCKYARD_TERMINATION_LOG") or DEFAULT_TERMINATION_LOG
