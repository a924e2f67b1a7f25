"""What a BackupStore held by its Backups says: how many, and the first few by name."""

from __future__ import annotations

from dockyard.operator.runs.store_deletion import blocked_message


def test_the_message_counts_every_backup_and_names_the_first_five() -> None:
    using = [f"team-{n}/nightly" for n in range(7)]
    message = blocked_message(using)
    assert message.startswith("Deletion waits for 7 Backup(s) that name this store: ")
    assert "team-0/nightly, team-1/nightly, team-2/nightly, team-3/nightly, team-4/nightly" in (
        message
    )
    assert "and 2 more" in message
    assert "team-5/nightly" not in message


def test_one_backup_is_named_alone() -> None:
    message = blocked_message(["shop/first"])
    assert "1 Backup(s) that name this store: shop/first. Delete them first" in message
    assert "more" not in message
