"""The backup CRDs on a real API server: invalid Backups, BackupSchedules, Restores and
RestoreDrills are refused with their messages, valid ones are stored with defaults."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import yaml

from tests.conftest import Kubectl, get_json, remove_backup_store, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")


@pytest.fixture
def namespace(unwatched_namespace: str) -> str:
    """The schema alone is tested here, and some tests write a status themselves: the
    worker's session operator, once started by an earlier module, must not reconcile it."""
    return unwatched_namespace


STORAGE = {"filesystem": {"path": "/var/lib/dockyard/backups"}}
ENCRYPTION = {"keySecretRef": {"name": "backup-key", "key": "key"}}
SPECS: dict[str, dict[str, Any]] = {
    "Backup": {"environmentRef": {"name": "shop"}, "storage": STORAGE, "encryption": ENCRYPTION},
    "BackupSchedule": {
        "environmentRef": {"name": "shop"},
        "schedule": "0 3 * * *",
        "template": {"storage": STORAGE, "encryption": ENCRYPTION},
    },
    "Restore": {"source": {"backupRef": {"name": "shop-1"}}},
    "RestoreDrill": {"environmentRef": {"name": "shop"}, "schedule": "30 4 * * *"},
}


def manifest(kind: str, name: str = "x", **changes: Any) -> str:
    spec = {**SPECS[kind], **changes}
    return yaml.safe_dump(
        {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def apply(kubectl: Kubectl, namespace: str, text: str, check: bool = True) -> Any:
    return kubectl("apply", "-n", namespace, "-f", "-", input=text, check=check)


INVALID = [
    (
        "BackupSchedule",
        {"schedule": "0 0 3 * * *"},
        'spec.schedule: Invalid value: "0 0 3 * * *": expected 5 fields '
        "(minute hour day-of-month month day-of-week), got 6: 0 0 3 * * *",
    ),
    (
        "BackupSchedule",
        {"schedule": "61 3 * * *"},
        'spec.schedule: Invalid value: "61 3 * * *": minute (field 1) 61 is invalid: expected * '
        "or */n, or a comma-separated list of numbers 0-59",
    ),
    ("BackupSchedule", {"schedule": "0 3 ? * MON"}, "day-of-month (field 3) ? is invalid"),
    ("BackupSchedule", {"schedule": "@reboot"}, "@reboot is not a supported macro"),
    (
        "BackupSchedule",
        {"retention": {"keepLast": 0}},
        "retention must keep at least one backup",
    ),
    (
        "BackupSchedule",
        {"concurrencyPolicy": "Sometimes"},
        'spec.concurrencyPolicy: Unsupported value: "Sometimes"',
    ),
    ("BackupSchedule", {"timeZone": "Europe Berlin"}, "spec.timeZone: Invalid value"),
    (
        "RestoreDrill",
        {"schedule": "0 0 4 * * *"},
        "expected 5 fields (minute hour day-of-month month day-of-week), got 6: 0 0 4 * * *",
    ),
    (
        "RestoreDrill",
        {"backupSelection": {"strategy": "RandomWithinWindow"}},
        "spec.backupSelection.window: Invalid value: window is required with "
        "RandomWithinWindow and allowed only with it",
    ),
    ("RestoreDrill", {"historyLimit": 0}, "spec.historyLimit: Invalid value: 0"),
    ("RestoreDrill", {"scratch": {"keepFor": "0s"}}, "keepFor must be positive"),
    (
        "Restore",
        {
            "source": {
                "backupRef": {"name": "shop-1"},
                "environmentRef": {"name": "shop"},
                "select": "latest",
            }
        },
        "spec.source: Invalid value: exactly one of backupRef and environmentRef must be set",
    ),
    (
        "Restore",
        {"source": {}},
        "spec.source: Invalid value: exactly one of backupRef and environmentRef must be set",
    ),
    (
        "Restore",
        {"source": {"environmentRef": {"name": "shop"}}},
        "spec.source.select: Invalid value: select (latest or latestVerified) goes "
        "with environmentRef, and only with it",
    ),
    (
        "Restore",
        {"source": {"environmentRef": {"name": "shop"}, "select": "oldest"}},
        'spec.source.select: Unsupported value: "oldest"',
    ),
    (
        "Backup",
        {"storage": {**STORAGE, "s3": {"bucket": "shop-backups"}}},
        "spec.storage: Invalid value: exactly one of filesystem and s3 must be set",
    ),
    (
        "Backup",
        {"storage": {}},
        "spec.storage: Invalid value: exactly one of filesystem and s3 must be set",
    ),
    (
        "Backup",
        {"storage": {"filesystem": {"path": "relative/dir"}}},
        "spec.storage.filesystem.path: Invalid value",
    ),
    (
        "Backup",
        {"storage": {"filesystem": {"path": "/backups/../etc"}}},
        "path must not contain . or .. segments",
    ),
    (
        "Backup",
        {"storage": {"filesystem": {"path": "/usr/lib", "claimName": "backups"}}},
        "spec.storage.filesystem.path: Invalid value: a runner Job mounts "
        "claimName at path, which must not be or lie under the runner image's own directories",
    ),
    (
        "Backup",
        {"storage": {"filesystem": {"path": "/var/run/secrets", "claimName": "backups"}}},
        "use a directory of its own, such as /backups",
    ),
    (
        "Backup",
        {"storage": {"s3": {"bucket": "Shop_Backups"}}},
        "spec.storage.s3.bucket: Invalid value",
    ),
    (
        "Backup",
        {"storage": {"s3": {"bucket": "shop-backups", "prefix": "team-a/../team-b"}}},
        "spec.storage.s3.prefix: Invalid value",
    ),
    ("Backup", {"ttl": "0s"}, 'spec.ttl: Invalid value: "0s": ttl must be positive'),
    ("Backup", {"ttl": "7d"}, "spec.ttl: Invalid value"),
    ("Backup", {"method": "Physical"}, 'spec.method: Unsupported value: "Physical"'),
]


@pytest.mark.parametrize(("kind", "changes", "message"), INVALID)
def test_invalid_objects_are_refused_with_their_message(
    kubectl: Kubectl, namespace: str, kind: str, changes: dict[str, Any], message: str
) -> None:
    result = apply(kubectl, namespace, manifest(kind, **changes), check=False)

    assert result.returncode != 0
    assert message in result.stderr
    assert kubectl("get", kind.lower(), "-n", namespace, "-o", "name").stdout == ""


def _spec(kubectl: Kubectl, kind: str, namespace: str) -> dict[str, Any]:
    spec: dict[str, Any] = get_json(kubectl, kind.lower(), "x", "-n", namespace)["spec"]  # type: ignore[assignment]
    return spec


def test_a_backup_is_stored_with_its_defaults(kubectl: Kubectl, namespace: str) -> None:
    apply(kubectl, namespace, manifest("Backup"))

    assert _spec(kubectl, "Backup", namespace)["method"] == "Logical"


def test_a_backup_schedule_is_stored_with_its_defaults(kubectl: Kubectl, namespace: str) -> None:
    apply(kubectl, namespace, manifest("BackupSchedule"))

    spec = _spec(kubectl, "BackupSchedule", namespace)
    assert (spec["timeZone"], spec["suspend"], spec["concurrencyPolicy"]) == (
        "UTC",
        False,
        "Forbid",
    )
    assert spec["retention"] == {"keepLast": 7, "keepDaily": 7, "keepWeekly": 4, "keepMonthly": 6}
    assert spec["template"]["method"] == "Logical"


def test_a_restore_is_stored_with_its_defaults(kubectl: Kubectl, namespace: str) -> None:
    apply(kubectl, namespace, manifest("Restore"))

    spec = _spec(kubectl, "Restore", namespace)
    assert (spec["dryRun"], spec["safetyBackup"]) == (False, True)
    assert "target" not in spec


def test_a_restore_drill_is_stored_with_its_defaults(kubectl: Kubectl, namespace: str) -> None:
    apply(kubectl, namespace, manifest("RestoreDrill"))

    spec = _spec(kubectl, "RestoreDrill", namespace)
    assert spec["timeZone"] == "UTC"
    assert spec["backupSelection"] == {"strategy": "Latest"}
    assert spec["checks"] == {"rowCounts": True, "sql": []}
    assert spec["objectives"] == {}
    assert spec["scratch"] == {"keepFor": "1h"}
    assert (spec["historyLimit"], spec["suspend"]) == (10, False)


@pytest.mark.parametrize(
    "changes",
    [
        {"schedule": "@daily", "timeZone": "Europe/Berlin", "concurrencyPolicy": "Replace"},
        {"schedule": "0 22-23,0-2/2 1,15 JAN-MAR,oct mon-fri", "suspend": True},
        {
            "schedule": "*/30 * * * *",
            "template": {
                "storage": {
                    "s3": {
                        "bucket": "shop-backups",
                        "prefix": "prod/shop",
                        "endpoint": "https://minio.storage.svc:9000",
                        "region": "eu-central-1",
                        "credentialsSecretRef": {"name": "backup-s3"},
                    }
                },
                "encryption": ENCRYPTION,
            },
        },
    ],
    ids=["macro-in-berlin", "lists-ranges-names", "s3"],
)
def test_valid_schedules_are_accepted(
    kubectl: Kubectl, namespace: str, changes: dict[str, Any]
) -> None:
    apply(kubectl, namespace, manifest("BackupSchedule", **changes))

    assert _spec(kubectl, "BackupSchedule", namespace)["schedule"] == changes["schedule"]


def test_a_restore_from_an_environment_into_another_is_accepted(
    kubectl: Kubectl, namespace: str
) -> None:
    apply(
        kubectl,
        namespace,
        manifest(
            "Restore",
            source={"environmentRef": {"name": "shop"}, "select": "latestVerified"},
            target={"environmentRef": {"name": "shop-staging"}},
            dryRun=True,
        ),
    )

    assert _spec(kubectl, "Restore", namespace)["source"]["select"] == "latestVerified"


def _patch(kubectl: Kubectl, namespace: str, kind: str, spec: dict[str, Any]) -> Any:
    return kubectl(
        "patch",
        kind.lower(),
        "x",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": spec}),
        check=False,
    )


def test_a_reviewed_dry_run_can_be_carried_out_but_not_the_reverse(
    kubectl: Kubectl, namespace: str
) -> None:
    apply(kubectl, namespace, manifest("Restore", dryRun=True))

    assert _patch(kubectl, namespace, "Restore", {"dryRun": False}).returncode == 0
    back = _patch(kubectl, namespace, "Restore", {"dryRun": True})
    assert back.returncode != 0
    assert "dryRun can only be turned off" in back.stderr


def test_a_restores_source_target_and_runner_cannot_change(
    kubectl: Kubectl, namespace: str
) -> None:
    apply(kubectl, namespace, manifest("Restore"))

    source = _patch(kubectl, namespace, "Restore", {"source": {"backupRef": {"name": "shop-2"}}})
    target = _patch(
        kubectl, namespace, "Restore", {"target": {"environmentRef": {"name": "shop-staging"}}}
    )
    runner = _patch(kubectl, namespace, "Restore", {"runner": "Job"})

    assert "source is immutable" in source.stderr
    assert "target is immutable" in target.stderr
    assert "runner is immutable: create a new Restore instead" in runner.stderr


def test_a_backups_storage_is_immutable_but_its_ttl_is_not(
    kubectl: Kubectl, namespace: str
) -> None:
    apply(kubectl, namespace, manifest("Backup", ttl="720h"))

    moved = _patch(kubectl, namespace, "Backup", {"storage": {"filesystem": {"path": "/other"}}})
    # A run half in a Job and half inline would be two dumps at once.
    rerun = _patch(kubectl, namespace, "Backup", {"runner": "Job"})
    extended = _patch(kubectl, namespace, "Backup", {"ttl": "2160h"})

    assert "spec.storage: Invalid value" in moved.stderr
    assert "storage is immutable once set: create a new Backup instead" in moved.stderr
    assert "runner is immutable: create a new Backup instead" in rerun.stderr
    assert extended.returncode == 0


def test_printer_columns_show_status(kubectl: Kubectl, namespace: str) -> None:
    apply(kubectl, namespace, manifest("Backup"))
    status = {
        "phase": "Completed",
        "size": 4096,
        "sha256": "0" * 64,
        "verified": {"drill": "nightly", "at": "2024-01-01T04:00:00Z"},
    }
    kubectl(
        "patch",
        "backup",
        "x",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )

    table = kubectl("get", "bk", "-n", namespace).stdout.splitlines()

    assert table[0].split() == ["NAME", "ENVIRONMENT", "PHASE", "SIZE", "VERIFIED", "AGE"]
    assert table[1].split()[:4] == ["x", "shop", "Completed", "4096"]


def test_the_next_run_column_prints_the_time(kubectl: Kubectl, namespace: str) -> None:
    apply(kubectl, namespace, manifest("RestoreDrill"))
    kubectl(
        "patch",
        "restoredrill",
        "x",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"nextRunTime": "2099-01-01T04:30:00Z"}}),
    )

    table = kubectl("get", "drill", "-n", namespace).stdout

    assert "2099-01-01T04:30:00Z" in table
    assert "<invalid>" not in table


