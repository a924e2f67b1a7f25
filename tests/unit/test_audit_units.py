"""The audit trail's pure parts: cursors, spec and metadata diffs, outcomes, addresses and
queries; and the retention loop's survival of a failed pass."""

from __future__ import annotations

import asyncio
import base64
import logging
from datetime import UTC, datetime, timedelta, timezone
from typing import cast

import asyncpg
import pytest
from multidict import MultiDict, MultiDictProxy

from dockyard.api import errors
from dockyard.api.app import registry
from dockyard.api.audit.diff import REDACTED, spec_diff
from dockyard.api.audit.events import Cursor, InvalidCursor, Outcome
from dockyard.api.audit.middleware import action_of, is_audited, outcome_of
from dockyard.api.audit.repository import AuditLog, page_query
from dockyard.api.audit.retention import run_retention
from dockyard.api.auth import Permission
from dockyard.api.openapi import Operation
from dockyard.api.routes.audit import AuditQuery, parse_query
from dockyard.api.routes.objects import metadata_diff
from dockyard.core.breakers import Dependency, DependencyUnavailable


def _query(*pairs: tuple[str, str]) -> MultiDictProxy[str]:
    return MultiDictProxy(MultiDict(pairs))


def _field_errors(problem: errors.Problem) -> dict[str, str]:
    assert problem.status == 422
    return {e.field: e.message for e in problem.errors or []}


# -- cursors -------------------------------------------------------------------------------


def test_a_cursor_round_trips_to_the_same_instant_and_id() -> None:
    cursor = Cursor(datetime(2025, 3, 1, 12, 30, 45, 123456, tzinfo=UTC), 987654321)
    assert Cursor.decode(cursor.encode()) == cursor


def test_a_cursor_keeps_the_offset_it_was_made_with() -> None:
    when = datetime(2025, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    decoded = Cursor.decode(Cursor(when, 7).encode())
    assert decoded.occurred_at == when
    assert decoded.occurred_at.utcoffset() == timedelta(hours=2)


def test_a_cursor_is_url_safe_and_unpadded() -> None:
    token = Cursor(datetime(2025, 1, 1, tzinfo=UTC), 1).encode()
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not base64 at all!",
        base64.urlsafe_b64encode(b"{}").decode(),
        base64.urlsafe_b64encode(b'["2025-01-01T00:00:00", 5]').decode(),  # naive
        base64.urlsafe_b64encode(b'["2025-01-01T00:00:00+00:00", true]').decode(),
        base64.urlsafe_b64encode(b'["2025-01-01T00:00:00+00:00", 0]').decode(),
        base64.urlsafe_b64encode(b'["2025-01-01T00:00:00+00:00", "5"]').decode(),
        base64.urlsafe_b64encode(b'["yesterday", 5]').decode(),
        "A" * 201,
        # Made by hand: an id past PostgreSQL's bigint, instants with no UTC one.
        base64.urlsafe_b64encode(b'["2025-01-01T00:00:00+00:00", 9223372036854775808]').decode(),
        base64.urlsafe_b64encode(b'["0001-01-01T00:00:00+01:00", 5]').decode(),
        base64.urlsafe_b64encode(b'["9999-12-31T23:30:00-01:00", 5]').decode(),
    ],
)
def test_a_cursor_this_api_did_not_hand_out_is_refused(token: str) -> None:
    with pytest.raises(InvalidCursor):
        Cursor.decode(token)


def test_a_cursor_may_hold_the_largest_bigint_and_the_first_instant() -> None:
    cursor = Cursor(datetime(1, 1, 1, tzinfo=UTC), 2**63 - 1)
    assert Cursor.decode(cursor.encode()) == cursor


# -- spec diffs ----------------------------------------------------------------------------


def test_a_changed_field_maps_its_pointer_to_from_and_to() -> None:
    assert spec_diff({"replicas": 2, "image": "a:1"}, {"replicas": 3, "image": "a:1"}) == {
        "/replicas": {"from": 2, "to": 3}
    }


def test_nested_fields_are_compared_field_by_field() -> None:
    before = {"database": {"enabled": True, "deletionPolicy": "Retain"}}
    after = {"database": {"enabled": True, "deletionPolicy": "Snapshot"}}
    assert spec_diff(before, after) == {
        "/database/deletionPolicy": {"from": "Retain", "to": "Snapshot"}
    }


