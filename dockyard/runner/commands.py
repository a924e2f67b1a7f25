"""``dockyard backup-run`` and ``dockyard restore-run``: the runner as a Job's command.

The argument parsing lives in ``dockyard.cli``; this module turns the parsed arguments
and the settings into one call of :func:`run_backup`, :func:`run_restore` or
:func:`verify_artifact`, the very functions the operator calls inline.

The contract with whoever runs the Job:

- Secrets never come on the command line. The database DSN comes from
  ``DOCKYARD_BACKUP_SOURCE_DSN`` / ``DOCKYARD_RESTORE_TARGET_DSN`` and the key from
  ``--key-file`` (a mounted Secret; preferred) or ``DOCKYARD_BACKUP_KEY``. S3
  credentials come from botocore's own chain (``AWS_*`` variables, web identity).
- stdout carries exactly one JSON document: the result model on success, or
  ``{"error": {"reason": ..., "message": ...}}`` on failure, so the Job's log (or its
  termination message) can be copied into the status as it is. Logs go to stderr.
- ``--result-file`` writes the same document to a file as well: a runner Job points it
  at the container's termination message (``/dev/termination-log``), which is how the
  operator reads a Job's result without reading its logs.
- Exit status: 0 done, 1 the run failed (one line on stderr says why), 2 wrong usage.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import json
import os
import re
import sys
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind

from dockyard.core import telemetry
from dockyard.runner.errors import BackupError
from dockyard.runner.keys import EncryptionKey, Keyring, check_key_id
from dockyard.runner.libpq import with_database
from dockyard.runner.options import BackupOptions, RestoreOptions
from dockyard.runner.results import BackupResult
from dockyard.runner.runner import run_backup, run_restore, verify_artifact
from dockyard.runner.storage import Store, check_name, check_sha256, connect_storage

if TYPE_CHECKING:
    from pydantic import BaseModel, SecretStr

    from dockyard.core.settings import Settings

_DATABASE_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")

EXIT_FAILED = 1
EXIT_USAGE = 2

_Run = Callable[[], Coroutine[Any, Any, "BaseModel"]]
_Check = Callable[[str], str]


class UsageError(Exception):
    """Wrong arguments or settings: one line, exit status 2."""


def backup_run(args: argparse.Namespace, settings: Settings) -> int:
    """``dockyard backup-run``: dump, compress, encrypt, store, print the result."""
    command = "dockyard backup-run"
    try:
        dsn = _secret(settings.backup_source_dsn, "DOCKYARD_BACKUP_SOURCE_DSN", "source")
        key = _key(args, settings)
        name = _checked(check_name, args.name)
        options = BackupOptions(compression_level=args.compression_level)
    except (UsageError, ValueError) as exc:
        return _usage(command, str(exc))

    report_to = getattr(args, "report_backup", None)

    async def go() -> BaseModel:
        async with _storage(args, settings) as storage:
            result = await run_backup(dsn=dsn, storage=storage, name=name, key=key, options=options)
            if report_to:
                # A Backup that went, or refused the report, leaves the artifact to nobody:
                # its finalizer may have looked for artifacts before this one was stored.
                try:
                    kept = await _report_to_backup(report_to, result, settings)
                except _ReportRefused as exc:
                    await storage.delete(name)
                    raise ReportFailed(f"{exc}; {name} was removed") from None
                if not kept:
                    await storage.delete(name)
                    raise BackupDeleted(
                        f"Backup {report_to} was deleted while this run stored its "
                        f"artifact; {name} was removed"
                    )
        return result

    return _report(command, go, args.result_file)


async def _report_to_backup(target: str, result: BackupResult, settings: Settings) -> bool:
    """Patch the Backup ``namespace/name``'s status with the committed artifact; whether
    the Backup keeps it (False: the Backup is gone or being deleted). ``_ReportRefused``
    when the apiserver refuses the report (401, 403).

    Only the artifact's fields (``BackupStatus.ARTIFACT_FIELDS``) are patched. The phase
    stays Running: the operator, following the Job, catalogues the artifact and then
    writes Completed (``dockyard.operator.backups.lifecycle``).
    """
    import os

    from dockyard.core.kube import KubeClient, KubeError, load_config
    from dockyard.core.models.backup import BackupStatus
    from dockyard.core.resources import BACKUPS

    namespace, _, backup = target.partition("/")
    path = BACKUPS.path(namespace, backup, "status")
    stored = BackupStatus().with_artifact(
        location=result.location,
        size=result.size,
        sha256=result.sha256,
        key_id=result.key_id,
        tables=result.manifest,
        completed_at=result.finished_at,
    )
    patch = {"status": stored.body(include=BackupStatus.ARTIFACT_FIELDS)}
    try:
        kube = KubeClient.connect(load_config(settings.kubeconfig, os.environ))
    except ValueError as exc:  # KubeconfigError: it says what to fix
        raise ReportFailed(f"could not report to Backup {target}: {exc}") from None
    try:
        updated = await _patched(kube, path, patch, target)
    except KubeError as exc:
        if exc.status == 404:
            return False
        if exc.status in (401, 403):
            # Not this runner's to write to (any more): its identity went with its
            # Backup, or the name belongs to a later Backup (the admission policy).
            raise _ReportRefused(
                f"could not report to Backup {target}: {exc.status} {exc.reason}"
            ) from None
        raise ReportFailed(
            f"could not report to Backup {target}: {exc.status} {exc.reason}"
        ) from None
    finally:
        await kube.close()
    return not (updated.get("metadata") or {}).get("deletionTimestamp")


# A report that cannot reach the apiserver is tried this many times, a second more apart
# each time: the artifact is stored, and only the report makes it the Backup's.
REPORT_ATTEMPTS = 3


async def _patched(kube: Any, path: str, patch: dict[str, Any], target: str) -> dict[str, Any]:
    """``kube.merge_patch(path, patch)``; tried again while the apiserver cannot be
    reached, then ``ReportFailed`` (the artifact stays: the Backup's finalizer deletes
    every attempt's, and the operator counts a run that reported nothing as failed)."""
    import aiohttp

    for attempt in range(1, REPORT_ATTEMPTS + 1):
        try:
            return dict(await kube.merge_patch(path, patch))
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            if attempt == REPORT_ATTEMPTS:
                why = str(exc) or type(exc).__name__
                raise ReportFailed(
                    f"could not report to Backup {target}: cannot reach the apiserver "
                    f"({why}) after {REPORT_ATTEMPTS} attempts"
                ) from None
            await asyncio.sleep(attempt)
    raise AssertionError("unreachable")


class ReportFailed(BackupError):
    """The artifact is stored but the Backup's status could not be patched."""

    reason = "ReportFailed"


class _ReportRefused(Exception):
    """The apiserver refused the report (401, 403): the artifact is nobody's."""


class BackupDeleted(BackupError):
    """The Backup went while its artifact was being stored: the artifact is removed."""

    reason = "BackupDeleted"


def restore_run(args: argparse.Namespace, settings: Settings) -> int:
    """``dockyard restore-run``: verify, decrypt, decompress, pg_restore; or only verify."""
    command = "dockyard restore-run"
    try:
        key = _key(args, settings)
        name = _checked(check_name, args.name)
        sha256 = _checked(check_sha256, args.sha256)
        dsn = (
            ""
            if args.verify_only
            else _secret(settings.restore_target_dsn, "DOCKYARD_RESTORE_TARGET_DSN", "target")
        )
        if dsn and args.database:
            dsn = with_database(dsn, _checked(check_database_name, args.database))
        spool_dir = args.spool_dir or settings.restore_spool_dir
        options = RestoreOptions(
            role=args.role,
            require_empty=not args.allow_nonempty,
            jobs=args.jobs or settings.restore_jobs,
            spool_dir=str(spool_dir) if spool_dir else None,
        )
    except (UsageError, ValueError) as exc:
        return _usage(command, str(exc))

    async def go() -> BaseModel:
        async with _storage(args, settings) as storage:
            if args.verify_only:
                return await verify_artifact(
                    storage=storage, name=name, expected_sha256=sha256, keys=Keyring.of(key)
                )
            return await run_restore(
                dsn=dsn,
                storage=storage,
                name=name,
                expected_sha256=sha256,
                keys=key,
                options=options,
            )

    return _report(command, go, args.result_file)


def _report(command: str, go: _Run, result_file: Path | None = None) -> int:
    try:
        # A runner Job continues the trace of the reconcile that created it (TRACEPARENT).
        with telemetry.current_span(
            _tracer(),
            command.removeprefix("dockyard "),
            kind=SpanKind.CONSUMER,
            context=telemetry.continued(os.environ.get(telemetry.TRACEPARENT_VARIABLE)),
        ):
            outcome = asyncio.run(_settled(go))
    except ValueError as exc:
        # A storage URL that cannot be used is a usage problem, found on first use.
        return _usage(command, str(exc))
    if isinstance(outcome, tuple):
        reason, message = outcome
        _emit(json.dumps({"error": {"reason": reason, "message": message}}), result_file)
        print(f"{command}: {reason}: {message}", file=sys.stderr)
        return EXIT_FAILED
    _emit(outcome.model_dump_json(), result_file)
    return 0


def _tracer() -> trace.Tracer:
    """Spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set, through the global
    provider (the runner library's spans too), installed here unless a component did."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        tracing = telemetry.build_tracing(
            telemetry.TelemetrySettings(), default_service_name="dockyard-runner"
        )
        trace.set_tracer_provider(tracing.provider)
        atexit.register(tracing.provider.shutdown)  # flushes before the process ends
    return trace.get_tracer(__name__)


async def _settled(go: _Run) -> BaseModel | tuple[str, str]:
    """``go``'s result, or its ``BackupError`` as (reason, message).

    A failed run's frames hold what it had open (pipes, transports). They are collected
    here, while the event loop still runs, so their finalizers can schedule their last
    callbacks; collected after the loop closed, one would print "Event loop is closed"
    on stderr after the command's one last line.
    """
    try:
        return await go()
    except BackupError as exc:
        failure = (exc.reason, exc.message)
    gc.collect()
    for _ in range(3):
        await asyncio.sleep(0)  # the finalizers' callbacks run
    return failure


def _emit(document: str, result_file: Path | None) -> None:
    print(document)
    if result_file is None:
        return
    try:
        result_file.write_text(document + "\n", encoding="utf-8")
    except OSError as exc:
        # The run itself is done; stdout still carries the document.
        print(f"cannot write --result-file {result_file}: {exc.strerror}", file=sys.stderr)


def _key(args: argparse.Namespace, settings: Settings) -> EncryptionKey:
    key_id = _checked(check_key_id, args.key_id)
    if args.key_file is not None:
        path = Path(args.key_file)
        try:
            material: bytes | str = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read --key-file {path}: {exc.strerror}") from None
    elif settings.backup_key is not None:
        material = settings.backup_key.get_secret_value()
    else:
        raise UsageError("give the encryption key with --key-file or DOCKYARD_BACKUP_KEY")
    return EncryptionKey.from_secret_value(key_id, material)


def _secret(value: SecretStr | None, variable: str, what: str) -> str:
    if value is None or not value.get_secret_value():
        raise UsageError(f"set {variable} to the {what} database's DSN (never on the command line)")
    return value.get_secret_value()


def check_database_name(name: str) -> str:
    """``name`` if it is a plain PostgreSQL database name (what the operator creates)."""
    if not _DATABASE_NAME.fullmatch(name):
        raise ValueError(
            f"--database {name!r} is not a database name: lowercase letters, digits and "
            "underscores, starting with a letter, at most 63"
        )
    return name


def _checked(check: _Check, value: str) -> str:
    try:
        return check(value)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _storage(args: argparse.Namespace, settings: Settings) -> AbstractAsyncContextManager[Store]:
    """The storage ``--storage`` names, with the S3 options and deadline."""
    return connect_storage(
        args.storage,
        s3_endpoint_url=args.s3_endpoint_url,
        s3_region=args.s3_region,
        s3_part_timeout=settings.s3_part_timeout,
        s3_concurrency=settings.s3_upload_concurrency,
    )


def _usage(command: str, message: str) -> int:
    print(f"{command}: {message} (see '{command} --help')", file=sys.stderr)
    return EXIT_USAGE
