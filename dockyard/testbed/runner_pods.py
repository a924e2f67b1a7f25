"""The test bed's stand-in for a kubelet: it runs runner pods as processes on this machine.

kwok fakes every pod's life cycle and runs nothing, and there is no container runtime
here. So a runner Job (``dockyard.operator.runs.jobs``) would "succeed" after a second
without having dumped anything. This process watches the pods labelled
``dockyard.io/runner`` that kwok made Running and runs each one's single container the
way a kubelet would, as far as a runner needs:

- ``command: ["dockyard"]`` becomes ``python -m dockyard.cli`` (this interpreter); any
  other command fails the pod with exit code 127. When the image is on this machine
  (``make image``), the pod runs in it under podman instead (``pod_image``); the
  annotation ``testbed.dockyard.io/runtime`` says ``process`` or ``podman <image>``.
- Environment: ``value`` and ``valueFrom.secretKeyRef`` (read from the Secret, with
  ``optional``) over a minimal base (``PATH``, ``HOME``, ``LANG``, ``PYTHONPATH``,
  ``COVERAGE_*``), never this process's own environment.
- Volumes: ``secret``, ``configMap`` and ``projected`` ones (the ``kube-api-access-*``
  volume admission adds: token, CA, namespace) are written into the pod's private
  directory (``items`` and modes honoured), an ``emptyDir`` is a private directory, the
  termination-message file is a private file; arguments and variables naming a path
  under those mount points are rewritten to the private path. An ``emptyDir`` at
  ``/tmp`` becomes ``TMPDIR`` instead (storage paths of tests live under /tmp too).
  PersistentVolumeClaims are not mounted: the test bed's storage paths are local.
- Identity: a token of the pod's ServiceAccount from the TokenRequest API, bound to the
  pod, in a kubeconfig the runner finds through ``DOCKYARD_KUBECONFIG``, so it acts with
  exactly that account's RBAC (none with ``automountServiceAccountToken: false``).

A missing required Secret or key fails the pod with exit code 1 (a kubelet would keep it
in CreateContainerConfigError). When the process ends, the pod gets the annotations
``testbed.dockyard.io/exit-code`` and ``testbed.dockyard.io/message`` (the termination
message: the file's content, else the last line on stderr of a failed run), from which
kwok's stages (``stages.yaml``) make it Succeeded or Failed, so the Job controller marks
the Job Complete or Failed. A pod deleted while it runs has its process stopped.

What it is not: without the image, no image (the runner is the code of the checkout
that started the test bed) and no isolation (it runs as the test bed's user, sees its
files and network); in either case no resource limits, no ``$(VAR)`` expansion, no
probes; a pod's fsGroup counts only in its image (``pod_image.as_a_kubelet_leaves``).

Run as ``python -m dockyard.testbed.runner_pods --kubeconfig PATH --work-dir DIR``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import FileIO
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import yaml

from dockyard.core import logs
from dockyard.core.kube import KubeClient, KubeConfig, KubeError
from dockyard.testbed import pod_image, pod_launch

logger = logging.getLogger(__name__)

# The same label as dockyard.operator.runs.jobs.RUNNER_LABEL (the test bed does not
# import the operator).
RUNNER_LABEL: Final = "dockyard.io/runner"
EXIT_CODE_ANNOTATION: Final = "testbed.dockyard.io/exit-code"
MESSAGE_ANNOTATION: Final = "testbed.dockyard.io/message"
# How the pod ran: "process" (this checkout) or "podman <image>" (the image, when built here).
RUNTIME_ANNOTATION: Final = "testbed.dockyard.io/runtime"
MAX_RUNNING: Final = 2
TOKEN_SECONDS: Final = 3600
# A runner gets this long after SIGTERM before SIGKILL; ``testbed down`` waits 10 s.
MAX_GRACE_SECONDS: Final = 5.0
# A result that cannot be written (the apiserver restarting) is tried this often.
ANNOTATE_ATTEMPTS: Final = 5
# A watch ends after this long and the pods are listed again: a resync.
WATCH_SECONDS: Final = 60


@dataclass(frozen=True)
class Outcome:
    """How a pod's run ended: what the annotations say."""

    exit_code: int
    message: str
    runtime: str = "process"


