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


def test_the_sampler_lets_one_line_per_key_through_each_interval() -> None:
    sampler = logs.EventSampler(every=10.0)
    assert sampler.due("192.0.2.1", now=0.0)
    assert not sampler.due("192.0.2.1", now=9.9)
    assert sampler.due("192.0.2.2", now=9.9)
    assert sampler.due("192.0.2.1", now=10.0)


def test_a_flood_of_new_keys_stays_within_the_capacity_and_shares_one_line() -> None:
    sampler = logs.EventSampler(every=10.0, capacity=100)
    lines = sum(sampler.due(f"2001:db8:0:{n:x}::", now=0.0) for n in range(10_000))
    assert lines == 100 + 1  # one each until full, then one for all the rest
    assert sampler.held <= 101
    # A key it already holds keeps its own line.
    assert sampler.due("2001:db8:0:0::", now=10.0)


def test_quiet_keys_are_swept_at_most_once_a_second() -> None:
    sampler = logs.EventSampler(every=10.0, capacity=100)
    for n in range(100):
        sampler.due(f"old-{n}", now=0.0)
    assert sampler.due("new-1", now=9.95)  # full of live keys: the overflow line
    assert sampler.held == 101
    # At 10.5 the old keys are quiet, but the last sweep was 0.55 s ago: none yet.
    assert not sampler.due("new-2", now=10.5)
    assert sampler.held == 101
    # A second after it, the sweep frees them, and a new key has its own line again.
    assert sampler.due("new-3", now=10.96)
    assert sampler.held == 2  # the overflow key (9.95) and new-3
