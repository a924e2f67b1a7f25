"""``kubectl-dockyard``: the command line. kubectl finds the executable on PATH and runs it
for ``kubectl dockyard ...``; it can also be run on its own.

Exit status: 0 done; 1 the operation failed or the cluster refused it; 2 the command line
is wrong. Every error is one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

import aiohttp
from rich.console import Console
from rich.prompt import Confirm
from rich.segment import Segment

from dockyard import __version__
from dockyard.core.exec_credentials import ExecCredentialError
from dockyard.core.kube import KubeClient, KubeError
from dockyard.plugin import approvals, commands
from dockyard.plugin.commands import PluginError, RestoreSource, Session
from dockyard.plugin.config import ConfigError, resolve

PROG = "kubectl dockyard"
USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, as every other error: what is wrong and where to look.
        self.exit(USAGE_ERROR, printable(f"{self.prog}: {message} (see {self.prog} --help)") + "\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Dockyard's flows from kubectl's own kubeconfig.")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument("-n", "--namespace", help="namespace (default: the context's, else default)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("status", help="an environment, its database, backups, drills and RPO")
    s.add_argument("environment")

    b = sub.add_parser("backup", help="back an environment up now")
    b.add_argument("environment")
    b.add_argument("--name", help="the Backup's name (default: <env>-manual-<time>)")
    b.add_argument("--schedule", help="BackupSchedule whose storage and key to use")
    b.add_argument("--wait", action="store_true", help="wait until it completed or failed")
    b.add_argument("--timeout", type=_seconds, default=1800.0, help="seconds to wait")

    sub.add_parser("stores", help="the BackupStores, and which of them serve the namespace")

    r = sub.add_parser("restore", help="plan, create, approve or reject, and follow restores")
    rs = r.add_subparsers(dest="action", required=True, parser_class=_Parser)
    plan = rs.add_parser("plan", help="make a dry-run Restore and show its plan")
    create = rs.add_parser("create", help="carry out a planned Restore, or create one")
    for q in (plan, create):
        q.add_argument("name")
        q.add_argument("--backup", help="restore this Backup")
        q.add_argument("--env", dest="source_env", help="restore this environment's newest")
        q.add_argument(
            "--latest-verified", action="store_true", help="with --env: the newest drilled"
        )
        q.add_argument("--into", help="target environment (default: in place)")
        q.add_argument("--no-safety-backup", action="store_true", help="skip the safety backup")
        q.add_argument("--job", action="store_true", help="restore in a runner Job")
    plan.add_argument("--timeout", type=_seconds, default=120.0, help="seconds to wait")
    approve = rs.add_parser("approve", help="show a Restore's plan, then approve it")
    approve.add_argument("name")
    approve.add_argument("--yes", action="store_true", help="approve without asking")
    reject = rs.add_parser("reject", help="show a Restore's plan, then reject it")
    reject.add_argument("name")
    reject.add_argument("--reason", help="why (one line, shown in its status)")
    reject.add_argument("--yes", action="store_true", help="reject without asking")
    wait = rs.add_parser("wait", help="follow a Restore to its end, with progress")
    wait.add_argument("name")
    wait.add_argument("--timeout", type=_seconds, default=3600.0, help="seconds to wait")

    d = sub.add_parser("drill", help="restore drills")
    ds = d.add_subparsers(dest="action", required=True, parser_class=_Parser)
    run = ds.add_parser("run", help="run a RestoreDrill now")
    run.add_argument("name")
    run.add_argument("--watch", action="store_true", help="follow the run to its result")
    run.add_argument("--timeout", type=_seconds, default=3600.0, help="seconds to wait")
    return p


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 7 * 86400:
        raise argparse.ArgumentTypeError("give between 0 and 604800 seconds")
    return value


def _source(args: argparse.Namespace) -> RestoreSource:
    return RestoreSource(
        backup=args.backup,
        environment=args.source_env,
        latest_verified=args.latest_verified,
        into=args.into,
        safety_backup=not args.no_safety_backup,
        job=args.job,
    )


def _confirm(console: Console) -> Callable[[str], bool]:
    def ask(question: str) -> bool:
        if not sys.stdin.isatty():
            raise PluginError("not a terminal to ask in: pass --yes to answer without asking")
        # The prompt blocks the event loop, where asyncio's own SIGINT handler would only
        # cancel the task at its next await, after the answer: Ctrl-C stops it at once.
        handler = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            return Confirm.ask(question, console=console, default=False)
        except EOFError:
            raise PluginError("no answer (the input ended): nothing was changed") from None
        finally:
            signal.signal(signal.SIGINT, handler)

    return ask


async def _run(args: argparse.Namespace, console: Console) -> int:
    target = resolve(
        kubeconfig=args.kubeconfig,
        context=args.context,
        namespace=args.namespace,
        environ=os.environ,
    )
    kube = KubeClient.connect(target.config, limit=4, user_agent="kubectl-dockyard")
    session = Session(kube, target.namespace, console)
    try:
        match args.command, getattr(args, "action", None):
            case "status", _:
                return await commands.status(session, args.environment)
            case "backup", _:
                return await commands.backup(
                    session,
                    args.environment,
                    name=args.name,
                    schedule=args.schedule,
                    wait=args.wait,
                    within=args.timeout,
                )
            case "stores", _:
                return await commands.stores(session)
            case "restore", "plan":
                return await commands.restore_plan(session, args.name, _source(args), args.timeout)
            case "restore", "create":
                return await commands.restore_create(session, args.name, _source(args))
            case "restore", "approve":
                return await approvals.restore_approve(
                    session, args.name, yes=args.yes, confirm=_confirm(console)
                )
            case "restore", "reject":
                return await approvals.restore_reject(
                    session, args.name, reason=args.reason, yes=args.yes, confirm=_confirm(console)
                )
            case "restore", "wait":
                return await commands.restore_wait(session, args.name, args.timeout)
            case "drill", "run":
                return await commands.drill_run(
                    session, args.name, watch=args.watch, within=args.timeout
                )
        raise AssertionError(args)  # argparse allows nothing else
    finally:
        await kube.close()


def printable(text: str) -> str:
    """``text`` with every character that is not printable (an escape, a C1 control, a
    bidirectional override), but for newlines and tabs, shown as U+FFFD."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in "\n\t" else "\ufffd" for c in text)


