"""The finalizer's passes over a deletionPolicy Snapshot, against an in-memory API server:
the uid recorded as the final snapshot is the one the create made, the name is recorded
before the create, and a pass that stopped in between is followed by one that takes the
Backup as its own instead of holding for good."""

from __future__ import annotations

import base64
import copy
import secrets
from datetime import timedelta
from typing import Any, cast

import pytest

from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.models.environment import Environment
from dockyard.core.resources import NAMESPACES, SECRETS, resource_type
from dockyard.core.settings import Settings
from dockyard.operator.database import ManagedPostgres, database_identity
from dockyard.operator.environments import deletion
from dockyard.operator.environments.reconciler import Reconciler
from dockyard.operator.environments.snapshots import final_snapshot, final_snapshot_name
from dockyard.operator.outcomes import Outcome

NAMESPACE, ENV = "team", "shop"
ENV_UID = "4f1c2a9e-0000-4000-8000-000000000001"
SNAPSHOT = final_snapshot_name(ENV, ENV_UID)
SETTINGS = Settings(default_backup_key_secret="team-backup-key")
ENVIRONMENTS = resource_type("dockyard.io/v1alpha1", "Environment")
BACKUPS = resource_type("dockyard.io/v1alpha1", "Backup")
ENV_PATH = ENVIRONMENTS.path(NAMESPACE, ENV)
BACKUP_PATH = BACKUPS.path(NAMESPACE, SNAPSHOT)
DATABASE_SECRET = SECRETS.path(NAMESPACE, f"{ENV}-database")
DELETED = "2026-03-10T12:00:00Z"
LATER = "2026-03-10T12:00:01Z"


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """JSON merge patch (RFC 7386) of ``patch`` into ``target``."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


class FakeKube:
    """Objects by path; a create is stamped with a uid and ``LATER``. ``on_create`` can
    replace what the create answers (or raise), ``on_record`` runs once a status write
    records the name with no uid yet; ``fail_status`` fails status writes whose
    finalSnapshot has a uid (a status write lost after the create)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.creates = 0
        self.on_create: Any = None
        self.on_record: Any = None
        self.fail_status = False

    async def get(self, path: str, **_: Any) -> dict[str, Any]:
        if path not in self.objects:
            raise KubeError(404, {"reason": "NotFound"})
        return copy.deepcopy(self.objects[path])

    async def create(self, path: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        where = f"{path}/{body['metadata']['name']}"
        if where in self.objects:
            raise KubeError(409, {"reason": "AlreadyExists"})
        self.creates += 1
        stored = copy.deepcopy(body)
        stored["metadata"].update(uid=f"made-{self.creates}", creationTimestamp=LATER)
        self.objects[where] = stored
        if self.on_create is not None:
            return cast(dict[str, Any], self.on_create(self, where, copy.deepcopy(stored)))
        return copy.deepcopy(stored)

    async def merge_patch(self, path: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        assert path == f"{ENV_PATH}/status", path
        status = body["status"]
        if self.fail_status and (status.get("finalSnapshot") or {}).get("uid"):
            raise KubeError(500, {"reason": "InternalError"})
        _merge(self.objects[ENV_PATH].setdefault("status", {}), status)
        if self.on_record is not None and self.recorded == {"name": SNAPSHOT, "uid": ""}:
            self.on_record(self)
        return copy.deepcopy(self.objects[ENV_PATH])

    async def delete(self, path: str, **_: Any) -> dict[str, Any]:
        self.objects.pop(path, None)
        return {}

    @property
    def recorded(self) -> dict[str, Any] | None:
        return cast(
            dict[str, Any] | None, self.objects[ENV_PATH].get("status", {}).get("finalSnapshot")
        )


class FakePostgres:
    """A database with no sessions left; records whether it was dropped."""

    def __init__(self) -> None:
        self.dropped = False

    async def made_elsewhere(self, **_: Any) -> bool:
        return False

    async def exists(self, **_: Any) -> bool:
        return True

    async def active_connections(self, **_: Any) -> int:
        return 0

    async def drop(self, **_: Any) -> None:
        self.dropped = True


@pytest.fixture
def kube() -> FakeKube:
    kube = FakeKube()
    kube.objects[ENV_PATH] = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Environment",
        "metadata": {
            "name": ENV,
            "namespace": NAMESPACE,
            "uid": ENV_UID,
            "generation": 1,
            "deletionTimestamp": DELETED,
            "finalizers": ["dockyard.io/operator"],
        },
        "spec": {
            "tier": "development",
            "image": "registry.example.com/shop:1.0",
            "database": {"deletionPolicy": "Snapshot"},
        },
        "status": {"phase": "Ready"},
    }
    kube.objects[NAMESPACES.path(None, NAMESPACE)] = {
        "metadata": {"name": NAMESPACE, "uid": "ns-1"}
    }
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    kube.objects[SECRETS.path(NAMESPACE, "team-backup-key")] = {"data": {"key": key}}
    # The environment's database Secret: the final snapshot logs in with it.
    role = database_identity(NAMESPACE, ENV)[1]
    login = {"username": role, "password": "tenant pw"}
    kube.objects[DATABASE_SECRET] = {
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in login.items()}
    }
    return kube


