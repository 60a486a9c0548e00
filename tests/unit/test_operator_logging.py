"""DOCKYARD_LOG_FORMAT=json gives one JSON object per log line (for log pipelines)."""

from __future__ import annotations

import io
import json
import logging

from dockyard.operator_main import JsonFormatter, configure_logging


def test_json_lines_carry_level_logger_message_and_exception() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("dockyard.test-json")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("reconcile %s failed", "ns/tr")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("with traceback")
    finally:
        log.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{"))
    assert first["level"] == "warning" and first["logger"] == "dockyard.test-json"
    assert first["message"] == "reconcile ns/tr failed"
    assert "ValueError: boom" in second["exception"]


def test_configure_logging_switches_format() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("json", verbose=False)
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        configure_logging("text", verbose=True)
        assert not isinstance(root.handlers[0].formatter, JsonFormatter)
        assert root.level == logging.DEBUG
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