def test_kubectl_explain_teaches_the_restore_source(kubectl: Kubectl) -> None:
    explained = wait_for(
        lambda: kubectl("explain", "restore.spec.source", check=False).stdout, timeout=20
    )

    assert "latestVerified" in str(explained)
    assert "backupRef" in str(explained)


def test_a_backup_naming_only_its_environment_may_have_its_storage_set_once(
    kubectl: Kubectl, namespace: str
) -> None:
    bare = {"apiVersion": "dockyard.io/v1alpha1", "kind": "Backup", "metadata": {"name": "x"}}
    bare["spec"] = {"environmentRef": {"name": "shop"}}
    apply(kubectl, namespace, yaml.safe_dump(bare))

    first = _patch(kubectl, namespace, "Backup", {"storage": {"filesystem": {"path": "/a"}}})
    second = _patch(kubectl, namespace, "Backup", {"storage": {"filesystem": {"path": "/b"}}})
    # An emptied field is a change too.
    removed = kubectl(
        "patch", "backup", "x", "-n", namespace, "--type=json", "-p",
        json.dumps([{"op": "remove", "path": "/spec/storage"}]), check=False,
    )  # fmt: skip

    assert first.returncode == 0, first.stderr
    assert "storage is immutable once set" in second.stderr
    assert "storage is immutable once set" in removed.stderr