@pytest.fixture(autouse=True)
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    posted: list[tuple[str, str]] = []

    def post(raw: Any, *, reason: str, message: str, warning: bool = False) -> None:
        posted.append((reason, message))

    monkeypatch.setattr(deletion, "post", post)
    return posted


async def _pass(kube: FakeKube, postgres: FakePostgres | None = None) -> Outcome:
    reconciler = Reconciler(
        kube=cast(KubeClient, kube),
        postgres=cast(ManagedPostgres, postgres or FakePostgres()),
        settings=SETTINGS,
    )
    return await deletion.finalize(reconciler, (NAMESPACE, ENV), runtime=timedelta(0))


def _squat(kube: FakeKube, where: str) -> None:
    """Someone deletes the Backup just created and makes their own under the name."""
    kube.objects[where] = {
        **copy.deepcopy(kube.objects[where]),
        "metadata": {**kube.objects[where]["metadata"], "uid": "squat"},
        "spec": {"environmentRef": {"name": ENV}},
    }


def _copy_of_the_operators() -> dict[str, Any]:
    """A Backup made by someone else exactly as the operator makes its final snapshot,
    after the deletion began, and Completed."""
    env = Environment.model_validate(
        {
            "metadata": {"name": ENV, "namespace": NAMESPACE, "uid": ENV_UID},
            "spec": {"tier": "development", "image": "registry.example.com/shop:1.0",
                     "database": {"deletionPolicy": "Snapshot"}},
        }
    )  # fmt: skip
    manifest = final_snapshot(env, SETTINGS)
    manifest["metadata"].update(uid="copy", creationTimestamp=LATER)
    manifest["status"] = {"phase": "Completed"}
    return manifest


async def test_the_uid_recorded_is_the_one_the_create_made(
    kube: FakeKube, events: list[tuple[str, str]]
) -> None:
    """Deleted and made again between the create and a read: the read would find the
    squatter's uid, and record it as the deletion's own snapshot."""

    def squatted(kube: FakeKube, where: str, answer: dict[str, Any]) -> dict[str, Any]:
        _squat(kube, where)
        return answer

    kube.on_create = squatted

    await _pass(kube)

    assert kube.recorded == {"name": SNAPSHOT, "uid": "made-1"}
    assert sorted(reason for reason, _ in events) == ["FinalSnapshotStarted", "PhaseChanged"]
    # And the next pass holds on the squatter instead of waiting for it.
    held = await _pass(kube)
    assert held.retry is not None
    assert "not made by this deletion" in held.retry


async def test_the_name_is_recorded_before_the_create(kube: FakeKube) -> None:
    seen: list[Any] = []

    def look(kube: FakeKube, where: str, answer: dict[str, Any]) -> dict[str, Any]:
        seen.append(copy.deepcopy(kube.recorded))
        return answer

    kube.on_create = look

    await _pass(kube)

    assert seen == [{"name": SNAPSHOT, "uid": ""}]


async def test_after_a_lost_status_write_the_next_pass_adopts_its_backup(
    kube: FakeKube, events: list[tuple[str, str]]
) -> None:
    """The create was stored, the write of its uid failed (a crash there is the same):
    the next pass recognises the Backup and goes on, with no one needing to delete it."""
    kube.fail_status = True
    with pytest.raises(KubeError):
        await _pass(kube)
    assert kube.recorded == {"name": SNAPSHOT, "uid": ""}
    kube.fail_status = False

    outcome = await _pass(kube)

    assert kube.creates == 1
    assert kube.recorded == {"name": SNAPSHOT, "uid": "made-1"}
    assert outcome.retry is not None
    assert "Taking the final snapshot" in outcome.retry
    assert any(reason == "FinalSnapshotRecorded" for reason, _ in events)

    # Completed: the database goes.
    kube.objects[BACKUP_PATH]["status"] = {"phase": "Completed"}
    postgres = FakePostgres()
    assert await _pass(kube, postgres) == Outcome.done()
    assert postgres.dropped


