"""The shipped alerts and dashboard ask only for series the operator exports.

(promtool checks the rules' syntax and runs their unit tests: scripts/monitoring.sh,
in `make test`.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "manifests" / "monitoring"
SERIES = re.compile(r"\bdockyard_[a-z_]+\b")


def _exported() -> set[str]:
    """Every dockyard_* name the code declares (histograms and counters add suffixes)."""
    names: set[str] = set()
    for path in (ROOT / "dockyard").rglob("*.py"):
        for name in SERIES.findall(path.read_text()):
            names |= {name, f"{name}_total", f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return names


def _expressions() -> list[str]:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    found = [r["expr"] for group in rule["spec"]["groups"] for r in group["rules"]]
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    found += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    return found


def test_every_series_asked_for_is_exported() -> None:
    exported = _exported()
    asked = {name for expr in _expressions() for name in SERIES.findall(expr)}
    assert asked
    assert sorted(asked - exported) == []


def test_the_alerts_the_issue_names_are_shipped() -> None:
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    alerts = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert {
        "DockyardBackupMissing",
        "DockyardDrillFailing",
        "DockyardDrillRPOOverObjective",
        "DockyardRestoreAwaitingApproval",
        "DockyardWebhookDeadLetters",
    } <= alerts
