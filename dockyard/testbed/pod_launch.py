"""How a runner pod becomes a process here: its argv, environment and private files.

Pure translation for the test bed's stand-in kubelet (``runner_pods``): a Pod manifest
and its Secrets in, a ``Launch`` out, the way a kubelet would set up the container as
far as a runner needs. What cannot be set up is a ``PodConfigError`` with the exit code
the pod ends with. ``lay_out`` writes the files and ``read_termination_log`` reads
what the run left there (both blocking: run them in a thread).
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final

import yaml

from dockyard.testbed import pod_image

EXIT_CONFIG_ERROR: Final = 1
EXIT_NOT_RUNNABLE: Final = 127
# The message of a failed run that wrote no termination message: its last stderr line.
STDERR_MESSAGE_LIMIT: Final = 512
# A kubelet reads at most this much of the termination-message file.
TERMINATION_MESSAGE_LIMIT: Final = 4096
DEFAULT_TERMINATION_MESSAGE_PATH: Final = "/dev/termination-log"
_KEPT_VARIABLES: Final = ("PATH", "HOME", "LANG", "PYTHONPATH")
_KEPT_PREFIXES: Final = ("COVERAGE_",)


class PodConfigError(Exception):
    """The pod cannot start; the message says why and ``exit_code`` is what it ends with."""

    def __init__(self, message: str, exit_code: int = EXIT_CONFIG_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# Secrets' (or ConfigMaps') data by name, decoded; one that does not exist is absent.
Secrets = Mapping[str, Mapping[str, bytes]]


@dataclass(frozen=True)
class VolumeFile:
    """One file of a volume, relative to its directory; ``token``: the pod's token."""

    path: PurePosixPath
    data: bytes
    mode: int
    token: bool = False


@dataclass
class Launch:
    """How to run one pod here: the process, and the files to lay out first."""

    argv: list[str]
    env: dict[str, str]
    root: Path
    termination_log: Path
    files: dict[Path, VolumeFile] = field(default_factory=dict)
    directories: list[Path] = field(default_factory=list)
    # Whose token the pod gets (TokenRequest), for its token files and, when it mounts
    # its token automatically, for the kubeconfig it finds the apiserver with.
    service_account: str | None = None
    writes_kubeconfig: bool = False
    notes: list[str] = field(default_factory=list)
    # Storage directories a container mounts: made (for its user) when missing.
    storage: list[Path] = field(default_factory=list)
    # When the pod runs in its image: the container's name (to remove it if stopped).
    container: str | None = None
    image: str | None = None
    # Who the container runs as (the image's user); its private files are made theirs,
    # but for the Secret and ConfigMap volumes' files, which stay root's as a kubelet
    # leaves them: readable by the group ``fs_group`` (the pod's fsGroup), if any.
    owner: tuple[int, int] | None = None
    fs_group: int | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"


def decode_secret(secret: Mapping[str, Any]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}


def decode_config_map(config_map: Mapping[str, Any]) -> dict[str, bytes]:
    data = {k: str(v).encode() for k, v in (config_map.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (config_map.get("binaryData") or {}).items()})
    return data


def referenced_secrets(spec: Mapping[str, Any]) -> set[str]:
    """The names of the Secrets the pod's env and volumes read."""
    names = {
        ref["name"]
        for container in spec.get("containers") or ()
        for env in container.get("env") or ()
        if (ref := (env.get("valueFrom") or {}).get("secretKeyRef"))
    }
    return names | _referenced(spec, "secret")


def referenced_config_maps(spec: Mapping[str, Any]) -> set[str]:
    """The names of the ConfigMaps the pod's volumes read."""
    return _referenced(spec, "configMap")


def _referenced(spec: Mapping[str, Any], source: str) -> set[str]:
    """The objects that the volumes' and projections' ``source`` entries name."""
    names = set()
    for volume in spec.get("volumes") or ():
        if source in volume:
            names.add(_object_name(volume[source]))
        projections = (volume.get("projected") or {}).get("sources") or ()
        names.update(_object_name(p[source]) for p in projections if source in p)
    return names