def test_an_added_field_has_no_from_and_a_removed_one_no_to() -> None:
    diff = spec_diff({"suspend": False, "ttl": "24h"}, {"suspend": False, "replicas": None})
    assert diff == {"/replicas": {"to": None}, "/ttl": {"from": "24h"}}


def test_lists_are_replaced_whole_as_merge_patch_does() -> None:
    before = {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}
    after = {"env": [{"name": "A", "value": "1"}]}
    assert spec_diff(before, after) == {"/env": {"from": before["env"], "to": after["env"]}}


def test_equal_objects_have_an_empty_diff() -> None:
    spec = {"tier": "dev", "resources": {"cpu": "100m"}, "env": [1, 2]}
    assert spec_diff(spec, dict(spec)) == {}


def test_a_bool_replacing_a_number_is_a_change() -> None:
    assert spec_diff({"x": 1}, {"x": True}) == {"/x": {"from": 1, "to": True}}


def test_keys_with_slash_and_tilde_are_escaped_as_rfc_6901_says() -> None:
    diff = spec_diff({"annotations": {"dockyard.io/a~b": "1"}}, {"annotations": {}})
    assert diff == {"/annotations/dockyard.io~1a~0b": {"from": "1"}}


def test_a_creation_diffs_against_nothing() -> None:
    assert spec_diff(None, {"tier": "dev"}) == {"/tier": {"to": "dev"}}


def test_secret_values_are_redacted_but_their_change_is_recorded() -> None:
    before = {"webhook": {"url": "https://a", "secret": "s1"}, "apiToken": "t1"}
    after = {"webhook": {"url": "https://a", "secret": "s2"}, "apiToken": "t2"}
    assert spec_diff(before, after) == {
        "/apiToken": {"from": REDACTED, "to": REDACTED},
        "/webhook/secret": {"from": REDACTED, "to": REDACTED},
    }


def test_secrets_inside_an_added_object_are_redacted() -> None:
    diff = spec_diff({}, {"auth": {"user": "u", "password": "p", "private_key": "k"}})
    assert diff == {"/auth": {"to": {"user": "u", "password": REDACTED, "private_key": REDACTED}}}


def test_a_secret_reference_is_not_a_secret() -> None:
    ref = {"secretKeyRef": {"name": "db", "key": "password"}}
    assert spec_diff({}, {"valueFrom": ref}) == {"/valueFrom": {"to": ref}}


def _object(labels: dict[str, str], annotations: dict[str, str]) -> dict[str, object]:
    return {
        "metadata": {"name": "shop", "labels": labels, "annotations": annotations},
        "spec": {"tier": "development"},
    }


def test_a_change_to_labels_or_annotations_alone_is_a_change() -> None:
    before = _object({"team": "shop"}, {})
    after = _object({"team": "cart"}, {"dockyard.io/default-backups": "false"})
    assert metadata_diff(before, after) == {
        "/metadata/annotations/dockyard.io~1default-backups": {"to": "false"},
        "/metadata/labels/team": {"from": "shop", "to": "cart"},
    }


def test_the_metadata_diff_redacts_secret_annotations_and_leaves_out_bookkeeping() -> None:
    before = _object({}, {"operator.dockyard.io/last-handled-configuration": "{}"})
    after = _object(
        {},
        {
            "team.example/api-token": "s3cret",
            "dockyard.io/traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "operator.dockyard.io/last-handled-configuration": '{"spec": {}}',
        },
    )
    assert metadata_diff(before, after) == {
        "/metadata/annotations/team.example~1api-token": {"to": REDACTED}
    }


# -- what is recorded, and how it ended ------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.SUCCEEDED),
        (201, Outcome.SUCCEEDED),
        (304, Outcome.SUCCEEDED),
        (401, Outcome.DENIED),
        (403, Outcome.DENIED),
        (404, Outcome.FAILED),
        (409, Outcome.FAILED),
        (422, Outcome.FAILED),
        (503, Outcome.FAILED),
        (None, Outcome.FAILED),
    ],
)
def test_the_outcome_follows_the_status(status: int | None, outcome: Outcome) -> None:
    assert outcome_of(status) is outcome


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "delete"])
def test_every_mutating_request_is_recorded(method: str) -> None:
    assert is_audited(method, 200)
    assert is_audited(method, None)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_reads_are_recorded_only_when_denied(method: str) -> None:
    assert not is_audited(method, 200)
    assert not is_audited(method, 404)
    assert is_audited(method, 401)
    assert is_audited(method, 403)


def _operations() -> dict[str, Operation]:
    return {op.operation_id: op for op in registry().operations}


