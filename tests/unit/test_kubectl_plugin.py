"""The plugin's pure parts: which kubeconfig and namespace, the command line, the figures."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockyard.plugin import views
from dockyard.plugin.commands import PluginError, RestoreSource
from dockyard.plugin.config import ConfigError, kubeconfig_path, resolve
from dockyard.plugin.main import _confirm, parser, terminal

KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443/"}}],
    "users": [{"name": "u", "user": {"token": "t0k3n"}}],
    "contexts": [
        {"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "shop"}},
        {"name": "bare", "context": {"cluster": "c", "user": "u"}},
    ],
    "current-context": "dev",
}


def _write(tmp_path: Path) -> Path:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(KUBECONFIG))
    return path


def test_the_kubeconfig_is_found_as_kubectl_finds_it(tmp_path: Path) -> None:
    real = _write(tmp_path)
    missing = tmp_path / "missing"
    assert kubeconfig_path("~/x", {}) == Path("~/x").expanduser()
    assert kubeconfig_path(None, {"KUBECONFIG": f"{missing}:{real}"}) == real
    assert kubeconfig_path(None, {"HOME": str(tmp_path)}) == tmp_path / ".kube" / "config"


def test_the_namespace_is_the_flag_the_contexts_or_default(tmp_path: Path) -> None:
    path = str(_write(tmp_path))
    target = resolve(kubeconfig=path, context=None, namespace=None, environ={})
    assert (target.namespace, target.config.server, target.config.token) == (
        "shop",
        "https://127.0.0.1:6443",
        "t0k3n",
    )
    assert resolve(kubeconfig=path, context="bare", namespace=None, environ={}).namespace == (
        "default"
    )
    assert resolve(kubeconfig=path, context=None, namespace="ops", environ={}).namespace == "ops"


def test_an_unusable_kubeconfig_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no kubeconfig at .*; set KUBECONFIG"):
        resolve(kubeconfig=str(tmp_path / "nope"), context=None, namespace=None, environ={})
    path = _write(tmp_path)
    with pytest.raises(ConfigError, match="no context named 'other'"):
        resolve(kubeconfig=str(path), context="other", namespace=None, environ={})
    # A YAML error quotes the line it failed on: here, a token.
    path.write_text("users:\n- name: me\n  user: {token: sha256~TOPSECRET\n")
    with pytest.raises(ConfigError) as broken:
        resolve(kubeconfig=str(path), context=None, namespace=None, environ={})
    assert str(broken.value) == f"kubeconfig {path} cannot be used: not YAML (line 4)"
    # Empty, a list, or entries that are not mappings: one line, no traceback.
    for text in ("", "- a\n", "contexts: [foo]\ncurrent-context: foo\n"):
        path.write_text(text)
        with pytest.raises(ConfigError, match=f"kubeconfig {path}"):
            resolve(kubeconfig=str(path), context=None, namespace=None, environ={})


def test_a_wrong_command_line_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["backup", "shop", "--timeout", "-3"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "give between 0 and 604800 seconds" in err


def test_a_restore_source_is_exactly_one_of_a_backup_and_an_environment() -> None:
    assert RestoreSource(backup="b", into="live").spec(dry_run=True) == {
        "source": {"backupRef": {"name": "b"}},
        "dryRun": True,
        "safetyBackup": True,
        "target": {"environmentRef": {"name": "live"}},
    }
    spec = RestoreSource(environment="shop", latest_verified=True, job=True).spec(dry_run=False)
    assert spec["source"] == {"environmentRef": {"name": "shop"}, "select": "latestVerified"}
    assert spec["runner"] == "Job"
    for wrong in (RestoreSource(), RestoreSource(backup="b", environment="e")):
        with pytest.raises(PluginError, match="exactly one of --backup and --env"):
            wrong.spec(dry_run=True)


def test_figures_read_as_people_read_them() -> None:
    assert views.size(1536) == "1.5 KiB"
    assert views.size(545_648_013) == "520.4 MiB"
    assert views.size(None) == "-"
    assert views.duration(4.25) == "4.2s"
    assert views.duration(250) == "4m 10s"
    assert views.duration(7500) == "2h 5m"
    assert views.duration(3 * 86400 + 4 * 3600) == "3d 4h"
    assert views.parse_time("2026-12-04T10:00:00Z") is not None
    assert views.parse_time("soon") is None


def test_text_from_the_cluster_prints_as_it_is_never_as_markup() -> None:
    """A drill check's reason comes from the tenant's database: ``[/x]`` crashed rich's
    markup parser, and ``[green]`` restyled (could fake) the output."""
    drill = {
        "metadata": {"namespace": "shop", "name": "nightly"},
        "status": {
            "lastRun": {
                "result": "Failed",
                "backup": "b1",
                "failedChecks": [
                    {"check": "orders", "reason": "[/oops] expected 3 rows"},
                    {"check": "[bold]users", "reason": "[green]Passed[/green]"},
                ],
            }
        },
    }
    out = io.StringIO()
    terminal(file=out, width=160).print(views.drill_result(drill))
    printed = out.getvalue()
    assert "[/oops] expected 3 rows" in printed
    assert "[green]Passed[/green]" in printed
    assert "[bold]users" in printed


def test_no_control_character_from_the_cluster_reaches_the_terminal() -> None:
    """The attack: a tenant's table holds a value with escape sequences, which a failed
    drill check quotes in its reason. Printed, they cleared the on-call's screen, wrote
    their clipboard (OSC 52) or spoofed lines; only what rich itself emits is written."""
    drill = {
        "metadata": {"namespace": "shop", "name": "nightly"},
        "status": {
            "lastRun": {
                "result": "Failed",
                "failedChecks": [
                    {
                        "check": "orders\x1b[1A",
                        "reason": "got \x1b[2Jall clear\x1b]52;c;ZXZpbA==\x07",
                    },
                    {"check": "users", "reason": "abc\u202egnp.exe\x9b31m"},
                ],
            }
        },
    }
    out = io.StringIO()
    terminal(file=out, width=160, force_terminal=True, color_system="standard").print(
        views.drill_result(drill)
    )
    printed = out.getvalue()
    for sequence in ("\x1b[1A", "\x1b[2J", "\x1b]52", "\x07", "\u202e", "\x9b"):
        assert sequence not in printed
    assert "\x1b[1m" in printed  # rich's own styles (the bold heading) still are
    assert "all clear" in printed
    assert "\ufffd" in printed


def test_an_error_line_writes_no_control_character(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["status", "shop", "--x\x1b[2J"])  # unrecognized: as given
    assert "\x1b" not in capsys.readouterr().err


def _store(name: str, *, default: bool = False, team: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "default": default,
        "storage": {"s3": {"bucket": "bk", "prefix": name, "endpoint": "https://s3.example"}},
    }
    if team is not None:
        spec["namespaceSelector"] = {"matchLabels": {"team": team}}
    return {"metadata": {"name": name}, "spec": spec, "status": {}}


def _printed(renderable: Any) -> str:
    out = io.StringIO()
    terminal(file=out, width=200).print(renderable)
    return out.getvalue()


def test_the_stores_say_which_one_fills_a_backup_in_the_namespace() -> None:
    blue, red = _store("blue", team="blue"), _store("red", default=True, team="red")
    everyone = _store("everyone")
    assert views.serves(blue, {"team": "blue"}) == "yes"
    assert views.serves(red, {"team": "blue"}) == "no"
    assert views.serves(everyone, None) == "every namespace"
    assert views.serves(blue, None) is None  # labels not readable: unknown
    shown = _printed(views.backup_stores([red, blue, everyone], "shop", {"team": "blue"}))
    assert "s3://bk/blue at https://s3.example" in shown
    assert "The default store (red) does not serve shop" in shown
    assert "StoreNotAllowed" in shown
    served = _printed(views.backup_stores([_store("main", default=True)], "shop", {}))
    assert "Backups in shop without a storeRef are filled from main." in served
    unknown = _printed(views.backup_stores([red], "shop", None))
    assert "cannot be read with your rights" in unknown
    assert "unknown" in unknown
    none = _printed(views.backup_stores([blue], "shop", {"team": "blue"}))
    assert "No store is the default" in none


def test_a_store_being_deleted_says_what_holds_it_and_fills_no_backup() -> None:
    going = _store("main", default=True)
    going["metadata"]["deletionTimestamp"] = "2026-12-07T08:00:00Z"
    going["status"] = {
        "conditions": [
            {
                "type": "DeletionBlocked",
                "status": "True",
                "reason": "InUse",
                "message": "Deletion waits for 2 Backup(s) that name this store: a/x, b/y.",
            }
        ]
    }
    shown = _printed(views.backup_stores([going], "shop", {}))
    assert "Deleting, held: Deletion waits for 2 Backup(s)" in shown
    assert "The default store (main) is being deleted" in shown
    assert "NoBackupStore" in shown
    # With another default still standing, that one fills the namespace's Backups.
    other = _printed(views.backup_stores([going, _store("next", default=True)], "shop", {}))
    assert "Backups in shop without a storeRef are filled from next." in other
    released = {**going, "status": {}}
    assert "Deleting" in _printed(views.backup_stores([released], "shop", {}))


def test_a_plan_shows_the_answer_it_got_and_a_reason_as_it_was_written() -> None:
    plan = {"backup": "b1", "sourceEnvironment": "shop", "target": "shop", "inPlace": True,
            "requiresApproval": True}  # fmt: skip
    meta = {"namespace": "shop", "name": "r1"}
    waiting = {"metadata": meta, "status": {"phase": "AwaitingApproval", "plan": plan}}
    assert "required (another user)" in _printed(views.restore_plan(waiting))
    approval = {"rejectedBy": "bob", "rejectionReason": "[red]wrong[/red] backup"}
    rejected = {"metadata": meta, "status": {"phase": "Failed", "plan": plan,
                                             "approval": approval}}  # fmt: skip
    assert "rejected by bob: [red]wrong[/red] backup" in _printed(views.restore_plan(rejected))
    approved = {"metadata": meta, "status": {"phase": "Restoring", "plan": plan,
                                             "approval": {"approvedBy": "carol"}}}  # fmt: skip
    assert "approved by carol" in _printed(views.restore_plan(approved))


def test_the_input_ending_at_a_prompt_is_one_line_that_nothing_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-D at "Approve restore ...?" ended the plugin with a traceback."""

    def ended(*_: object) -> str:
        raise EOFError

    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", ended)
    with pytest.raises(PluginError, match="nothing was changed"):
        _confirm(terminal(file=io.StringIO()))("Approve restore promote?")
