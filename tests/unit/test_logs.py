"""Log lines are JSON objects carrying the request and trace ids of their context."""

from __future__ import annotations

import json
import logging

from dockyard.core import logs


def _format(record: logging.LogRecord) -> dict[str, object]:
    return dict(json.loads(logs.JsonFormatter().format(record)))


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("dockyard.test", logging.WARNING, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_line_carries_the_ids_of_its_context() -> None:
    request_token = logs.request_id_var.set("req-123")
    trace_token = logs.trace_id_var.set("4bf92f3577b34da6a3ce929d0e0e4736")
    try:
        entry = _format(_record("hello %s"))
    finally:
        logs.request_id_var.reset(request_token)
        logs.trace_id_var.reset(trace_token)
    assert entry["request_id"] == "req-123"
    assert entry["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert entry["level"] == "warning"
    assert entry["logger"] == "dockyard.test"


def test_extra_fields_are_emitted_and_ids_absent_outside_a_request() -> None:
    entry = _format(_record("denied", security_event="authz.denied", actor="eve"))
    assert entry["security_event"] == "authz.denied"
    assert entry["actor"] == "eve"
    assert "request_id" not in entry


def test_security_event_logs_one_greppable_shape(caplog: object) -> None:
    logger = logging.getLogger("dockyard.security-test")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        logs.security_event(logger, "authn.failed", source_ip="127.0.0.1")
    finally:
        logger.removeHandler(handler)
    entry = _format(records[0])
    assert entry["message"] == "authn.failed"
    assert entry["security_event"] == "authn.failed"
    assert entry["source_ip"] == "127.0.0.1"


def test_security_event_fields_may_shadow_log_record_attributes() -> None:
    logger = logging.getLogger("dockyard.security-shadow")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        logs.security_event(logger, "authz.denied", name="shop", msg="x")
    finally:
        logger.removeHandler(handler)
    entry = _format(records[0])
    assert entry["name_"] == "shop"
    assert entry["logger"] == "dockyard.security-shadow"
