"""The test bed's PostgreSQL: one throwaway cluster on loopback, run as ``postgres``.

It hosts the platform database (``dockyard``) and, through the same superuser, the
environments' databases. Durability is traded for speed (``fsync=off``): the cluster
lives only as long as the test bed.
"""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
from pathlib import Path

from dockyard.testbed.config import TestbedConfig
from dockyard.testbed.processes import Launcher, TestbedError, accepts, free_port, run_as

# The server's own user: initdb and postgres refuse to run as root.
SYSTEM_USER = "postgres"
SUPERUSER = "dockyard"


def start(launcher: Launcher) -> str:
    """Initialise and start the server, create the platform database; its URL."""
    pg_bin = server_binaries(launcher.config)
    home = launcher.dir / "postgres"
    home.mkdir()
    owner = pwd.getpwnam(SYSTEM_USER)
    os.chown(home, owner.pw_uid, owner.pw_gid)
    password = secrets.token_urlsafe(18)
    pwfile = home / "pwfile"
    pwfile.write_text(password + "\n")
    os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    pwfile.chmod(0o600)
    launcher.progress("postgres: initdb")
    result = _run(
        [
            str(pg_bin / "initdb"),
            "-D",
            str(home / "data"),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        ],
        cwd=home,
    )
    pwfile.unlink()
    if result.returncode != 0:
        raise TestbedError(f"initdb failed:\n{result.stdout}{result.stderr}")
    port = free_port()
    launcher.spawn(
        "postgres",
        [
            str(pg_bin / "postgres"),
            "-D",
            str(home / "data"),
            "-p",
            str(port),
            "-k",
            str(home),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=300",
        ],
        user=SYSTEM_USER,
    )
    launcher.wait_until("postgres", lambda: accepts(port), "accepting connections")
    # The platform database; the server's superuser also manages environment databases.
    created = _run(
        [
            str(pg_bin.parent / "bin" / "psql"),
            "-h",
            str(home),
            "-p",
            str(port),
            "-U",
            SUPERUSER,
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            "CREATE DATABASE dockyard",
        ]
    )
    if created.returncode != 0 and "already exists" not in created.stderr:
        raise TestbedError(f"creating the platform database failed: {created.stderr}")
    return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port}/dockyard"


def server_binaries(config: TestbedConfig) -> Path:
    """The directory of the server binaries: the configured one, else the newest installed."""
    if config.postgres_bin:
        return config.postgres_bin
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise TestbedError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql; "
            "run 'make bootstrap' (apt-get install postgresql)"
        )
    return candidates[-1].parent


def _run(argv: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool as the server's user, capturing its output."""
    return subprocess.run(
        argv, capture_output=True, text=True, check=False, cwd=cwd, **run_as(SYSTEM_USER)
    )