def test_a_backup_stores_storage_is_immutable_and_its_keys_are_not(kubectl: Kubectl) -> None:
    name = f"crd-store-{uuid.uuid4().hex[:6]}"
    store = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "BackupStore",
        "metadata": {"name": name},
        "spec": {
            "storage": {"filesystem": {"path": "/var/lib/dockyard/backups"}},
            "encryption": {"keySecretRef": {"name": "k1", "key": "key"}},
        },
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump(store))
    try:

        def patch(spec: dict[str, Any]) -> Any:
            body = json.dumps({"spec": spec})
            return kubectl("patch", "backupstore", name, "--type=merge", "-p", body, check=False)

        moved = patch({"storage": {"filesystem": {"path": "/elsewhere"}}})
        rotated = patch(
            {
                "encryption": {
                    "keySecretRef": {"name": "k2", "key": "key"},
                    "previousKeySecretRefs": [{"name": "k1", "key": "key"}],
                }
            }
        )
        bad_namespace = patch({"secretNamespace": "Not_A_Namespace"})
        bad_key = patch({"namespaceSelector": {"matchLabels": {"bad key!": "x"}}})
        no_values = patch(
            {"namespaceSelector": {"matchExpressions": [{"key": "t", "operator": "NotIn"}]}}
        )
        selected = patch({"namespaceSelector": {"matchLabels": {"dockyard.io/tier": "gold"}}})
        stored = get_json(kubectl, "backupstore", name)

        assert "storage is immutable: create a new BackupStore instead" in moved.stderr
        assert rotated.returncode == 0, rotated.stderr
        assert "spec.secretNamespace" in bad_namespace.stderr
        assert "matchLabels keys must be label keys" in bad_key.stderr
        assert "In and NotIn need values" in no_values.stderr
        assert selected.returncode == 0, selected.stderr
        assert stored["spec"]["namespaceSelector"] == {"matchLabels": {"dockyard.io/tier": "gold"}}
        # Cluster-scoped, with the platform namespace as the default home of its keys.
        assert "namespace" not in stored["metadata"]
        assert stored["spec"]["secretNamespace"] == "dockyard-system"
        assert stored["spec"]["default"] is False
    finally:
        remove_backup_store(kubectl, name)