def should_start(pod: Mapping[str, Any]) -> bool:
    """Scheduled, made Running by kwok, not deleted, not finished here before."""
    meta = pod.get("metadata") or {}
    return (
        bool((pod.get("spec") or {}).get("nodeName"))
        and (pod.get("status") or {}).get("phase") == "Running"
        and not meta.get("deletionTimestamp")
        and EXIT_CODE_ANNOTATION not in (meta.get("annotations") or {})
    )


def cluster_of(kubeconfig: Path) -> tuple[str, bytes]:
    """The server and CA certificate of ``kubeconfig``'s current context."""
    raw = yaml.safe_load(kubeconfig.read_text())
    context = next(c for c in raw["contexts"] if c["name"] == raw["current-context"])
    cluster = next(c for c in raw["clusters"] if c["name"] == context["context"]["cluster"])
    entry = cluster["cluster"]
    if "certificate-authority-data" in entry:
        ca = base64.b64decode(entry["certificate-authority-data"])
    else:
        ca = (kubeconfig.parent / entry["certificate-authority"]).read_bytes()
    return str(entry["server"]), ca


# -- the process that follows the pods -----------------------------------------------------


class RunnerPods:
    """Follows the runner pods and runs each once, at most ``max_running`` at a time."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        server: str,
        ca_pem: bytes,
        work_dir: Path,
        environ: Mapping[str, str],
        max_running: int = MAX_RUNNING,
    ) -> None:
        self.kube = kube
        self.server = server
        self.ca_pem = ca_pem
        self.environ = dict(environ)
        self.logs = work_dir / "logs" / "runner-pods"
        self.pods = work_dir / "runner-pods"
        self._slots = asyncio.Semaphore(max_running)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._finished: set[str] = set()

    async def run(self) -> None:
        """List, watch until the watch ends, list again: forever, whatever fails."""
        for directory in (self.logs, self.pods):
            await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        logger.info("watching pods labelled %s", RUNNER_LABEL)
        try:
            while True:
                try:
                    await self._follow(await self._resync())
                except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
                    logger.warning("pod watch interrupted: %s", exc)
                    await asyncio.sleep(1)
                except Exception:  # a bug here must not stop every runner: logged, retried
                    logger.exception("pod watch failed")
                    await asyncio.sleep(1)
        finally:
            await self.stop_all()

    async def stop_all(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _resync(self) -> str:
        listing = await self.kube.get("/api/v1/pods", params={"labelSelector": RUNNER_LABEL})
        present = set()
        for pod in listing.get("items") or ():
            present.add(pod["metadata"]["uid"])
            self.observe(pod)
        for uid in set(self._tasks) - present:
            self._stop(uid, "is gone")
        self._finished &= present
        return str(listing["metadata"]["resourceVersion"])

    async def _follow(self, resource_version: str) -> None:
        path = f"/api/v1/pods?labelSelector={quote(RUNNER_LABEL, safe='')}"
        async for event in self.kube.watch(
            path, resource_version=resource_version, timeout_seconds=WATCH_SECONDS
        ):
            kind, pod = event.get("type"), event.get("object") or {}
            if kind == "ERROR":  # 410 Gone and the like: list again
                logger.info("watch ended: %s", pod.get("message"))
                return
            if kind == "DELETED":
                self._stop(pod["metadata"]["uid"], "was deleted")
            elif kind in ("ADDED", "MODIFIED"):
                self.observe(pod)

    def observe(self, pod: Mapping[str, Any]) -> None:
        """Start the pod's run when it is due; stop it when the pod is being deleted."""
        uid = pod["metadata"]["uid"]
        if pod["metadata"].get("deletionTimestamp"):
            self._stop(uid, "is being deleted")
        elif uid not in self._tasks and uid not in self._finished and should_start(pod):
            task = asyncio.create_task(self._run(pod), name=_where(pod))
            self._tasks[uid] = task
            task.add_done_callback(lambda _: self._done(uid))

    def _done(self, uid: str) -> None:
        self._tasks.pop(uid, None)
        self._finished.add(uid)

    def _stop(self, uid: str, why: str) -> None:
        task = self._tasks.get(uid)
        if task is not None and not task.done() and not task.cancelling():
            logger.info("pod %s %s: stopping its runner", task.get_name(), why)
            task.cancel()

    async def _run(self, pod: Mapping[str, Any]) -> None:
        where = _where(pod)
        try:
            async with self._slots:
                root = Path(
                    await asyncio.to_thread(
                        tempfile.mkdtemp,
                        prefix=f"{_file_stem(pod)}-",
                        dir=self.pods,
                    )
                )
                try:
                    outcome = await self._start(pod, root)
                finally:
                    await asyncio.to_thread(shutil.rmtree, root, ignore_errors=True)
            logger.info("pod %s exited with %d", where, outcome.exit_code)
            await self._annotate(pod, outcome)
        except asyncio.CancelledError:
            raise
        except Exception:  # one pod's trouble must not end the loop: it is logged
            logger.exception("pod %s: could not be run", where)

    async def _start(self, pod: Mapping[str, Any], root: Path) -> Outcome:
        log_path = self.logs / f"{_file_stem(pod)}.log"
        log = await asyncio.to_thread(_open_log, log_path)
        try:
            try:
                launch = await self._prepare(pod, root)
            except pod_launch.PodConfigError as exc:
                await asyncio.to_thread(log.write, f"runner-pods: {exc}\n".encode())
                return Outcome(exc.exit_code, str(exc))
            return await self._execute(pod, launch, log)
        finally:
            await asyncio.to_thread(log.close)

    async def _prepare(self, pod: Mapping[str, Any], root: Path) -> pod_launch.Launch:
        spec = pod["spec"]
        secrets = await self._read_all("secrets", pod_launch.referenced_secrets(spec), pod)
        config_maps = await self._read_all(
            "configmaps", pod_launch.referenced_config_maps(spec), pod
        )
        image = (spec.get("containers") or [{}])[0].get("image") or ""
        user = await asyncio.to_thread(pod_image.image_user, image) if image else None
        launch = pod_launch.plan_launch(
            pod, secrets, config_maps=config_maps, root=root, environ=self.environ,
            image=image if user else None, image_user=user or (0, 0),
        )  # fmt: skip
        for note in launch.notes:
            logger.info("pod %s: %s", _where(pod), note)
        token = kubeconfig = None
        if launch.service_account is not None:
            token = await self._token(pod, launch.service_account)
            if launch.writes_kubeconfig:
                kubeconfig = pod_launch.pod_kubeconfig(self.server, self.ca_pem, token)
        await asyncio.to_thread(pod_launch.lay_out, launch, token=token, kubeconfig=kubeconfig)
        return launch

    async def _read_all(
        self, resource: str, names: set[str], pod: Mapping[str, Any]
    ) -> dict[str, dict[str, bytes]]:
        """The data of the Secrets or ConfigMaps ``names``; those that do not exist are absent."""
        decode = pod_launch.decode_secret if resource == "secrets" else pod_launch.decode_config_map
        found = {}
        for name in sorted(names):
            try:
                found[name] = decode(await self.kube.get(_api_path(pod, resource, name)))
            except KubeError as exc:
                if exc.status != 404:
                    raise pod_launch.PodConfigError(f"{resource} {name}: {exc}") from None
        return found

    async def _token(self, pod: Mapping[str, Any], account: str) -> str:
        meta = pod["metadata"]
        path = _api_path(pod, "serviceaccounts", account, "token")
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": TOKEN_SECONDS,
                # Bound to the pod, as a kubelet's projected token: it dies with the pod.
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        try:
            answer = await self.kube.create(path, request)
        except KubeError as exc:
            raise pod_launch.PodConfigError(
                f"no token for ServiceAccount {account}: {exc}"
            ) from None
        return str(answer["status"]["token"])

    async def _execute(
        self, pod: Mapping[str, Any], launch: pod_launch.Launch, log: FileIO
    ) -> Outcome:
        header = f"runner-pods: {' '.join(launch.argv)}\n"
        await asyncio.to_thread(log.write, header.encode())
        try:
            proc = await asyncio.create_subprocess_exec(
                *launch.argv,
                env=launch.env,
                cwd=launch.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own group: stopping it stops pg_dump too
            )
        except OSError as exc:
            return Outcome(
                pod_launch.EXIT_NOT_RUNNABLE, f"cannot start {launch.argv[0]}: {exc.strerror}"
            )
        tail = b""
        try:
            stderr = proc.stderr
            while stderr is not None and (chunk := await stderr.read(1 << 16)):
                await asyncio.to_thread(log.write, chunk)
                tail = (tail + chunk)[-4 * pod_launch.STDERR_MESSAGE_LIMIT :]
            returncode = await proc.wait()
        except asyncio.CancelledError:
            grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            await _terminate(proc, min(float(grace), MAX_GRACE_SECONDS))
            if launch.container is not None:  # podman killed: its container may live on
                await asyncio.to_thread(pod_image.remove_container, launch.container)
            raise
        written = await asyncio.to_thread(pod_launch.read_termination_log, launch)
        code = pod_launch.exit_code_of(returncode)
        runtime = f"podman {launch.image}" if launch.container else "process"
        message = pod_launch.termination_message(code, written, tail)
        return Outcome(code, message, runtime)

    async def _annotate(self, pod: Mapping[str, Any], outcome: Outcome) -> None:
        meta = pod["metadata"]
        patch = {
            "metadata": {
                # A pod of the same name but another uid is not ours to mark.
                "uid": meta["uid"],
                "annotations": {
                    EXIT_CODE_ANNOTATION: str(outcome.exit_code),
                    MESSAGE_ANNOTATION: outcome.message,
                    RUNTIME_ANNOTATION: outcome.runtime,
                },
            }
        }
        path = _api_path(pod, "pods", meta["name"])
        for attempt in range(1, ANNOTATE_ATTEMPTS + 1):
            try:
                await self.kube.merge_patch(path, patch)
                return
            except KubeError as exc:
                if exc.status in (404, 409, 422):  # gone, or replaced by a namesake
                    logger.info("pod %s is gone; its result stays unsaid", path)
                    return
                if attempt == ANNOTATE_ATTEMPTS:
                    raise
            except (aiohttp.ClientError, TimeoutError):
                if attempt == ANNOTATE_ATTEMPTS:
                    raise
            await asyncio.sleep(attempt)


