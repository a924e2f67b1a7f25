"""The test bed's stand-in kubelet, its pure parts: how a runner pod becomes a process.

The pods here have the shape of the operator's runner Jobs (``backup_job``): a key
Secret mounted with ``items`` and a read-only mode, an emptyDir at /tmp, the database
DSN from a ``secretKeyRef``, the result in the termination-message file.
"""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from dockyard.core.kube import load_config
from dockyard.testbed import pod_launch, runner_pods
from dockyard.testbed.pki import CertificateAuthority
from dockyard.testbed.pod_launch import PodConfigError

KEY_MOUNT = "/var/run/secrets/dockyard/backup-key"
SECRETS: pod_launch.Secrets = {
    "shop-database": {"uri": b"postgresql://shop:pw@127.0.0.1:5432/shop"},
    "backup-key": {"key": b"k" * 64, "other": b"not projected"},
}
PARENT_ENV = {
    "PATH": "/usr/local/bin:/usr/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "PYTHONPATH": "/src",
    "COVERAGE_PROCESS_START": "/src/pyproject.toml",
    "DOCKYARD_DATABASE_URL": "postgresql://platform:secret@127.0.0.1/dockyard",
    "AWS_SECRET_ACCESS_KEY": "parent-secret",
    "KUBECONFIG": "/home/me/admin.kubeconfig",
}


def runner_pod(**container: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "runner",
        "image": "ghcr.io/dockyard/dockyard:latest",
        "command": ["dockyard"],
        "args": [
            "backup-run",
            "--storage=file:///tmp/pytest-of-root/backups/ns",
            "--name=a.dkbk",
            "--key-id=k1",
            f"--key-file={KEY_MOUNT}/key",
            "--result-file=/dev/termination-log",
        ],
        "env": [
            {
                "name": "DOCKYARD_BACKUP_SOURCE_DSN",
                "valueFrom": {"secretKeyRef": {"name": "shop-database", "key": "uri"}},
            },
            {"name": "DOCKYARD_LOG_FORMAT", "value": "json"},
        ],
        "volumeMounts": [
            {"name": "backup-key", "mountPath": KEY_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108  # an emptyDir
        ],
        "terminationMessagePath": "/dev/termination-log",
    }
    base.update(container)
    return {
        "metadata": {"name": "backup-a-1-xyz", "namespace": "ns", "uid": "u-1"},
        "spec": {
            "nodeName": "kwok-node-0",
            "serviceAccountName": "dockyard-backup-runner",
            "containers": [base],
            "volumes": [
                {
                    "name": "backup-key",
                    "secret": {
                        "secretName": "backup-key",
                        "items": [{"key": "key", "path": "key"}],
                        "defaultMode": 0o400,
                    },
                },
                {"name": "tmp", "emptyDir": {}},
            ],
        },
        "status": {"phase": "Running"},
    }


def plan(pod: dict[str, Any], root: Path, secrets: pod_launch.Secrets = SECRETS) -> Any:
    return pod_launch.plan_launch(
        pod, secrets, root=root, environ=PARENT_ENV, python="/venv/bin/python"
    )


# -- environment -----------------------------------------------------------------------------


def test_plain_values_and_secret_keys_become_variables() -> None:
    env = pod_launch.resolve_env(
        runner_pod()["spec"]["containers"][0]["env"], SECRETS, namespace="ns"
    )
    assert env == {
        "DOCKYARD_BACKUP_SOURCE_DSN": "postgresql://shop:pw@127.0.0.1:5432/shop",
        "DOCKYARD_LOG_FORMAT": "json",
    }


def test_an_optional_secret_key_that_is_missing_leaves_the_variable_unset() -> None:
    env = [
        {
            "name": "AWS_SESSION_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "s3", "key": "t", "optional": True}},
        },
        {
            "name": "DSN",
            "valueFrom": {
                "secretKeyRef": {"name": "shop-database", "key": "nope", "optional": True}
            },
        },
    ]
    assert pod_launch.resolve_env(env, SECRETS, namespace="ns") == {}


def test_a_required_secret_that_is_missing_fails_the_pod_naming_it() -> None:
    env = [{"name": "DSN", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "uri"}}}]
    with pytest.raises(PodConfigError, match='env DSN: secret "gone" not found') as caught:
        pod_launch.resolve_env(env, SECRETS, namespace="ns")
    assert caught.value.exit_code == 1