@pytest.mark.parametrize(
    ("operation_id", "sensitive"),
    [
        ("listAuditEvents", True),  # who looked at whom
        ("getWebhook", True),  # a URL may carry a token
        ("listNamespacedWebhooks", True),
        ("getBackupStore", True),  # the cluster's storage and key Secrets
        ("listBackupStores", True),
        ("getRestorePlan", True),  # the target's tables and sizes
        ("getRestore", True),  # the same plan, in its status
        ("listNamespacedRestores", True),
        ("getBackup", True),  # the manifest: every table and its row count
        ("listNamespacedBackups", True),
        ("getEnvironment", False),
        ("listNamespacedScalingPolicies", False),
        ("getLiveness", False),
    ],
)
def test_a_read_is_recorded_as_the_audit_reads_setting_says(
    operation_id: str, sensitive: bool
) -> None:
    operation = _operations()[operation_id]
    assert is_audited("GET", 200, operation, "sensitive") is sensitive
    assert is_audited("GET", 404, operation, "sensitive") is sensitive
    # all: every read that needs a token; none: no allowed read at all.
    assert is_audited("GET", 200, operation, "all") is operation.authenticated
    assert not is_audited("GET", 200, operation, "none")
    # Writes and refusals, whatever the setting.
    assert is_audited("GET", 403, operation, "none")
    assert is_audited("POST", 201, operation, "none")


def test_only_the_probes_and_the_openapi_document_escape_an_all_reads_trail() -> None:
    unrecorded = sorted(
        op.operation_id
        for op in registry().operations
        if op.method.upper() == "GET" and not is_audited("GET", 200, op, "all")
    )
    # The apiserver's audit sink is a POST; the event stream is recorded when it ends.
    assert unrecorded == ["getLiveness", "getOpenAPI", "getReadiness"]


async def _noop(_: object) -> object:  # pragma: no cover - never called
    raise NotImplementedError


def test_the_action_names_the_route_the_operation_and_the_verb() -> None:
    op = Operation(
        "PATCH",
        "/api/v1/namespaces/{namespace}/environments/{name}",
        "patchEnvironment",
        "",
        "environments",
        _noop,  # type: ignore[arg-type]
        permission=Permission(verb="patch", resource="environments"),
    )
    assert action_of("patch", op.path, op) == (
        "PATCH /api/v1/namespaces/{namespace}/environments/{name} op=patchEnvironment verb=patch"
    )
    assert action_of("POST", "/nowhere", None) == "POST /nowhere"


def test_a_page_query_binds_only_the_filters_given_and_the_cursor() -> None:
    when = datetime(2025, 1, 1, tzinfo=UTC)
    sql, args = page_query(
        filters={"actor": "alice", "resource": None, "since": when},
        cursor=Cursor(when, 9),
        limit=51,
    )
    assert "actor = $1" in sql
    assert "occurred_at >= $2" in sql
    assert "(occurred_at, id) < ($3, $4)" in sql
    assert sql.endswith("ORDER BY occurred_at DESC, id DESC LIMIT $5")
    assert "resource" not in sql.split("FROM")[1]
    assert args == ["alice", when, when, 9, 51]


# -- the query string ------------------------------------------------------------------------


def test_an_empty_query_asks_for_the_first_page_of_fifty() -> None:
    query = parse_query(_query())
    assert query == AuditQuery()
    assert query.limit == 50


def test_filters_and_iso_8601_instants_are_parsed() -> None:
    query = parse_query(
        _query(
            ("actor", "alice"),
            ("resource", "environments"),
            ("since", "2025-01-01T00:00:00Z"),
            ("until", "2025-01-02T00:00:00.5+02:00"),
            ("limit", "200"),
        )
    )
    assert query.actor == "alice"
    assert query.since == datetime(2025, 1, 1, tzinfo=UTC)
    assert query.until == datetime(2025, 1, 1, 22, 0, 0, 500000, tzinfo=UTC)
    assert query.limit == 200


def test_an_offset_whose_plus_became_a_space_is_read_as_plus() -> None:
    query = parse_query(_query(("since", "2025-01-01T10:00:00 02:00")))
    assert query.since == datetime(2025, 1, 1, 8, 0, tzinfo=UTC)


def test_an_unknown_parameter_is_refused_with_its_name() -> None:
    with pytest.raises(errors.Problem) as caught:
        parse_query(_query(("actor", "a"), ("colour", "red")))
    assert list(_field_errors(caught.value)) == ["colour"]


