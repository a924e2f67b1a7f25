"""Kopf's own log lines at the levels they deserve: its per-object routine lines at DEBUG,
and the Events it cannot post into a deleted namespace no longer as errors. The lines
are Kopf's, as an operator logged them when a test namespace was deleted under it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from dockyard.operator.kopf_logs import (
    KOPF_OBJECTS,
    KOPF_POSTING,
    QuietGoneNamespaces,
    QuietRoutine,
    install,
)

NS = "inline-c4c68b-e587ab"
RETRY = (
    f"Request attempt #2/9 failed; will retry: POST https://127.0.0.1:20440/api/v1/namespaces/"
    f'{NS}/events -> APIForbiddenError(\'events "kopf-event-" is forbidden: unable to create '
    f"new content in namespace {NS} because it is being terminated', {{'kind': 'Status', "
    "'reason': 'Forbidden', 'details': {'name': 'kopf-event-', 'kind': 'events', 'causes': "
    "[{'reason': 'NamespaceTerminating', 'field': 'metadata.namespace'}]}, 'code': 403}, "
    "status=403)"
)
ESCALATED = RETRY.replace("#2/9 failed; will retry", "#9/9 failed; escalating")
GIVEN_UP = (
    f"Failed to post an event. Ignoring and continuing. Code: 404. Message: namespaces "
    f"\"{NS}\" not found. Details: {{'name': '{NS}', 'kind': 'namespaces'}}Event: "
    "type='Normal', reason='ScratchDropped', message='Dropped dkd_4319b549dc6e4fec_1'."
)


def _record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


@pytest.fixture(autouse=True)
def _debug_enabled() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in (KOPF_POSTING, KOPF_OBJECTS)]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.DEBUG)
    yield
    for each, level in zip(loggers, levels, strict=True):
        each.setLevel(level)


@pytest.mark.parametrize(
    ("message", "level", "becomes"),
    [
        (RETRY, logging.ERROR, logging.DEBUG),
        (ESCALATED, logging.ERROR, logging.DEBUG),
        (GIVEN_UP, logging.WARNING, logging.INFO),
    ],
)
def test_an_event_post_into_a_deleted_namespace_is_no_error(
    message: str, level: int, becomes: int
) -> None:
    record = _record(KOPF_POSTING, level, message)

    assert QuietGoneNamespaces().filter(record)

    assert (record.levelno, record.levelname) == (becomes, logging.getLevelName(becomes))


@pytest.mark.parametrize(
    "message",
    [
        # Refused for another reason: still an error.
        RETRY.replace("NamespaceTerminating", "Unauthorized"),
        # Into a namespace that stands, but the apiserver failed.
        "Request attempt #2/9 failed; will retry: POST https://h/api/v1/namespaces/a/events "
        "-> APIServerError('etcdserver: request timed out', {'code': 500})",
        # Another request in a terminating namespace (not an Event post).
        RETRY.replace("/events ->", "/backups/b ->").replace("POST", "PATCH"),
    ],
)
def test_other_failures_keep_their_level(message: str) -> None:
    record = _record(KOPF_POSTING, logging.ERROR, message)

    assert QuietGoneNamespaces().filter(record)

    assert record.levelno == logging.ERROR


def test_a_lowered_line_is_dropped_where_its_new_level_is_off() -> None:
    logging.getLogger(KOPF_POSTING).setLevel(logging.INFO)

    assert not QuietGoneNamespaces().filter(_record(KOPF_POSTING, logging.ERROR, RETRY))
    assert QuietGoneNamespaces().filter(_record(KOPF_POSTING, logging.WARNING, GIVEN_UP))


def test_routine_successes_go_to_debug_and_outcomes_stay() -> None:
    routine = _record(KOPF_OBJECTS, logging.INFO, "Timer 'drift-repair' succeeded.")
    outcome = _record(KOPF_OBJECTS, logging.INFO, "Creation is processed: 1 succeeded; 0 failed.")

    assert QuietRoutine().filter(routine)
    assert QuietRoutine().filter(outcome)

    assert (routine.levelno, outcome.levelno) == (logging.DEBUG, logging.INFO)


def test_install_puts_each_filter_on_its_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (KOPF_OBJECTS, KOPF_POSTING):
        monkeypatch.setattr(logging.getLogger(name), "filters", [])

    install()

    [routine] = logging.getLogger(KOPF_OBJECTS).filters
    [gone] = logging.getLogger(KOPF_POSTING).filters
    assert isinstance(routine, QuietRoutine)
    assert isinstance(gone, QuietGoneNamespaces)