async def test_after_a_lost_create_answer_the_next_pass_adopts_its_backup(
    kube: FakeKube,
) -> None:
    """The create timed out after the API server stored it."""

    def lost(kube: FakeKube, where: str, answer: dict[str, Any]) -> dict[str, Any]:
        raise TimeoutError

    kube.on_create = lost
    with pytest.raises(TimeoutError):
        await _pass(kube)
    kube.on_create = None
    kube.objects[BACKUP_PATH]["status"] = {"phase": "Completed"}
    postgres = FakePostgres()

    assert await _pass(kube, postgres) == Outcome.done()
    assert postgres.dropped
    assert kube.creates == 1


async def test_a_backup_that_took_the_name_during_the_create_is_not_adopted(
    kube: FakeKube,
) -> None:
    """Another Backup, made like the operator's, took the name between the pass's look and
    its create (409): the record goes back, and the next pass holds on it."""
    kube.on_record = lambda kube: kube.objects.setdefault(BACKUP_PATH, _copy_of_the_operators())

    await _pass(kube)

    assert kube.creates == 0
    assert kube.recorded is None
    held = await _pass(kube)
    assert held.retry is not None
    assert "not made by this deletion" in held.retry


async def test_a_copy_made_while_sessions_drain_is_not_adopted(kube: FakeKube) -> None:
    """Made after the deletion began, exactly like the operator's, before the operator
    created its own (no record): it holds, as one made before the deletion does."""
    kube.objects[BACKUP_PATH] = _copy_of_the_operators()
    postgres = FakePostgres()

    held = await _pass(kube, postgres)

    assert held.retry is not None
    assert "not made by this deletion" in held.retry
    assert kube.recorded is None
    assert not postgres.dropped


async def test_a_create_refused_as_the_namespace_goes_puts_the_record_back(
    kube: FakeKube,
) -> None:
    """Refused, nothing was stored: a Backup made under the name afterwards is not the
    operator's, and must not find a record saying it was being created."""

    def refuse(kube: FakeKube, where: str, answer: dict[str, Any]) -> dict[str, Any]:
        del kube.objects[where]
        raise KubeError(403, {"details": {"causes": [{"reason": "NamespaceTerminating"}]}})

    kube.on_create = refuse

    held = await _pass(kube)

    assert held.retry is not None
    assert "is being deleted" in held.retry
    assert kube.recorded is None


async def test_a_create_refused_otherwise_puts_the_record_back_and_says_why(
    kube: FakeKube,
) -> None:
    """A quota or an admission policy refusing the Backup: the status said Ready (the
    Deployment already gone) while Kopf retried the pass for ever."""

    def refuse(kube: FakeKube, where: str, answer: dict[str, Any]) -> dict[str, Any]:
        del kube.objects[where]
        raise KubeError(403, {"reason": "Forbidden", "message": "exceeded quota: backups"})

    kube.on_create = refuse

    held = await _pass(kube)

    assert held.retry is not None
    assert kube.recorded is None
    status = kube.objects[ENV_PATH]["status"]
    assert status["phase"] == "Deleting"
    [ready] = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "SnapshotFailed")
    assert "refused its Backup" in ready["message"]
    assert "exceeded quota: backups" in ready["message"]


async def test_a_create_whose_outcome_is_unknown_keeps_the_record(kube: FakeKube) -> None:
    def unknown(kube: FakeKube, where: str, answer: dict[str, Any]) -> dict[str, Any]:
        del kube.objects[where]
        raise KubeError(504, {"reason": "Timeout"})

    kube.on_create = unknown

    with pytest.raises(KubeError):
        await _pass(kube)

    assert kube.recorded == {"name": SNAPSHOT, "uid": ""}
    # Nothing was stored after all: the next pass creates it.
    kube.on_create = None
    await _pass(kube)
    assert kube.recorded == {"name": SNAPSHOT, "uid": "made-2"}


async def test_without_its_database_secret_no_snapshot_is_made_and_the_deletion_holds(
    kube: FakeKube,
) -> None:
    """A foreground deletion deletes the children first, the database Secret among them:
    a Backup could only spend its attempts failing to log in."""
    del kube.objects[DATABASE_SECRET]

    held = await _pass(kube)

    assert held.retry is not None
    assert "the database Secret of Environment shop does not exist" in held.retry
    assert "--cascade=foreground" in held.retry
    assert kube.creates == 0
    ready = next(c for c in kube.objects[ENV_PATH]["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "SnapshotFailed"