def _object_name(source: Mapping[str, Any]) -> str:
    # A secret volume names its Secret ``secretName``; projections and configMaps ``name``.
    return str(source.get("secretName") or source["name"])


def base_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What a runner inherits from this process: its tools' PATH and coverage, no secrets."""
    env = {name: environ[name] for name in _KEPT_VARIABLES if name in environ}
    env.update({k: v for k, v in environ.items() if k.startswith(_KEPT_PREFIXES)})
    return env


def resolve_env(
    env: Sequence[Mapping[str, Any]], secrets: Secrets, *, namespace: str
) -> dict[str, str]:
    """The container's variables: ``value``, or ``secretKeyRef`` read from ``secrets``."""
    resolved: dict[str, str] = {}
    for entry in env:
        name = entry["name"]
        source = entry.get("valueFrom")
        if source is None:
            resolved[name] = str(entry.get("value", ""))
            continue
        ref = source.get("secretKeyRef")
        if ref is None:
            raise PodConfigError(f"env {name}: only value and secretKeyRef are supported here")
        data = secrets.get(ref["name"])
        if data is None or ref["key"] not in data:
            if ref.get("optional"):
                continue
            missing = _missing("Secret", namespace, ref["name"], ref["key"], data)
            raise PodConfigError(f"env {name}: {missing}")
        resolved[name] = data[ref["key"]].decode("utf-8", errors="surrogateescape")
    return resolved


def _missing(
    kind: str, namespace: str, name: str, key: str, data: Mapping[str, bytes] | None
) -> str:
    # The kubelet's wording, so a failure reads as it would in a cluster.
    if data is None:
        return f'{kind.lower()} "{name}" not found'
    return f"couldn't find key {key} in {kind} {namespace}/{name}"


def secret_volume_files(
    source: Mapping[str, Any], secrets: Secrets, *, namespace: str
) -> list[VolumeFile]:
    """The files a ``secret`` volume holds: every key, or its ``items``, with their modes."""
    mode = int(source.get("defaultMode", 0o644))
    return _keyed_files("secret", source, {"secret": secrets}, namespace=namespace, mode=mode)


# Where a volume's or a projection's keys come from: the source's field, and its kind.
_KEYED_SOURCES: Final = {"secret": "Secret", "configMap": "ConfigMap"}  # nosec B105  # kinds


def _keyed_files(
    source_type: str,
    source: Mapping[str, Any],
    objects: Mapping[str, Secrets],
    *,
    namespace: str,
    mode: int,
) -> list[VolumeFile]:
    """The files of a ``secret`` or ``configMap`` source: every key, or its ``items``."""
    kind, name = _KEYED_SOURCES[source_type], _object_name(source)
    data = objects[source_type].get(name)
    if data is None:
        if source.get("optional"):
            return []
        raise PodConfigError(f"volume: {_missing(kind, namespace, name, '', None)}")
    items = source.get("items")
    if items is None:
        return [VolumeFile(_relative(key), value, mode) for key, value in data.items()]
    files = []
    for item in items:
        if item["key"] not in data:
            if source.get("optional"):
                continue
            raise PodConfigError(f"volume: {_missing(kind, namespace, name, item['key'], data)}")
        files.append(
            VolumeFile(_relative(item["path"]), data[item["key"]], int(item.get("mode", mode)))
        )
    return files


def projected_volume_files(
    source: Mapping[str, Any], objects: Mapping[str, Secrets], *, pod: Mapping[str, Any]
) -> list[VolumeFile]:
    """The files of a ``projected`` volume, such as the ``kube-api-access-*`` one that
    admission adds to every pod that mounts its ServiceAccount's token."""
    meta = pod["metadata"]
    mode = int(source.get("defaultMode", 0o644))
    files: list[VolumeFile] = []
    for projection in source.get("sources") or ():
        keyed = [key for key in _KEYED_SOURCES if key in projection]
        if keyed:
            files += _keyed_files(
                keyed[0], projection[keyed[0]], objects, namespace=meta["namespace"], mode=mode
            )
        elif "serviceAccountToken" in projection:
            token = projection["serviceAccountToken"]
            if token.get("audience"):
                raise PodConfigError("a token for another audience is not supported here")
            files.append(VolumeFile(_relative(token["path"]), b"", mode, token=True))
        elif "downwardAPI" in projection:
            for item in projection["downwardAPI"].get("items") or ():
                files.append(_downward_file(item, meta, mode))
        else:
            raise PodConfigError(f"projected volume: {sorted(projection)} is not supported here")
    return files