def test_a_required_key_that_is_missing_fails_the_pod_naming_it() -> None:
    env = [{"name": "DSN", "valueFrom": {"secretKeyRef": {"name": "shop-database", "key": "x"}}}]
    with pytest.raises(PodConfigError, match="couldn't find key x in Secret ns/shop-database"):
        pod_launch.resolve_env(env, SECRETS, namespace="ns")


def test_other_value_sources_are_refused_rather_than_guessed() -> None:
    env = [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    with pytest.raises(PodConfigError, match="only value and secretKeyRef"):
        pod_launch.resolve_env(env, SECRETS, namespace="ns")


def test_the_base_environment_keeps_tools_and_coverage_and_nothing_secret() -> None:
    assert pod_launch.base_environment(PARENT_ENV) == {
        "PATH": "/usr/local/bin:/usr/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PYTHONPATH": "/src",
        "COVERAGE_PROCESS_START": "/src/pyproject.toml",
    }


def test_a_runner_gets_its_pod_env_and_identity_but_not_the_parents_secrets(
    tmp_path: Path,
) -> None:
    launch = plan(runner_pod(), tmp_path)
    assert launch.env["DOCKYARD_BACKUP_SOURCE_DSN"].startswith("postgresql://shop:")
    assert launch.env["DOCKYARD_KUBECONFIG"] == str(tmp_path / "kubeconfig")
    assert launch.env["KUBECONFIG"] == str(tmp_path / "kubeconfig")
    assert launch.service_account == "dockyard-backup-runner"
    assert "DOCKYARD_DATABASE_URL" not in launch.env
    assert "AWS_SECRET_ACCESS_KEY" not in launch.env


def test_without_automounted_token_a_runner_gets_no_identity(tmp_path: Path) -> None:
    pod = runner_pod()
    pod["spec"]["automountServiceAccountToken"] = False
    launch = plan(pod, tmp_path)
    assert launch.service_account is None
    assert "DOCKYARD_KUBECONFIG" not in launch.env
    assert "KUBECONFIG" not in launch.env


# -- volumes and paths -----------------------------------------------------------------------


def test_a_secret_volume_with_items_projects_only_them_with_their_modes(tmp_path: Path) -> None:
    source = {
        "secretName": "backup-key",
        "items": [{"key": "key", "path": "k/key"}, {"key": "other", "path": "o", "mode": 0o440}],
        "defaultMode": 0o400,
    }
    files = pod_launch.secret_volume_files(source, SECRETS, namespace="ns")
    assert [(str(f.path), f.data, f.mode) for f in files] == [
        ("k/key", b"k" * 64, 0o400),
        ("o", b"not projected", 0o440),
    ]


def test_a_secret_volume_without_items_holds_every_key_with_the_default_mode() -> None:
    files = pod_launch.secret_volume_files({"secretName": "backup-key"}, SECRETS, namespace="ns")
    assert sorted((str(f.path), f.mode) for f in files) == [("key", 0o644), ("other", 0o644)]


def test_missing_secrets_of_volumes_fail_unless_optional() -> None:
    assert (
        pod_launch.secret_volume_files(
            {"secretName": "gone", "optional": True}, SECRETS, namespace="ns"
        )
        == []
    )
    with pytest.raises(PodConfigError, match='secret "gone" not found'):
        pod_launch.secret_volume_files({"secretName": "gone"}, SECRETS, namespace="ns")
    with pytest.raises(PodConfigError, match="couldn't find key nope in Secret ns/backup-key"):
        pod_launch.secret_volume_files(
            {"secretName": "backup-key", "items": [{"key": "nope", "path": "p"}]},
            SECRETS,
            namespace="ns",
        )


def test_an_item_path_cannot_escape_its_volume() -> None:
    source = {"secretName": "backup-key", "items": [{"key": "key", "path": "../../etc/x"}]}
    with pytest.raises(PodConfigError, match="must be relative"):
        pod_launch.secret_volume_files(source, SECRETS, namespace="ns")


def test_the_key_file_and_result_file_are_rewritten_into_the_pods_directory(
    tmp_path: Path,
) -> None:
    launch = plan(runner_pod(), tmp_path)
    assert launch.argv[:3] == ["/venv/bin/python", "-m", "dockyard.cli"]
    args = launch.argv[3:]
    key_dir = tmp_path / "volumes" / "backup-key"
    assert f"--key-file={key_dir}/key" in args
    assert f"--result-file={tmp_path / 'termination-log'}" in args
    # Storage paths under /tmp are the test bed's own: an emptyDir at /tmp is TMPDIR.
    assert "--storage=file:///tmp/pytest-of-root/backups/ns" in args
    assert launch.env["TMPDIR"] == str(tmp_path / "volumes" / "tmp")


def test_the_laid_out_secret_volume_holds_the_projected_key_read_only(tmp_path: Path) -> None:
    launch = plan(runner_pod(), tmp_path)
    pod_launch.lay_out(launch, token="t", kubeconfig={"apiVersion": "v1", "kind": "Config"})
    key = tmp_path / "volumes" / "backup-key" / "key"
    assert key.read_bytes() == b"k" * 64
    assert stat.S_IMODE(key.stat().st_mode) == 0o400
    assert sorted(p.name for p in key.parent.iterdir()) == ["key"]
    assert (tmp_path / "volumes" / "tmp").is_dir()
    assert (tmp_path / "termination-log").read_bytes() == b""
    assert stat.S_IMODE((tmp_path / "kubeconfig").stat().st_mode) == 0o600


def test_the_service_account_volume_admission_adds_gets_the_pods_token(tmp_path: Path) -> None:
    pod = runner_pod()
    pod["spec"]["volumes"].append(
        {
            "name": "kube-api-access-x1",
            "projected": {
                "defaultMode": 0o644,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                    {
                        "downwardAPI": {
                            "items": [
                                {
                                    "path": "namespace",
                                    "fieldRef": {"fieldPath": "metadata.namespace"},
                                }
                            ]
                        }
                    },
                ],
            },
        }
    )
    sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount"
    pod["spec"]["containers"][0]["volumeMounts"].append(
        {"name": "kube-api-access-x1", "mountPath": sa_dir, "readOnly": True}
    )
    pod["spec"]["containers"][0]["args"].append(f"--token-file={sa_dir}/token")
    launch = pod_launch.plan_launch(
        pod,
        SECRETS,
        config_maps={"kube-root-ca.crt": {"ca.crt": b"PEM"}},
        root=tmp_path,
        environ=PARENT_ENV,
    )
    pod_launch.lay_out(launch, token="sa-token")
    volume = tmp_path / "volumes" / "kube-api-access-x1"
    assert f"--token-file={volume}/token" in launch.argv
    assert (volume / "token").read_text() == "sa-token"
    assert (volume / "ca.crt").read_bytes() == b"PEM"
    assert (volume / "namespace").read_text() == "ns"