class _Terminal(Console):
    """A console that writes no control character it was given: what it prints comes
    from the cluster, and a tenant's database shapes some of it (a drill check's reason
    quotes a value read from it, a backup's manifest its table names). An escape sequence
    there would drive the terminal: clear it, rewrite lines, set the clipboard. Only the
    text of segments is filtered; the styles and cursor moves rich itself emits stay."""

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        return super()._render_buffer(
            segment if segment.control else segment._replace(text=printable(segment.text))
            for segment in buffer
        )


def terminal(**options: Any) -> Console:
    """The plugin's console. Markup is off: what it prints comes from the cluster (names,
    messages, the reasons of drill checks, which a tenant's database can shape), and text
    such as ``[/x]`` must print as it is, neither restyle the output nor crash it. Styles
    are given as ``Text`` and ``style=`` instead; control characters are never written
    (``_Terminal``)."""
    return _Terminal(highlight=False, markup=False, **options)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = terminal()
    try:
        return asyncio.run(_run(args, console))
    except (PluginError, ConfigError, ExecCredentialError) as exc:
        return _fail(str(exc))
    except KubeError as exc:
        return _fail(f"the apiserver refused: {exc.message or exc}")
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return _fail(f"cannot reach the apiserver: {str(exc) or type(exc).__name__}")
    except KeyboardInterrupt:
        return _fail("interrupted; what was started goes on in the cluster")


def _fail(message: str) -> int:
    print(printable(f"{PROG}: error: {message}"), file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