def _downward_file(item: Mapping[str, Any], meta: Mapping[str, Any], mode: int) -> VolumeFile:
    field_path = (item.get("fieldRef") or {}).get("fieldPath", "")
    values = {f"metadata.{key}": meta.get(key) for key in ("namespace", "name", "uid")}
    value = values.get(field_path)
    if value is None:
        raise PodConfigError(f"downwardAPI {field_path or item}: not supported here")
    return VolumeFile(_relative(item["path"]), str(value).encode(), int(item.get("mode", mode)))


def _relative(path: str) -> PurePosixPath:
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise PodConfigError(f"volume path {path!r} must be relative, without '..'")
    return relative


def rewrite_path(value: str, mounts: Mapping[str, Path]) -> str:
    """``value`` with a leading mount point replaced by its private directory."""
    for mount in sorted(mounts, key=len, reverse=True):
        prefix = mount.rstrip("/")
        if value == prefix or value.startswith(prefix + "/"):
            return str(mounts[mount]) + value[len(prefix) :]
    return value


def rewrite_arg(arg: str, mounts: Mapping[str, Path]) -> str:
    """Like ``rewrite_path``, also for the value of ``--flag=/mount/path``."""
    if arg.startswith("-") and "=" in arg:
        flag, _, value = arg.partition("=")
        return f"{flag}={rewrite_path(value, mounts)}"
    return rewrite_path(arg, mounts)


def plan_launch(
    pod: Mapping[str, Any],
    secrets: Secrets,
    *,
    config_maps: Secrets | None = None,
    root: Path,
    environ: Mapping[str, str],
    python: str = sys.executable,
    image: str | None = None,
    image_user: tuple[int, int] = (0, 0),
) -> Launch:
    """How to run ``pod``'s container in the private directory ``root``: this checkout's
    code in a process, or, with ``image`` (the container's image, found on this
    machine), that image under podman as ``image_user`` (its USER: uid, gid)."""
    spec = pod["spec"]
    namespace = pod["metadata"]["namespace"]
    containers = spec.get("containers") or []
    if len(containers) != 1 or spec.get("initContainers"):
        raise PodConfigError("only single-container pods run here", EXIT_NOT_RUNNABLE)
    [container] = containers
    command = list(container.get("command") or ())
    if not command or command[0] != "dockyard":
        raise PodConfigError("only dockyard runner pods run here", EXIT_NOT_RUNNABLE)

    launch = Launch(
        argv=[],
        env=base_environment(environ),
        root=root,
        termination_log=root / "termination-log",
    )
    objects = {"secret": secrets, "configMap": config_maps or {}}
    volume_dirs: dict[str, Path] = {}
    empty_dirs: set[str] = set()
    for volume in spec.get("volumes") or ():
        name = volume["name"]
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"].get("claimName")
            launch.notes.append(f"volume {name} (claim {claim}) is not mounted; paths left alone")
            continue
        if "emptyDir" in volume:
            empty_dirs.add(name)
        directory = volume_dirs[name] = root / "volumes" / name
        launch.directories.append(directory)
        for item in _volume_files(volume, objects, pod=pod):
            launch.files[directory / item.path] = item

    mounts: dict[str, Path] = {
        container.get("terminationMessagePath")
        or DEFAULT_TERMINATION_MESSAGE_PATH: launch.termination_log
    }
    for mount in container.get("volumeMounts") or ():
        path, name = mount["mountPath"], mount["name"]
        if name not in volume_dirs:
            continue  # a claim, noted above
        directory = volume_dirs[name]
        if mount.get("subPath"):
            directory = directory / _relative(mount["subPath"])
        if name in empty_dirs and path.rstrip("/") == "/tmp":  # noqa: S108  # nosec B108
            launch.env["TMPDIR"] = str(directory)
        else:
            mounts[path] = directory

    # The runner finds the apiserver through a kubeconfig (there is no in-cluster
    # service here), with the token a kubelet would mount.
    automount = spec.get("automountServiceAccountToken", True)
    if automount or any(item.token for item in launch.files.values()):
        launch.service_account = spec.get("serviceAccountName") or "default"
    if automount:
        launch.writes_kubeconfig = True
        launch.env["DOCKYARD_KUBECONFIG"] = str(launch.kubeconfig)
        launch.env["KUBECONFIG"] = str(launch.kubeconfig)
    for name, value in resolve_env(
        container.get("env") or (), secrets, namespace=namespace
    ).items():
        launch.env[name] = rewrite_path(value, mounts)
    args = [*command[1:], *(container.get("args") or ())]
    rewritten = [rewrite_arg(a, mounts) for a in args]
    launch.argv = [python, "-m", "dockyard.cli", *rewritten]
    if image is not None:
        pod_image.run_in_image(launch, pod, image, rewritten, base_environment(environ), image_user)
    return launch