def test_a_missing_config_map_fails_the_pod_as_a_kubelet_says_it(tmp_path: Path) -> None:
    pod = runner_pod()
    pod["spec"]["volumes"].append({"name": "conf", "configMap": {"name": "settings"}})
    with pytest.raises(PodConfigError, match='configmap "settings" not found'):
        plan(pod, tmp_path)


def test_unsupported_volumes_fail_the_pod_naming_them(tmp_path: Path) -> None:
    pod = runner_pod()
    pod["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/etc"}})
    with pytest.raises(PodConfigError, match=r"volume host: \['hostPath'\] volumes"):
        plan(pod, tmp_path)


def test_paths_are_rewritten_only_under_a_mount_point() -> None:
    mounts = {"/var/run/key": Path("/p/key"), "/var/run/key/inner": Path("/p/inner")}
    assert pod_launch.rewrite_path("/var/run/key", mounts) == "/p/key"
    assert pod_launch.rewrite_path("/var/run/key/a", mounts) == "/p/key/a"
    assert pod_launch.rewrite_path("/var/run/key/inner/b", mounts) == "/p/inner/b"
    assert pod_launch.rewrite_path("/var/run/keys", mounts) == "/var/run/keys"
    assert pod_launch.rewrite_arg("--key-file=/var/run/key/k", mounts) == "--key-file=/p/key/k"
    assert pod_launch.rewrite_arg("--note=a=/var/run/key", mounts) == "--note=a=/var/run/key"


