"""A parallel restore's spool (a decrypted dump) left by a crash is removed at start-up,
and only this pod's: another replica's, on a volume they share, may be in use."""

from __future__ import annotations

import socket
from pathlib import Path

from dockyard.runner.streaming import remove_stale_spools, spool_prefix


def _spool(directory: Path, name: str) -> Path:
    path = directory / name
    path.mkdir()
    (path / "dump").write_bytes(b"PGDMP decrypted rows")
    return path


def test_only_this_hosts_left_spools_are_removed(tmp_path: Path) -> None:
    host = socket.gethostname()
    assert spool_prefix() == f"dockyard-restore-{host}+"
    own = _spool(tmp_path, f"{spool_prefix()}k2j4")
    other_replica = _spool(tmp_path, "dockyard-restore-operator-7d9f-b2c4+x1")
    longer_name = _spool(tmp_path, f"dockyard-restore-{host}-2+x2")  # another host's
    unrelated = _spool(tmp_path, "something-else")
    a_file = tmp_path / f"{spool_prefix()}not-a-directory"
    a_file.write_text("kept")

    assert remove_stale_spools(tmp_path) == [own.name]

    assert not own.exists()
    assert other_replica.exists()
    assert longer_name.exists()
    assert unrelated.exists()
    assert a_file.exists()


def test_a_spool_directory_not_made_yet_is_no_error(tmp_path: Path) -> None:
    assert remove_stale_spools(tmp_path / "not-there") == []
