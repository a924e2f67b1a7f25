"""Planning a restore: the source backup, the target, the duration estimate, the plan
in status, and the two-person rule for production."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dockyard.core.models.backup import Backup
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.environment import Tier
from dockyard.core.models.restore import Restore, RestoreSpec, SourceSelection
from dockyard.core.models.restore_drill import RestoreDrill
from dockyard.core.restore_plan import (
    DEFAULT_BYTES_PER_SECOND,
    FIXED_OVERHEAD_SECONDS,
    ApprovalState,
    Requester,
    RequesterSource,
    RestoreSample,
    approval_tier,
    choose_backup,
    decide_approval,
    estimate_duration,
    identify_requester,
    plan_restore,
    refuse_without_right,
    resolve_source,
    restore_history,
    restore_target,
)

MIB = 1024 * 1024


def make_backup(
    name: str,
    *,
    environment: str = "shop",
    phase: str = "Completed",
    day: int = 1,
    verified: bool = False,
    size: int = 80 * MIB,
) -> Backup:
    status: dict[str, Any] = {"phase": phase, "size": size}
    if phase in ("Completed", "Failed"):
        status["completedAt"] = datetime(2024, 1, day, 3, tzinfo=UTC).isoformat()
    if verified:
        status["verified"] = {"drill": "nightly", "at": datetime(2024, 1, day, 4, tzinfo=UTC)}
    status["manifest"] = {
        "tables": [{"name": "public.orders", "rows": 100}, {"name": "public.items", "rows": 7}]
    }
    return Backup.model_validate(
        {
            "metadata": {"name": name, "uid": f"uid-{name}"},
            "spec": {
                "environmentRef": {"name": environment},
                "storage": {"filesystem": {"path": "/backups"}},
                "encryption": {"keySecretRef": {"name": "k", "key": "key"}},
            },
            "status": status,
        }
    )


BACKUPS = [
    make_backup("shop-1", day=1, verified=True),
    make_backup("shop-2", day=2, verified=True),
    make_backup("shop-3", day=3),
    make_backup("shop-4", day=4, phase="Failed"),
    make_backup("shop-5", phase="Running"),
    make_backup("other-9", environment="other", day=9, verified=True),
]


def spec(**body: Any) -> RestoreSpec:
    return RestoreSpec.model_validate(body)


def drill_failed_on(backup: Backup) -> Backup:
    """``backup`` after a later drill failed on it: ``verified`` kept, Verified False."""
    status = backup.status.with_condition(
        "Verified",
        ConditionStatus.FALSE,
        "DrillFailed",
        "RestoreDrill nightly failed: checksum",
        generation=None,
    )
    return backup.model_copy(update={"status": status})


def being_deleted(backup: Backup) -> Backup:
    meta = backup.metadata.model_copy(update={"deletion_timestamp": datetime.now(UTC)})
    return backup.model_copy(update={"metadata": meta})


# --- the source --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("select", "expected"),
    [(SourceSelection.LATEST, "shop-3"), (SourceSelection.LATEST_VERIFIED, "shop-2")],
)
def test_the_environment_form_takes_the_newest_completed_backup(
    select: SourceSelection, expected: str
) -> None:
    choice = choose_backup(BACKUPS, environment="shop", select=select)

    assert choice.backup is not None
    assert choice.backup.metadata.name == expected


def test_latest_verified_skips_a_backup_a_later_drill_failed_on() -> None:
    backups = [*BACKUPS[:1], drill_failed_on(BACKUPS[1]), *BACKUPS[2:]]

    choice = choose_backup(backups, environment="shop", select=SourceSelection.LATEST_VERIFIED)

    assert choice.backup is not None
    assert choice.backup.metadata.name == "shop-1"


@pytest.mark.parametrize("select", list(SourceSelection))
def test_a_backup_being_deleted_is_never_chosen(select: SourceSelection) -> None:
    backups = [BACKUPS[0], being_deleted(BACKUPS[1]), being_deleted(BACKUPS[2])]

    choice = choose_backup(backups, environment="shop", select=select)

    assert choice.backup is not None
    assert choice.backup.metadata.name == "shop-1"
    named = resolve_source(spec(source={"backupRef": {"name": "shop-3"}}), backups)
    assert (named.backup, named.reason) == (None, "backup shop-3 is being deleted")


@pytest.mark.parametrize(
    ("backups", "select", "reason"),
    [
        ([], SourceSelection.LATEST, "environment shop has no completed backup"),
        (
            [make_backup("shop-3", day=3)],
            SourceSelection.LATEST_VERIFIED,
            "environment shop has no drill-verified completed backup",
        ),
        (
            [make_backup("shop-5", phase="Running")],
            SourceSelection.LATEST,
            "environment shop has no completed backup",
        ),
    ],
)
def test_no_candidate_is_no_source_with_the_reason(
    backups: list[Backup], select: SourceSelection, reason: str
) -> None:
    choice = choose_backup(backups, environment="shop", select=select)

    assert (choice.backup, choice.reason) == (None, reason)


def test_a_named_backup_is_the_source_when_it_completed() -> None:
    choice = resolve_source(spec(source={"backupRef": {"name": "shop-1"}}), BACKUPS)

    assert choice.backup is not None
    assert choice.backup.metadata.name == "shop-1"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing", "backup missing does not exist"),
        ("shop-4", "backup shop-4 is Failed, not Completed"),
        ("shop-5", "backup shop-5 is Running, not Completed"),
    ],
)
def test_a_named_backup_that_cannot_be_restored_is_no_source(name: str, reason: str) -> None:
    choice = resolve_source(spec(source={"backupRef": {"name": name}}), BACKUPS)

    assert (choice.backup, choice.reason) == (None, reason)


def test_the_environment_form_goes_through_resolve_source_too() -> None:
    source = {"environmentRef": {"name": "other"}, "select": "latestVerified"}

    choice = resolve_source(spec(source=source), BACKUPS)

    assert choice.backup is not None
    assert choice.backup.metadata.name == "other-9"


# --- the target --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "environment", "in_place"),
    [
        (None, "shop", True),
        ({"environmentRef": {"name": "shop"}}, "shop", True),
        ({"environmentRef": {"name": "shop-staging"}}, "shop-staging", False),
    ],
)
def test_an_omitted_target_is_the_backups_own_environment(
    target: dict[str, Any] | None, environment: str, in_place: bool
) -> None:
    body: dict[str, Any] = {"source": {"backupRef": {"name": "shop-1"}}}
    if target:
        body["target"] = target

    choice = restore_target(spec(**body), BACKUPS[0])

    assert (choice.environment, choice.in_place) == (environment, in_place)


# --- the duration estimate ---------------------------------------------------------------------


def test_without_history_the_default_throughput_is_used() -> None:
    estimate = estimate_duration(80 * MIB, [])

    assert estimate.samples == 0
    assert estimate.bytes_per_second == DEFAULT_BYTES_PER_SECOND
    assert estimate.seconds == FIXED_OVERHEAD_SECONDS + 10


def test_the_median_throughput_of_past_restores_sets_the_estimate() -> None:
    history = [
        RestoreSample(100 * MIB, 10),  # 10 MiB/s
        RestoreSample(100 * MIB, 50),  # 2 MiB/s: a slow outlier
        RestoreSample(40 * MIB, 4),  # 10 MiB/s
    ]

    estimate = estimate_duration(200 * MIB, history)

    assert estimate.samples == 3
    assert estimate.seconds == FIXED_OVERHEAD_SECONDS + 20


def test_samples_without_size_or_time_are_ignored_and_only_the_latest_count() -> None:
    history = [RestoreSample(0, 10), RestoreSample(10 * MIB, 0)]
    history += [RestoreSample(10 * MIB, 1)] * 10 + [RestoreSample(10 * MIB, 100)] * 10

    estimate = estimate_duration(100 * MIB, history)

    assert estimate.samples == 10
    assert estimate.seconds == FIXED_OVERHEAD_SECONDS + 10


def test_an_unknown_size_is_estimated_as_the_fixed_overhead() -> None:
    assert estimate_duration(None, []).seconds == FIXED_OVERHEAD_SECONDS


def test_history_comes_from_completed_restores_and_drill_runs_of_the_environment() -> None:
    restores = [
        Restore.model_validate(
            {
                "spec": {"source": {"backupRef": {"name": "shop-1"}}},
                "status": {
                    "phase": phase,
                    "completedAt": f"2024-01-0{day}T05:00:00Z",
                    "durationSeconds": 30,
                    "plan": {
                        "backup": "shop-1",
                        "sourceEnvironment": environment,
                        "size": 300 * MIB,
                        "target": environment,
                        "inPlace": True,
                        "estimatedDurationSeconds": 40,
                    },
                },
            }
        )
        for phase, day, environment in [
            ("Completed", 2, "shop"),
            ("Failed", 3, "shop"),
            ("Completed", 4, "other"),
        ]
    ]
    drills = [
        RestoreDrill.model_validate(
            {
                "spec": {"environmentRef": {"name": environment}, "schedule": "@daily"},
                "status": {
                    "history": [
                        {
                            "backup": "shop-1",
                            "backupSize": 100 * MIB,
                            "startedAt": "2024-01-05T04:00:00Z",
                            "finishedAt": "2024-01-05T04:01:00Z",
                            "restoreSeconds": 20,
                            "result": "Passed",
                        }
                    ]
                },
            }
        )
        for environment in ("shop", "other")
    ]

    samples = restore_history("shop", restores, drills)

    assert [(s.size_bytes, s.seconds) for s in samples] == [(100 * MIB, 20), (300 * MIB, 30)]


# --- the plan ----------------------------------------------------------------------------------

TIERS = {"shop": Tier.PRODUCTION, "shop-staging": Tier.STAGING}


def test_a_dry_run_plan_says_what_would_be_restored_where_and_for_how_long() -> None:
    restore = spec(
        source={"environmentRef": {"name": "shop"}, "select": "latestVerified"},
        target={"environmentRef": {"name": "shop-staging"}},
        dryRun=True,
    )

    decision = plan_restore(restore, backups=BACKUPS, tiers=TIERS)

    assert (
        decision.reason == "latestVerified backup of environment shop into environment shop-staging"
    )
    plan = decision.plan
    assert plan is not None
    assert plan.model_dump(mode="json", exclude={"tables"}) == {
        "backup": "shop-2",
        "backupUid": "uid-shop-2",
        "sourceEnvironment": "shop",
        "backupCompletedAt": "2024-01-02T03:00:00Z",
        "verified": True,
        "size": 80 * MIB,
        "tableCount": 2,
        "target": "shop-staging",
        "inPlace": False,
        "targetTier": "staging",
        "safetyBackup": True,
        "requiresApproval": False,
        "estimatedDurationSeconds": FIXED_OVERHEAD_SECONDS + 10,
        "estimateSamples": 0,
    }
    assert [(t.name, t.rows) for t in plan.tables] == [("public.orders", 100), ("public.items", 7)]


def test_an_in_place_production_restore_requires_approval() -> None:
    decision = plan_restore(
        spec(source={"backupRef": {"name": "shop-3"}}), backups=BACKUPS, tiers=TIERS
    )

    assert decision.plan is not None
    assert decision.plan.in_place
    assert decision.plan.requires_approval


def test_no_plan_without_a_source_or_a_target() -> None:
    missing_source = plan_restore(
        spec(source={"backupRef": {"name": "missing"}}), backups=BACKUPS, tiers=TIERS
    )
    missing_target = plan_restore(
        spec(source={"backupRef": {"name": "shop-3"}}, target={"environmentRef": {"name": "qa"}}),
        backups=BACKUPS,
        tiers=TIERS,
    )

    assert (missing_source.plan, missing_source.reason) == (None, "backup missing does not exist")
    assert (missing_target.plan, missing_target.reason) == (
        None,
        "target environment qa does not exist",
    )


# --- who asked, and who may approve ------------------------------------------------------------


def test_the_requester_is_the_annotation_first() -> None:
    requester = identify_requester(
        {"dockyard.io/requested-by": "alice@example.com"},
        [{"manager": "kubectl-client-side-apply", "time": "2024-01-01T00:00:00Z"}],
    )

    assert requester == Requester("alice@example.com", RequesterSource.ANNOTATION)
    assert requester.is_user


def test_without_the_annotation_the_creating_field_manager_is_recorded() -> None:
    requester = identify_requester(
        {},
        [
            {"manager": "dockyard-operator", "operation": "Update", "time": "2024-01-01T00:05:00Z"},
            {"manager": "kubectl-create", "operation": "Update", "time": "2024-01-01T00:00:00Z"},
        ],
    )

    assert requester == Requester("kubectl-create", RequesterSource.MANAGED_FIELDS)
    assert not requester.is_user


def test_with_neither_the_requester_is_unknown() -> None:
    assert identify_requester({}, []) == Requester(None, None)


ALICE = Requester("alice", RequesterSource.ANNOTATION)
AT = datetime(2024, 1, 1, 12, tzinfo=UTC)

APPROVALS = [
    # (tier, requester, approver, dry run, state, reason)
    (Tier.PRODUCTION, ALICE, None, True, ApprovalState.NOT_REQUIRED, "a dry run changes nothing"),
    (
        Tier.STAGING,
        ALICE,
        None,
        False,
        ApprovalState.NOT_REQUIRED,
        "staging restores need no approval",
    ),
    (
        Tier.PRODUCTION,
        ALICE,
        None,
        False,
        ApprovalState.WAITING,
        "production restores wait for approval by a user other than alice",
    ),
    (Tier.PRODUCTION, ALICE, "  ", False, ApprovalState.WAITING, "wait for approval"),
    (
        Tier.PRODUCTION,
        ALICE,
        "alice",
        False,
        ApprovalState.REFUSED,
        "alice requested this restore and cannot approve it; another user must",
    ),
    (Tier.PRODUCTION, ALICE, "bob", False, ApprovalState.APPROVED, "approved by bob"),
    (
        Tier.PRODUCTION,
        Requester("kubectl-create", RequesterSource.MANAGED_FIELDS),
        "bob",
        False,
        ApprovalState.REFUSED,
        "the requester is not known as a user",
    ),
    (
        Tier.PRODUCTION,
        Requester(None, None),
        None,
        False,
        ApprovalState.WAITING,
        "production restores wait for approval by a second user",
    ),
]


@pytest.mark.parametrize(("tier", "requester", "approver", "dry_run", "state", "reason"), APPROVALS)
def test_production_restores_need_a_second_person(
    tier: Tier,
    requester: Requester,
    approver: str | None,
    dry_run: bool,
    state: ApprovalState,
    reason: str,
) -> None:
    decision = decide_approval(
        target_tier=tier,
        requester=requester,
        approved_by=approver,
        approved_at=AT,
        shown=True,
        dry_run=dry_run,
    )

    assert decision.state == state
    assert reason in decision.reason
    assert decision.may_proceed is (state in (ApprovalState.NOT_REQUIRED, ApprovalState.APPROVED))


def test_an_approval_is_recorded_for_status() -> None:
    decision = decide_approval(
        target_tier=Tier.PRODUCTION, requester=ALICE, approved_by="bob", approved_at=AT, shown=True
    )

    assert decision.approval is not None
    assert decision.approval.model_dump(mode="json") == {
        "requiredBy": "production",
        "requestedBy": "alice",
        "approvedBy": "bob",
        "approvedAt": "2024-01-01T12:00:00Z",
        "refusedApprover": None,
        "rejectedBy": None,
        "rejectedAt": None,
        "rejectionReason": None,
    }


def test_a_refused_approval_is_not_recorded_as_given() -> None:
    decision = decide_approval(
        target_tier=Tier.PRODUCTION,
        requester=ALICE,
        approved_by="alice",
        approved_at=AT,
        shown=True,
    )

    assert decision.approval is not None
    assert (decision.approval.approved_by, decision.approval.approved_at) == (None, None)


def test_an_approval_given_before_the_plan_was_shown_does_not_count_until_given_again() -> None:
    early = decide_approval(
        target_tier=Tier.PRODUCTION, requester=ALICE, approved_by="bob", approved_at=AT, shown=False
    )
    assert early.state is ApprovalState.REFUSED
    assert "approved before this restore was AwaitingApproval" in early.reason
    assert early.approval is not None
    assert (early.approval.approved_by, early.approval.refused_approver) == (None, "bob")

    # Still the same annotation on the next pass, now that the restore waits: refused.
    again = decide_approval(
        target_tier=Tier.PRODUCTION,
        requester=ALICE,
        approved_by="bob",
        approved_at=AT,
        shown=True,
        refused_approver="bob",
    )
    assert again.state is ApprovalState.REFUSED
    # Removed, then given again (or given by someone else): it counts.
    removed = decide_approval(
        target_tier=Tier.PRODUCTION,
        requester=ALICE,
        approved_by=None,
        approved_at=AT,
        shown=True,
        refused_approver="bob",
    )
    assert removed.state is ApprovalState.WAITING
    assert removed.approval is not None
    assert removed.approval.refused_approver is None
    assert (
        decide_approval(
            target_tier=Tier.PRODUCTION,
            requester=ALICE,
            approved_by="carol",
            approved_at=AT,
            shown=True,
            refused_approver="bob",
        ).state
        is ApprovalState.APPROVED
    )


def test_an_approver_without_the_approve_verb_is_refused_and_not_recorded() -> None:
    given = decide_approval(
        target_tier=Tier.PRODUCTION, requester=ALICE, approved_by="bob", approved_at=AT, shown=True
    )
    refused = refuse_without_right(given, approver="bob", namespace="shop", detail="no binding")

    assert refused.state is ApprovalState.REFUSED
    assert not refused.may_proceed
    assert "bob may not approve restores in namespace shop" in refused.reason
    assert "no binding" in refused.reason
    assert refused.approval is not None
    assert (refused.approval.approved_by, refused.approval.approved_at) == (None, None)


def test_the_plan_records_the_targets_tier_and_approval_keeps_to_it() -> None:
    spec = RestoreSpec.model_validate(
        {
            "source": {"backupRef": {"name": "shop-1"}},
            "target": {"environmentRef": {"name": "live"}},
        }
    )
    decision = plan_restore(
        spec,
        backups=[make_backup("shop-1")],
        tiers={"shop": Tier.DEVELOPMENT, "live": Tier.PRODUCTION},
    )
    assert decision.plan is not None
    assert decision.plan.target_tier is Tier.PRODUCTION

    # Recreated (or edited) as development: still a production restore.
    assert approval_tier(Tier.PRODUCTION, Tier.DEVELOPMENT) is Tier.PRODUCTION
    # Made stricter since: the stricter tier counts.
    assert approval_tier(Tier.DEVELOPMENT, Tier.PRODUCTION) is Tier.PRODUCTION
    assert approval_tier(Tier.STAGING, Tier.DEVELOPMENT) is Tier.STAGING
    # A plan written before the tier was recorded follows the target as it is.
    assert approval_tier(None, Tier.STAGING) is Tier.STAGING