def test_env_values_under_a_secret_mount_are_rewritten(tmp_path: Path) -> None:
    pod = runner_pod()
    pod["spec"]["containers"][0]["env"].append(
        {"name": "DOCKYARD_KEY_FILE", "value": f"{KEY_MOUNT}/key"}
    )
    launch = plan(pod, tmp_path)
    assert launch.env["DOCKYARD_KEY_FILE"] == str(tmp_path / "volumes" / "backup-key" / "key")


def test_a_claim_is_not_mounted_and_its_paths_stay(tmp_path: Path) -> None:
    pod = runner_pod()
    pod["spec"]["volumes"].append(
        {"name": "backups", "persistentVolumeClaim": {"claimName": "backups"}}
    )
    pod["spec"]["containers"][0]["volumeMounts"].append(
        {"name": "backups", "mountPath": "/srv/backups"}
    )
    pod["spec"]["containers"][0]["args"][1] = "--storage=file:///srv/backups/ns"
    launch = plan(pod, tmp_path)
    assert "--storage=file:///srv/backups/ns" in launch.argv
    assert launch.notes == ["volume backups (claim backups) is not mounted; paths left alone"]


# -- what runs here, and how it ends ---------------------------------------------------------


def test_only_dockyard_commands_run_here(tmp_path: Path) -> None:
    for command in (["sh", "-c", "id"], None):
        with pytest.raises(PodConfigError, match="only dockyard runner pods") as caught:
            plan(runner_pod(command=command), tmp_path)
        assert caught.value.exit_code == 127


def test_further_command_words_come_before_the_args(tmp_path: Path) -> None:
    launch = plan(runner_pod(command=["dockyard", "backup-run"], args=["--help"]), tmp_path)
    assert launch.argv[3:] == ["backup-run", "--help"]


def test_a_pod_starts_once_it_runs_on_a_node_and_has_no_result() -> None:
    pod = runner_pod()
    assert runner_pods.should_start(pod)
    for change in (
        {"status": {"phase": "Pending"}},
        {"spec": {**pod["spec"], "nodeName": None}},
        {"metadata": {**pod["metadata"], "deletionTimestamp": "2025-01-01T00:00:00Z"}},
        {"metadata": {**pod["metadata"], "annotations": {runner_pods.EXIT_CODE_ANNOTATION: "0"}}},
    ):
        assert not runner_pods.should_start({**copy.deepcopy(pod), **change})


def test_the_message_is_the_termination_message_else_a_failures_last_stderr_line() -> None:
    written = '{"sha256": "ab"}\n'
    assert pod_launch.termination_message(0, written, b"log\n") == written
    assert pod_launch.termination_message(1, written, b"log\n") == written
    assert pod_launch.termination_message(0, "", b"log line\n") == ""
    tail = b"first\nbackup-run: DumpFailed: " + b"x" * 600 + b"\n\n"
    message = pod_launch.termination_message(1, "", tail)
    assert message.startswith("backup-run: DumpFailed: x")
    assert len(message) == 512


def test_a_process_killed_by_a_signal_exits_as_a_container_does() -> None:
    assert pod_launch.exit_code_of(-9) == 137
    assert pod_launch.exit_code_of(2) == 2


