"""The ``dockyard`` command: run the API or the operator, manage the test bed, migrate,
and generate the CRDs and the OpenAPI document.

It also runs the whole platform locally (``dev``) and is a runner Job's command:
``backup-run`` and ``restore-run`` hand one backup or restore to ``dockyard.runner``.

Wrong usage prints one line that says what to fix and exits with status 2. Heavy
imports happen inside each command, so ``dockyard --help`` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import re
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

from dockyard import __version__

if TYPE_CHECKING:
    from dockyard.core.settings import Settings

EXIT_USAGE = 2
_T = TypeVar("_T")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error instead of usage plus message."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dockyard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"dockyard {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    api = commands.add_parser("api", help="run the REST API")
    api.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    api.add_argument("--port", type=_port, default=8080, help="port to bind (default 8080)")

    operator = commands.add_parser("operator", help="run the Kopf operator")
    operator.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; default all)",
    )

    dev = commands.add_parser("dev", help="start the whole platform locally (make dev)")
    dev.add_argument("--port", type=_port, default=8080, help="API port (default 8080)")

    testbed = commands.add_parser("testbed", help="the local control plane, Postgres and Redis")
    actions = testbed.add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=_Parser
    )
    actions.add_parser("up", help="build (once) and start the test bed")
    actions.add_parser("down", help="stop every test bed process and remove its files")
    actions.add_parser("env", help='print shell exports: eval "$(dockyard testbed env)"')
    actions.add_parser("status", help="show the test bed's processes")
    user = actions.add_parser("user", help="print a bearer token for a user")
    user.add_argument("name", help="the user name the apiserver will see")
    user.add_argument("--group", action="append", default=[], help="a group (repeatable)")
    user.add_argument("--ttl", type=int, default=3600, help="token lifetime in seconds")

    migrate = commands.add_parser("migrate", help="apply the platform database migrations")
    migrate.add_argument("--status", action="store_true", help="list migrations, apply none")

    for name, what in (
        ("crds", "crds/"),
        ("openapi", "specs/openapi.yaml"),
        ("events", "specs/events/"),
        ("reference", "docs/api-operations.md"),
    ):
        gen = commands.add_parser(name, help=f"generate {what} from the code")
        gen.add_argument(
            "--check",
            action="store_true",
            help="exit 1 when the committed files differ from the code",
        )
        gen.add_argument("--out", type=Path, help=f"where to write (default {what})")
    spec = commands.choices["openapi"]
    spec.add_argument(
        "--released",
        type=Path,
        default=Path("specs/released"),
        help="released documents; --check fails on breaking changes against the newest "
        "(default specs/released)",
    )
    spec.add_argument(
        "--release",
        action="store_true",
        help="keep the current document as --released/openapi-<info.version>.yaml",
    )
    _backup_parsers(commands)
    return parser


def _backup_parsers(commands: argparse._SubParsersAction[_Parser]) -> None:
    """backup-run and restore-run: secrets come from the environment, never from argv."""
    backup = commands.add_parser(
        "backup-run",
        help="back up the database in DOCKYARD_BACKUP_SOURCE_DSN; prints the result as JSON",
    )
    restore = commands.add_parser(
        "restore-run",
        help="restore an artifact into the empty database in DOCKYARD_RESTORE_TARGET_DSN",
    )
    for sub in (backup, restore):
        sub.add_argument(
            "--storage", required=True, help="file:///path (a PVC) or s3://bucket/prefix"
        )
        sub.add_argument("--name", required=True, help="the artifact's name in the storage")
        sub.add_argument("--key-id", required=True, help="id of the encryption key")
        sub.add_argument(
            "--key-file",
            type=Path,
            help="file holding the key (a mounted Secret); default DOCKYARD_BACKUP_KEY",
        )
        sub.add_argument("--s3-endpoint-url", help="S3-compatible endpoint")
        sub.add_argument("--s3-region", help="S3 region")
        sub.add_argument(
            "--result-file",
            type=Path,
            help="also write the JSON document here (a Job's /dev/termination-log)",
        )
    backup.add_argument(
        "--compression-level", type=int, default=3, help="zstd level, 1 to 19 (default 3)"
    )
    backup.add_argument(
        "--report-backup",
        metavar="NAMESPACE/NAME",
        help="patch this Backup's status with the artifact (in a runner Job, in-cluster)",
    )
    restore.add_argument("--sha256", required=True, help="the artifact's recorded sha256")
    restore.add_argument("--role", help="role that owns the restored objects")
    restore.add_argument(
        "--database",
        help="restore into this database on DOCKYARD_RESTORE_TARGET_DSN's server, as its user",
    )
    restore.add_argument(
        "--allow-nonempty", action="store_true", help="restore even if the target has tables"
    )
    restore.add_argument(
        "--jobs",
        type=int,
        help="pg_restore --jobs with a spool directory (default DOCKYARD_RESTORE_JOBS, 4)",
    )
    restore.add_argument(
        "--spool-dir",
        help="scratch directory for a parallel restore (default DOCKYARD_RESTORE_SPOOL_DIR; "
        "unset: one streamed transaction)",
    )
    restore.add_argument(
        "--verify-only",
        action="store_true",
        help="check checksum, key and the whole dump without any database",
    )


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be between 1 and 65535, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {
        "api": _cmd_api,
        "operator": _cmd_operator,
        "dev": _cmd_dev,
        "testbed": _cmd_testbed,
        "migrate": _cmd_migrate,
        "crds": _cmd_crds,
        "openapi": _cmd_openapi,
        "events": _cmd_events,
        "reference": _cmd_reference,
        "backup-run": _cmd_backup_run,
        "restore-run": _cmd_restore_run,
    }[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130


def _settings() -> Settings:
    from dockyard.core.settings import Settings

    return _load_settings(Settings, "DOCKYARD_")


def _load_settings(load: Callable[[], _T], prefix: str) -> _T:
    """``load()``, or one line naming the variable that is wrong, and exit status 2.

    pydantic-settings parses a list from JSON before pydantic sees it: a plain value
    (``10.0.0.0/8``) raises its ``SettingsError``, which names only the field.
    """
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        return load()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = prefix + "_".join(str(p) for p in first["loc"]).upper()
        print(f"dockyard: invalid setting {field}: {first['msg']}", file=sys.stderr)
    except SettingsError as exc:
        named = re.search(r'field "(\w+)"', str(exc))
        field = prefix + named[1].upper() if named else f"{prefix}*"
        print(
            f"dockyard: invalid setting {field}: not JSON; a list is written in JSON, "
            'e.g. \'["10.0.0.0/8", "192.168.0.0/16"]\'',
            file=sys.stderr,
        )
    raise SystemExit(EXIT_USAGE)


def _logging_settings() -> Settings:
    """The settings, with logging configured as they say: for the long-running commands."""
    from dockyard.core import logs

    settings = _settings()
    logs.configure(settings.log_level, settings.log_format)
    return settings


def _cmd_api(args: argparse.Namespace) -> int:
    from dockyard.api import server
    from dockyard.core.db import DatabaseUnreachable

    settings = _logging_settings()
    try:
        server.run(settings, host=args.host, port=args.port)
    except server.ConfigurationError as exc:
        print(f"dockyard api: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DatabaseUnreachable as exc:
        print(f"dockyard api: {exc}", file=sys.stderr)
        return 1
    except socket.gaierror as exc:  # --host is a name that does not resolve
        reason = exc.strerror or exc
        print(f"dockyard api: cannot listen: --host {args.host!r}: {reason}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        print(f"dockyard api: cannot listen: {exc}", file=sys.stderr)  # names the address
        return 1
    return 0


def _cmd_operator(args: argparse.Namespace) -> int:
    from dockyard.operator import main as operator_main

    settings = _logging_settings()
    _require_kubeconfig("operator", settings)
    return operator_main.run(settings, namespaces=args.namespace)


def _require_kubeconfig(command: str, settings: Settings) -> None:
    """Stop with one line when there is no usable way to the apiserver."""
    import os

    from dockyard.core.kubeconfig import KubeconfigError, load_config

    try:
        load_config(settings.kubeconfig, os.environ)
    except KubeconfigError as exc:
        print(f"dockyard {command}: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def _cmd_dev(args: argparse.Namespace) -> int:
    from dockyard.testbed import dev
    from dockyard.testbed.config import TestbedConfig

    _load_settings(TestbedConfig, "DOCKYARD_TESTBED_")  # one line, not dev's traceback
    return dev.run(api_port=args.port)


def _cmd_testbed(args: argparse.Namespace) -> int:
    from dockyard.testbed.build import BuildError
    from dockyard.testbed.cluster import Testbed, TestbedError
    from dockyard.testbed.config import TestbedConfig

    testbed = Testbed(_load_settings(TestbedConfig, "DOCKYARD_TESTBED_"))
    try:
        if args.action == "up":
            state, already = testbed.up()
            if already:
                print(f"test bed already up (kubeconfig {state.kubeconfig})")
            else:
                print(f"test bed up (kubeconfig {state.kubeconfig})")
            print('next: eval "$(dockyard testbed env)"')
        elif args.action == "down":
            print("test bed stopped" if testbed.down() else "test bed was not up")
        elif args.action == "env":
            print(testbed.require().env_exports())
        elif args.action == "status":
            rows = testbed.status()
            if not rows:
                print("test bed is down")
                return 1
            for name, pid, alive in rows:
                print(f"{name:<24} pid {pid:<8} {'running' if alive else 'GONE'}")
            return 0 if all(alive for _, _, alive in rows) else 1
        elif args.action == "user":
            print(testbed.user_token(args.name, args.group, ttl_seconds=args.ttl))
    except (TestbedError, BuildError) as exc:
        print(f"dockyard testbed {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    import asyncpg

    from dockyard.core import migrations
    from dockyard.core.db import DatabaseUnreachable
    from dockyard.core.redaction import redact, typed_passwords

    settings = _settings()

    async def go() -> int:
        # A plain connection, not a pool: a long migration must not hit pool timeouts.
        # As the owner: the runtime role of DOCKYARD_DATABASE_URL may not create tables.
        dsn = settings.migration_database_dsn()
        try:
            conn = await asyncpg.connect(dsn)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            setting = "DOCKYARD_MIGRATION_DATABASE_URL, else DOCKYARD_DATABASE_URL"
            refused = DatabaseUnreachable(setting, exc, dsn=dsn)
            print(f"dockyard migrate: {refused}", file=sys.stderr)
            return 1
        step = "reading the migrations' status" if args.status else "migrating"
        try:
            if args.status:
                for row in await migrations.status(conn):
                    applied = row.applied_at.isoformat() if row.applied_at else "-"
                    print(f"{row.version:04d} {row.name:<40} {row.state.value:<8} {applied}")
                return 0
            try:
                done = await migrations.migrate(conn)
            except migrations.MigrationError as exc:
                print(f"dockyard migrate: {exc}", file=sys.stderr)
                return 1
            # Before the runtime role gets its rights: from then on, its purges keep
            # to the retentions configured here.
            step = "writing the retention floors"
            await migrations.set_retention_floors(
                conn,
                audit_days=settings.audit_retention_days,
                event_days=settings.event_retention_days,
            )
            runtime = urlsplit(settings.database_dsn()).username
            if runtime and runtime != await conn.fetchval("SELECT current_user"):
                step = f"granting the runtime role {runtime} (DOCKYARD_DATABASE_URL) its rights"
                await migrations.grant_runtime(conn, runtime)
                print(f"granted the runtime role {runtime} its rights")
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # What the server said (a missing role, no right on the schema), in one line:
            # never the DSN, nor a password a misparsed one put in a name.
            reason = " ".join((str(exc) or type(exc).__name__).split())
            reason = redact(
                reason, *typed_passwords(dsn), *typed_passwords(settings.database_dsn())
            )
            print(f"dockyard migrate: {step} failed: {reason}", file=sys.stderr)
            return 1
        finally:
            await conn.close()
        for migration in done:
            print(f"applied {migration.version:04d} {migration.name}")
        if not done:
            print("database is up to date")
        return 0

    return asyncio.run(go())


def _cmd_crds(args: argparse.Namespace) -> int:
    from dockyard.contract import generate

    return generate.crds(args)


def _cmd_events(args: argparse.Namespace) -> int:
    from dockyard.contract import generate

    return generate.events(args)


def _cmd_reference(args: argparse.Namespace) -> int:
    from dockyard.contract import generate

    return generate.reference(args)


def _cmd_openapi(args: argparse.Namespace) -> int:
    from dockyard.contract import generate

    return generate.openapi(args)


def _cmd_backup_run(args: argparse.Namespace) -> int:
    from dockyard.runner import commands

    return commands.backup_run(args, _logging_settings())


def _cmd_restore_run(args: argparse.Namespace) -> int:
    from dockyard.runner import commands

    return commands.restore_run(args, _logging_settings())


if __name__ == "__main__":
    sys.exit(main())
