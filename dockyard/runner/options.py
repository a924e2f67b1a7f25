"""How a backup or a restore is run: the knobs, with the product's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field

from dockyard.runner.envelope import DEFAULT_CHUNK_SIZE


@dataclass(frozen=True)
class Tools:
    """The external programs a runner uses (names on PATH, or absolute paths)."""

    pg_dump: str = "pg_dump"
    pg_restore: str = "pg_restore"
    zstd: str = "zstd"


@dataclass(frozen=True)
class BackupOptions:
    """How a backup is taken; the defaults are the product's."""

    compression_level: int = 3
    # One zstd thread: on a small node pg_dump and its server already use the other
    # cores, and measured here a second compression thread made the dump slower.
    compression_threads: int = 1
    chunk_size: int = DEFAULT_CHUNK_SIZE
    # pg_dump waits this long for a table lock before failing instead of hanging
    # behind a long ALTER TABLE.
    lock_wait_timeout_seconds: float = 120.0
    tools: Tools = field(default_factory=Tools)

    def __post_init__(self) -> None:
        if not 1 <= self.compression_level <= 19:
            raise ValueError("zstd compression level must be 1 to 19")
        if not 0 <= self.compression_threads <= 64:
            raise ValueError("compression threads must be 0 (all cores) to 64")


@dataclass(frozen=True)
class RestoreOptions:
    """How a restore is run."""

    # SET ROLE after connecting: restored objects belong to this role (the target
    # environment's), not to whoever owned them in the source.
    role: str | None = None
    # Refuse a target that already has tables, views or sequences: a restore goes into
    # a fresh database, which the caller switches to only when the restore succeeded.
    require_empty: bool = True
    # Parallel restore: with a spool directory (scratch space on the runner's volume),
    # the verified, decrypted dump is spooled there in one read of the artifact and
    # restored by ``pg_restore --jobs``; without one, it streams into one
    # ``--single-transaction`` pg_restore.
    jobs: int = 1
    spool_dir: str | None = None
    tools: Tools = field(default_factory=Tools)

    def __post_init__(self) -> None:
        if not 1 <= self.jobs <= 64:
            raise ValueError("restore jobs must be 1 to 64")

    @property
    def parallel(self) -> bool:
        return self.jobs > 1 and self.spool_dir is not None