def test_the_pods_kubeconfig_authenticates_with_its_token_alone(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    config = pod_launch.pod_kubeconfig("https://127.0.0.1:6443", ca.cert_pem, "sa-token")
    launch = plan(runner_pod(), tmp_path / "pod")
    pod_launch.lay_out(launch, token="sa-token", kubeconfig=config)
    loaded = load_config(launch.kubeconfig, {})
    assert loaded.server == "https://127.0.0.1:6443"
    assert loaded.token == "sa-token"


def test_a_pod_whose_image_is_here_runs_in_it_with_its_env_from_a_file(tmp_path: Path) -> None:
    image = "localhost/dockyard:dev"
    launch = pod_launch.plan_launch(
        runner_pod(),
        SECRETS,
        root=tmp_path,
        environ=PARENT_ENV,
        image=image,
        image_user=(10001, 10001),
    )

    argv = launch.argv
    assert argv[:3] == ["podman", "run", "--rm"]
    assert {"--read-only", "--network", "host", "--cap-drop", "ALL"} <= set(argv)
    # The image's entrypoint is dockyard: the arguments follow the image, rewritten into
    # the private directory, which is mounted at its own path, as is the storage.
    at = argv.index(image)
    assert argv[at + 1] == "backup-run"
    assert f"--key-file={tmp_path}/volumes/backup-key/key" in argv[at:]
    assert f"--volume={tmp_path}:{tmp_path}" in argv[:at]
    assert "--volume=/tmp/pytest-of-root/backups/ns:/tmp/pytest-of-root/backups/ns" in argv
    # Secrets reach the container through a private file, never the argv.
    assert not any("postgresql://" in arg for arg in argv)
    env_file = tmp_path / "container.env"
    assert argv[argv.index("--env-file") + 1] == str(env_file)
    written = launch.files[env_file]
    assert written.mode == 0o600
    lines = written.data.decode().splitlines()
    assert "DOCKYARD_BACKUP_SOURCE_DSN=postgresql://shop:pw@127.0.0.1:5432/shop" in lines
    assert f"DOCKYARD_KUBECONFIG={tmp_path}/kubeconfig" in lines
    # Nothing of this process's own: no tools path, no parent secrets.
    assert not any(
        line.startswith(("PATH=", "PYTHONPATH=", "AWS_", "KUBECONFIG=/home")) for line in lines
    )
    assert set(launch.env) <= {"PATH", "HOME", "LANG"}
    assert launch.container == "dockyard-pod-u-1"
    # As the image's user, who gets the private files but the Secret volumes' ones.
    assert argv[argv.index("--user") + 1] == "10001:10001"
    assert "--group-add" not in argv  # this pod asks for no fsGroup
    if os.geteuid() == 0:
        launch.storage = [tmp_path / "storage"]  # a missing storage path is made theirs
        pod_launch.lay_out(launch, token="t")
        assert (tmp_path / "storage").stat().st_uid == 10001
        key = tmp_path / "volumes" / "backup-key" / "key"
        # As a kubelet leaves it: root's alone, which the image's user cannot read.
        owned = (key.stat().st_uid, key.stat().st_gid, stat.S_IMODE(key.stat().st_mode))
        assert owned == (0, 0, 0o400)
        assert env_file.stat().st_uid == 10001


@pytest.mark.skipif(os.geteuid() != 0, reason="files change owner only as root")
def test_a_pods_fs_group_may_read_its_secret_files_in_the_image(tmp_path: Path) -> None:
    pod = runner_pod()
    pod["spec"]["securityContext"] = {"runAsNonRoot": True, "fsGroup": 10001}
    launch = pod_launch.plan_launch(
        pod, SECRETS, root=tmp_path, environ=PARENT_ENV, image="localhost/dockyard:dev",
        image_user=(10001, 10001),
    )  # fmt: skip
    assert launch.argv[launch.argv.index("--group-add") + 1] == "10001"
    pod_launch.lay_out(launch, token="t")
    key = tmp_path / "volumes" / "backup-key" / "key"
    owned = (key.stat().st_uid, key.stat().st_gid, stat.S_IMODE(key.stat().st_mode))
    assert owned == (0, 10001, 0o440)
