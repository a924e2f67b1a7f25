"""What a Backup records as it starts: its Environment's tier (never a later namesake's),
and a start that neither revives nor resets a run cancelled meanwhile."""

from __future__ import annotations

from typing import Any, cast

from dockyard.core.models.backup import Backup, BackupPhase, BackupStatus
from dockyard.core.models.environment import Environment, Tier
from dockyard.operator.backups import starting
from dockyard.operator.store import KindStore, Loaded


class _Store:
    """One object of one kind, as a KindStore serves it: read, validated, status patched
    (with ``only_if`` asked of the object as it is)."""

    def __init__(self, raw: dict[str, Any] | None, model: type[Any]) -> None:
        self.raw, self.model, self.written = raw, model, []

    async def read(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.raw

    async def loaded(self, raw: dict[str, Any], **_: Any) -> Loaded[Any]:
        return Loaded(raw, self.model.model_validate(raw))

    async def write_status(
        self, namespace: str, name: str, status: dict[str, Any], *, uid: Any, only_if: Any = None
    ) -> bool:
        if only_if is not None and not only_if(self.raw or {}):
            return False
        self.written.append(status)
        return True


def _environment(created: str, tier: str = "production") -> dict[str, Any]:
    return {"metadata": {"name": "shop", "namespace": "team", "uid": "e-1",
                         "creationTimestamp": created},
            "spec": {"tier": tier, "image": "shop:1.0"}}  # fmt: skip


def _backup(created: str, phase: str | None = None) -> Loaded[Backup]:
    raw = {"metadata": {"name": "nightly", "namespace": "team", "uid": "b-1",
                        "creationTimestamp": created},
           "spec": {"environmentRef": {"name": "shop"}},
           "status": {"phase": phase} if phase else {}}  # fmt: skip
    return Loaded(raw, Backup.model_validate(raw))


async def _record(environment: dict[str, Any] | None, backup: Loaded[Backup]) -> tuple[Any, Any]:
    backups, environments = _Store(backup.raw, Backup), _Store(environment, Environment)
    tier = await starting.record_tier(
        cast(KindStore[Backup], backups), cast(KindStore[Environment], environments), backup
    )
    return tier, backups.written


async def test_the_tier_of_the_environment_it_backed_up_is_recorded() -> None:
    tier, written = await _record(
        _environment("2026-01-01T00:00:00Z"), _backup("2026-02-01T00:00:00Z")
    )
    assert tier is Tier.PRODUCTION
    assert written == [{"environmentTier": "production"}]


async def test_an_environment_made_again_after_the_backup_lends_it_no_tier() -> None:
    # Production "shop" was deleted (Retain) and made again as development: its old
    # backups are not development's, and stay unrecorded (the guard: production).
    tier, written = await _record(
        _environment("2026-03-01T00:00:00Z", "development"), _backup("2026-02-01T00:00:00Z")
    )
    assert (tier, written) == (None, [])
    assert await _record(None, _backup("2026-02-01T00:00:00Z")) == (None, [])


async def test_a_run_cancelled_before_its_start_is_written_stays_cancelled() -> None:
    loaded = _backup("2026-02-01T00:00:00Z", BackupPhase.PENDING.value)
    backups = _Store({**loaded.raw, "status": {"phase": "Failed"}}, Backup)  # Replace won
    started = loaded.resource.status.running("Attempt 1 running", attempt=1)
    assert not await starting.begin(cast(KindStore[Backup], backups), loaded, started)
    await starting.undo_begin(cast(KindStore[Backup], backups), loaded)
    assert backups.written == []

    backups.raw = dict(loaded.raw)  # still Pending: the start goes through
    assert await starting.begin(cast(KindStore[Backup], backups), loaded, started)
    assert backups.written[0]["phase"] == "Running"
    assert isinstance(loaded.resource.status, BackupStatus)