def _volume_files(
    volume: Mapping[str, Any], objects: Mapping[str, Secrets], *, pod: Mapping[str, Any]
) -> list[VolumeFile]:
    if "emptyDir" in volume:
        return []
    for source_type in _KEYED_SOURCES:
        if source_type in volume:
            source = volume[source_type]
            mode = int(source.get("defaultMode", 0o644))
            namespace = pod["metadata"]["namespace"]
            return _keyed_files(source_type, source, objects, namespace=namespace, mode=mode)
    if "projected" in volume:
        return projected_volume_files(volume["projected"], objects, pod=pod)
    kinds = sorted(set(volume) - {"name"})
    raise PodConfigError(f"volume {volume['name']}: {kinds} volumes are not supported here")


def pod_kubeconfig(server: str, ca_pem: bytes, token: str) -> dict[str, Any]:
    """A kubeconfig that authenticates with ``token`` alone."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "testbed",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": "pod", "user": {"token": token}}],
        "contexts": [{"name": "pod", "context": {"cluster": "testbed", "user": "pod"}}],
        "current-context": "pod",
    }


def read_termination_log(launch: Launch) -> str:
    """What the run wrote to its termination-message file, as much as a kubelet reads."""
    try:
        with launch.termination_log.open("rb") as handle:
            return handle.read(TERMINATION_MESSAGE_LIMIT).decode(errors="replace")
    except OSError:
        return ""


def termination_message(exit_code: int, written: str, stderr_tail: bytes) -> str:
    """The file's content when the runner wrote one, else a failed run's last stderr line."""
    if written.strip():
        return written
    if exit_code == 0:
        return ""
    lines = [line for line in stderr_tail.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1][:STDERR_MESSAGE_LIMIT] if lines else ""


def exit_code_of(returncode: int) -> int:
    """A process's exit code as a container's: 128 + N when killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


def lay_out(
    launch: Launch, *, token: str | None = None, kubeconfig: Mapping[str, Any] | None = None
) -> None:
    """Write the pod's private files: volumes (``token`` in its token files), the
    termination log, its kubeconfig."""
    for directory in launch.directories:
        directory.mkdir(parents=True, exist_ok=True)
    for path, item in launch.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes((token or "").encode() if item.token else item.data)
        path.chmod(item.mode)
    launch.termination_log.touch(mode=0o600)
    if kubeconfig is not None:
        launch.kubeconfig.touch(mode=0o600)
        launch.kubeconfig.write_text(yaml.safe_dump(kubeconfig))
    if launch.owner is None:
        return
    uid, gid = launch.owner
    for directory in launch.storage:
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
            os.chown(directory, uid, gid)
    for path in (launch.root, *launch.root.rglob("*")):
        os.chown(path, uid, gid, follow_symlinks=False)
    pod_image.as_a_kubelet_leaves(launch)
