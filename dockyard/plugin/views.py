"""What the plugin shows: rich tables and panels built from the objects as the apiserver
returns them (camelCase JSON), so a field the operator has not written yet shows as -."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dockyard.core.models.label_selector import LabelSelector

Object = Mapping[str, Any]
NONE = "-"
_STYLES = {"True": "green", "False": "red", "Unknown": "yellow"}
_PHASES = {
    "Ready": "green",
    "Completed": "green",
    "Passed": "green",
    "Failed": "red",
    "Degraded": "yellow",
}


def size(n: object) -> str:
    """Bytes as people read them: 1.5 MiB."""
    if not isinstance(n, int | float):
        return NONE
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return NONE  # not reached


def duration(seconds: object) -> str:
    """Seconds as people read them: 4m 10s, 2h 5m, 3d 4h."""
    if not isinstance(seconds, int | float):
        return NONE
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s" if isinstance(seconds, float) and s < 10 else f"{s}s"
    minutes, s = divmod(s, 60)
    if minutes < 60:
        return f"{minutes}m {s}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age(value: object, now: datetime | None = None) -> str:
    """How long ago a timestamp was: 3m 2s ago."""
    when = parse_time(value)
    if when is None:
        return NONE
    return f"{duration(((now or datetime.now(UTC)) - when).total_seconds())} ago"


def phase_text(phase: object) -> Text:
    shown = str(phase) if phase else "Unknown"
    return Text(shown, style=_PHASES.get(shown, "yellow"))


def conditions_table(status: Object) -> Table:
    table = Table(title="Conditions", title_justify="left", expand=False)
    for column in ("Type", "Status", "Reason", "Message"):
        table.add_column(column, overflow="fold")
    for condition in status.get("conditions") or []:
        state = str(condition.get("status", ""))
        table.add_row(
            str(condition.get("type", "")),
            Text(state, style=_STYLES.get(state, "")),
            str(condition.get("reason", "")),
            str(condition.get("message", "")),
        )
    return table


def environment_status(env: Object, now: datetime | None = None) -> Group:
    """An environment at a glance: phase, database, last backup, last drill, RPO."""
    now = now or datetime.now(UTC)
    meta, spec, status = env["metadata"], env.get("spec") or {}, env.get("status") or {}
    replicas = status.get("replicas") or {}
    database = status.get("database")
    backup = status.get("lastBackup")
    drill = status.get("lastDrill")
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("Environment", f"{meta['namespace']}/{meta['name']}")
    facts.add_row("Tier", str(spec.get("tier", NONE)))
    facts.add_row("Phase", phase_text(status.get("phase")))
    facts.add_row("URL", str(status.get("url") or NONE))
    facts.add_row(
        "Pods",
        f"{replicas.get('ready', 0)}/{replicas.get('desired', 0)} ready" if replicas else NONE,
    )
    if database:
        state = "ready" if database.get("ready") else "not ready"
        facts.add_row("Database", f"{database.get('name', NONE)} ({state})")
    else:
        facts.add_row("Database", "none")
    if backup:
        verified = f", verified by drill {backup['verifiedBy']}" if backup.get("verifiedBy") else ""
        facts.add_row(
            "Last backup",
            f"{backup['name']}: {size(backup.get('size'))}, completed "
            f"{age(backup.get('completedAt'), now)}{verified}",
        )
        completed = parse_time(backup.get("completedAt"))
        rpo = duration((now - completed).total_seconds()) if completed else NONE
        facts.add_row("RPO", f"{rpo} (data written since the last backup is at risk)")
    else:
        facts.add_row("Last backup", "none")
        facts.add_row("RPO", Text("unbounded: no completed backup", style="red"))
    if drill:
        facts.add_row(
            "Last drill",
            Text.assemble(
                f"{drill['drill']} on {drill.get('backup', NONE)}: ",
                phase_text(drill.get("result")),
                f", finished {age(drill.get('finishedAt'), now)}, restore took "
                f"{duration(drill.get('restoreSeconds'))} (RTO)",
            ),
        )
    else:
        facts.add_row("Last drill", "none")
    return Group(
        Panel(facts, title="kubectl dockyard status", expand=False), conditions_table(status)
    )


def restore_plan(restore: Object) -> Table:
    """The plan a restore will carry out (or has)."""
    status = restore.get("status") or {}
    plan = status.get("plan") or {}
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Restore", f"{restore['metadata']['namespace']}/{restore['metadata']['name']}")
    table.add_row("Phase", phase_text(status.get("phase")))
    if not plan:
        table.add_row("Plan", "not made yet")
        return table
    verified = "verified by a drill" if plan.get("verified") else "not verified by a drill"
    table.add_row(
        "Backup",
        f"{plan.get('backup')} of {plan.get('sourceEnvironment')}, completed "
        f"{age(plan.get('backupCompletedAt'))} ({verified})",
    )
    table.add_row("Size", f"{size(plan.get('size'))}, {plan.get('tableCount', 0)} tables")
    where = "in place" if plan.get("inPlace") else "into another environment"
    tier = f", tier {plan['targetTier']}" if plan.get("targetTier") else ""
    table.add_row("Target", f"{plan.get('target')} ({where}{tier})")
    table.add_row("Safety backup", "yes, first" if plan.get("safetyBackup") else "no")
    table.add_row("Approval", _approval(plan, status.get("approval") or {}))
    table.add_row("Estimate", duration(plan.get("estimatedDurationSeconds")))
    return table


def _approval(plan: Object, approval: Object) -> str:
    """Whether the restore needs approval, and the answer it got."""
    if approval.get("rejectedBy"):
        why = approval.get("rejectionReason")
        return f"rejected by {approval['rejectedBy']}" + (f": {why}" if why else "")
    if approval.get("approvedBy"):
        return f"approved by {approval['approvedBy']}"
    return "required (another user)" if plan.get("requiresApproval") else "no"


def drill_result(drill: Object) -> Group:
    """The last run of a drill: result, backup, RTO, RPO and the checks that failed."""
    run = (drill.get("status") or {}).get("lastRun") or {}
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    facts.add_row("Drill", f"{drill['metadata']['namespace']}/{drill['metadata']['name']}")
    facts.add_row("Result", phase_text(run.get("result")))
    facts.add_row("Backup", f"{run.get('backup', NONE)} ({size(run.get('backupSize'))})")
    facts.add_row("Restore took", f"{duration(run.get('restoreSeconds'))} (RTO)")
    facts.add_row("Backup age", f"{duration(run.get('backupAgeSeconds'))} (RPO)")
    parts: list[Table] = [facts]
    failed = run.get("failedChecks") or []
    if failed:
        checks = Table(title="Failed checks", title_justify="left")
        checks.add_column("Check")
        checks.add_column("Reason", overflow="fold")
        for check in failed:
            checks.add_row(str(check.get("check", "")), str(check.get("reason", "")))
        parts.append(checks)
    return Group(*parts)


def _storage(spec: Object) -> str:
    storage = spec.get("storage") or {}
    if fs := storage.get("filesystem"):
        claim = fs.get("claimName")
        return f"filesystem {fs.get('path', NONE)}" + (f" (claim {claim})" if claim else "")
    if s3 := storage.get("s3"):
        where = f"s3://{s3.get('bucket', NONE)}/{s3.get('prefix') or ''}".rstrip("/")
        return where + (f" at {s3['endpoint']}" if s3.get("endpoint") else "")
    return NONE


def serves(store: Object, labels: Mapping[str, str] | None) -> str | None:
    """``every namespace``, ``yes`` or ``no`` for a namespace with ``labels``; None when
    the store has a selector and the labels are not known."""
    raw = (store.get("spec") or {}).get("namespaceSelector")
    if raw is None:
        return "every namespace"
    if labels is None:
        return None
    return "yes" if LabelSelector.model_validate(raw).matches(labels) else "no"


def backup_stores(stores: list[Object], namespace: str, labels: Mapping[str, str] | None) -> Group:
    """The BackupStores, whether each serves ``namespace`` (whose labels are ``labels``,
    or None when the caller may not read them), and which one a Backup there without
    ``storeRef`` is filled from."""
    table = Table(title="BackupStores", title_justify="left", expand=False)
    for column in ("Name", "Default", "Storage", f"Serves {namespace}", "Selector", "Ready"):
        table.add_column(column, overflow="fold")
    for store in sorted(stores, key=lambda s: str(s["metadata"]["name"])):
        spec = store.get("spec") or {}
        raw = spec.get("namespaceSelector")
        answer = serves(store, labels)
        table.add_row(
            str(store["metadata"]["name"]),
            "yes" if spec.get("default") else "",
            _storage(spec),
            Text(answer or "unknown", style={"no": "red"}.get(answer or "", "")),
            NONE if raw is None else LabelSelector.model_validate(raw).describe(),
            _store_state(store),
        )
    return Group(table, Text(_default_for(stores, namespace, labels)))


def _store_state(store: Object) -> Text:
    """Its Ready condition; while it is being deleted, that, and whether Backups hold it."""
    conditions = (store.get("status") or {}).get("conditions") or []
    if (store.get("metadata") or {}).get("deletionTimestamp"):
        held: Object = next((c for c in conditions if c.get("type") == "DeletionBlocked"), {})
        if held.get("status") == "True":
            return Text(f"Deleting, held: {held.get('message', '')}", style="yellow")
        return Text("Deleting", style="yellow")
    ready: Object = next((c for c in conditions if c.get("type") == "Ready"), {})
    state = str(ready.get("status", "Unknown"))
    return Text(f"{state} {ready.get('reason', '')}".strip(), style=_STYLES.get(state, ""))


def _default_for(stores: list[Object], namespace: str, labels: Mapping[str, str] | None) -> str:
    defaults = [s for s in stores if (s.get("spec") or {}).get("default")]
    going = sorted(
        str(s["metadata"]["name"]) for s in defaults if s["metadata"].get("deletionTimestamp")
    )
    if going and len(going) == len(defaults):
        return (
            f"The default store ({', '.join(going)}) is being deleted: new Backups in "
            f"{namespace} without a storeRef wait with NoBackupStore."
        )
    defaults = [s for s in defaults if str(s["metadata"]["name"]) not in going]
    if not defaults:
        return f"No store is the default: Backups in {namespace} name a storeRef or a storage."
    serving = [s for s in defaults if serves(s, labels) in ("yes", "every namespace")]
    names = ", ".join(sorted(str(s["metadata"]["name"]) for s in defaults))
    if len(serving) == 1:
        name = serving[0]["metadata"]["name"]
        return f"Backups in {namespace} without a storeRef are filled from {name}."
    if labels is None and not serving:
        return (
            f"The default store ({names}) serves some namespaces only, and the labels of "
            f"{namespace} cannot be read with your rights."
        )
    if not serving:
        return (
            f"The default store ({names}) does not serve {namespace}: Backups here wait "
            "with StoreNotAllowed unless they name a store that serves it or a storage."
        )
    return f"Several default stores serve {namespace} ({names}): Backups here name a storeRef."