def _where(pod: Mapping[str, Any]) -> str:
    """``namespace/name``: the pod in logs and task names."""
    return f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"


def _file_stem(pod: Mapping[str, Any]) -> str:
    """``namespace_name``: the pod's log file and private directory."""
    return _where(pod).replace("/", "_")


def _api_path(pod: Mapping[str, Any], *parts: str) -> str:
    """A path of the core API in the pod's namespace."""
    return "/".join(("/api/v1/namespaces", pod["metadata"]["namespace"], *parts))


def _open_log(path: Path) -> FileIO:
    # Unbuffered and appending: the runner writes its stdout to the same file.
    return FileIO(path, "ab")


async def _terminate(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the runner's process group, SIGKILL it after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await proc.wait()


async def serve(kubeconfig: Path, work_dir: Path, *, max_running: int = MAX_RUNNING) -> None:
    server, ca_pem = cluster_of(kubeconfig)
    kube = KubeClient.connect(KubeConfig.from_kubeconfig(kubeconfig))
    pods = RunnerPods(
        kube,
        server=server,
        ca_pem=ca_pem,
        work_dir=work_dir,
        environ=os.environ,
        max_running=max_running,
    )
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        if main is not None:
            loop.add_signal_handler(sig, main.cancel)
    try:
        await pods.run()
    except asyncio.CancelledError:
        logger.info("stopping")
    finally:
        await kube.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", type=Path, required=True, help="the admin kubeconfig")
    parser.add_argument("--work-dir", type=Path, required=True, help="the test bed's directory")
    parser.add_argument("--max-running", type=int, default=MAX_RUNNING, help="runs at once")
    args = parser.parse_args(argv)
    logs.configure("INFO", "text")
    asyncio.run(serve(args.kubeconfig, args.work_dir, max_running=args.max_running))


if __name__ == "__main__":
    main()