def test_until_before_since_is_refused_on_until() -> None:
    with pytest.raises(errors.Problem) as caught:
        parse_query(_query(("since", "2025-02-01T00:00:00Z"), ("until", "2025-01-01T00:00:00Z")))
    assert _field_errors(caught.value) == {"until": "Value error, must not be before since"}


def test_since_equal_to_until_is_a_valid_instant() -> None:
    query = parse_query(
        _query(("since", "2025-02-01T00:00:00Z"), ("until", "2025-02-01T00:00:00Z"))
    )
    assert query.since == query.until


@pytest.mark.parametrize("value", ["1700000000", "2025-01-01", "2025-01-01T00:00:00", "soon"])
def test_instants_must_be_iso_8601_with_an_offset(value: str) -> None:
    with pytest.raises(errors.Problem) as caught:
        parse_query(_query(("since", value)))
    assert list(_field_errors(caught.value)) == ["since"]


@pytest.mark.parametrize("value", ["0", "201", "-1", "ten"])
def test_the_page_size_is_between_1_and_200(value: str) -> None:
    with pytest.raises(errors.Problem) as caught:
        parse_query(_query(("limit", value)))
    assert list(_field_errors(caught.value)) == ["limit"]


def test_a_repeated_parameter_is_refused() -> None:
    with pytest.raises(errors.Problem) as caught:
        parse_query(_query(("actor", "a"), ("actor", "b")))
    assert _field_errors(caught.value) == {"actor": "given more than once"}


@pytest.mark.parametrize(
    "token", ["Zm9yZ2Vk", Cursor(datetime(2025, 1, 1, tzinfo=UTC), 2**63).encode()]
)
def test_a_forged_cursor_is_refused_on_cursor(token: str) -> None:
    with pytest.raises(errors.Problem) as caught:
        parse_query(_query(("cursor", token)))
    assert list(_field_errors(caught.value)) == ["cursor"]


@pytest.mark.parametrize(
    "value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00", "0001-01-01T00:30:00 01:00"]
)
@pytest.mark.parametrize("name", ["since", "until"])
def test_an_instant_with_no_utc_one_is_refused_on_its_parameter(name: str, value: str) -> None:
    """PostgreSQL compares in UTC: such an instant would fail there, a 500."""
    with pytest.raises(errors.Problem) as caught:
        parse_query(_query((name, value)))
    assert _field_errors(caught.value) == {name: "Value error, out of range once converted to UTC"}


def test_the_first_and_last_utc_instants_are_valid_bounds() -> None:
    query = parse_query(
        _query(("since", "0001-01-01T00:00:00Z"), ("until", "9999-12-31T23:59:59.999999Z"))
    )
    assert query.since == datetime(1, 1, 1, tzinfo=UTC)
    assert query.until == datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


@pytest.mark.parametrize("name", ["actor", "resource", "namespace", "name"])
def test_a_filter_holding_nul_is_refused_on_its_parameter(name: str) -> None:
    """PostgreSQL's text cannot hold NUL: ``?actor=%00`` would fail there, a 500."""
    with pytest.raises(errors.Problem) as caught:
        parse_query(_query((name, "al\x00ice")))
    assert _field_errors(caught.value) == {
        name: "Value error, must not contain a NUL character (%00)"
    }


# -- retention ----------------------------------------------------------------------------


class _OutageOnce(AuditLog):
    """A log whose first purge finds PostgreSQL's breaker open, as the API's pool answers
    while the database is down; later purges succeed."""

    def __init__(self) -> None:
        super().__init__(cast(asyncpg.Pool, None))
        self.purges = 0
        self.purged_again = asyncio.Event()

    async def purge_older_than(self, *, days: int, batch_size: int = 1) -> int | None:
        self.purges += 1
        if self.purges == 1:
            raise DependencyUnavailable(Dependency.POSTGRES, 3.0, "circuit breaker open")
        self.purged_again.set()
        return 0


async def test_the_retention_task_outlives_a_pass_whose_database_is_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = _OutageOnce()
    with caplog.at_level(logging.ERROR, logger="dockyard.api.audit.retention"):
        task = asyncio.create_task(run_retention(log, days=30, first_delay=0, interval=0.01))
        try:
            await asyncio.wait_for(log.purged_again.wait(), timeout=5)
            assert not task.done()  # still running for the passes after
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    [failed] = [r for r in caplog.records if r.getMessage() == "audit.retention_failed"]
    assert failed.__dict__["error"] == "DependencyUnavailable"
