"""``dockyard dev``: the whole platform on this machine, for as long as the command runs.

It brings up the test bed, migrates the platform database, applies the CRDs, the
manifests and the examples, runs the API and the operator as child processes with the
test bed's environment, prints where everything is, and on Ctrl-C stops all of it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dockyard.testbed.build import BuildError
from dockyard.testbed.cluster import State, Testbed, TestbedError

SELF_CONTAINED_EXAMPLES = ("environment-", "scalingpolicy-")


def _env(state: State) -> dict[str, str]:
    env = dict(os.environ)
    env.update(state.env())
    env.setdefault("DOCKYARD_LOG_FORMAT", "console")
    env["PATH"] = f"{state.bin_dir}:{env.get('PATH', '')}"
    return env


def _step(what: str, argv: list[str], env: dict[str, str]) -> None:
    print(f"[dev] {what}", flush=True)
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise TestbedError(f"{what} failed:\n{result.stdout}{result.stderr}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(*, api_port: int = 8080, root: Path | None = None) -> int:
    root = root or Path.cwd()
    # Ctrl-C and a plain kill both stop everything, even where a shell started us with
    # SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    testbed = Testbed()
    try:
        state, already = testbed.up()
    except (TestbedError, BuildError) as exc:
        print(f"dockyard dev: {exc}", file=sys.stderr)
        return 1
    env = _env(state)
    kubectl = [str(Path(state.bin_dir) / "kubectl")]
    me = [sys.executable, "-m", "dockyard.cli"]
    children: list[subprocess.Popen[bytes]] = []
    try:
        _step("migrating the platform database", [*me, "migrate"], env)
        _step("applying crds/", [*kubectl, "apply", "--server-side", "-f", str(root / "crds")], env)
        _step(
            "waiting for the CRDs",
            [
                *kubectl,
                "wait",
                "--for=condition=Established",
                "crd",
                "-l",
                "app.kubernetes.io/part-of=dockyard",
                "--timeout=60s",
            ],
            env,
        )
        # The platform namespace first: kubectl applies a directory in file-name order,
        # and api-rbac.yaml sorts before the namespace its objects live in.
        namespace = root / "manifests" / "namespace.yaml"
        _step("creating the platform namespace", [*kubectl, "apply", "-f", str(namespace)], env)
        # Not recursive: manifests/audit is the apiserver's own configuration (the test bed
        # starts with it) and manifests/monitoring needs the Prometheus Operator's CRDs.
        _step("applying manifests/", [*kubectl, "apply", "-f", str(root / "manifests")], env)
        # Sessions of their own: Ctrl-C reaches only this process, which stops each
        # child with exactly one SIGINT (a second one makes Kopf log an error).
        children.append(subprocess.Popen([*me, "operator"], env=env, start_new_session=True))
        children.append(
            subprocess.Popen(
                [*me, "api", "--host", "127.0.0.1", "--port", str(api_port)],
                env=env,
                start_new_session=True,
            )
        )
        # The examples that need nothing else: the backup, restore, drill and webhook
        # ones name Secrets, buckets and backups a user brings.
        examples = sorted((root / "docs" / "examples").glob("*.yaml"))
        ready = [str(p) for p in examples if p.name.startswith(SELF_CONTAINED_EXAMPLES)]
        if ready:
            files = [arg for path in ready for arg in ("-f", path)]
            _step(
                "applying docs/examples/ (environments, scaling)", [*kubectl, "apply", *files], env
            )
        print(
            "\n".join(
                [
                    "",
                    "Dockyard is running:",
                    f"  API          http://127.0.0.1:{api_port}/api/v1/openapi.json",
                    f"  health       http://127.0.0.1:{api_port}/readyz",
                    f"  apiserver    {state.apiserver_url}",
                    f"  kubeconfig   {state.kubeconfig}",
                    '  shell        eval "$(.venv/bin/dockyard testbed env)"',
                    "  a token      dockyard testbed user alice --group dockyard:developers",
                    "Ctrl-C stops everything.",
                ]
            ),
            flush=True,
        )
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        failed = next(child for child in children if child.poll() is not None)
        print(
            f"[dev] {failed.args!r} exited with {failed.returncode}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("\n[dev] stopping", flush=True)
        return 0
    except TestbedError as exc:
        print(f"dockyard dev: {exc}", file=sys.stderr)
        return 1
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        if not already:
            testbed.down()
            print("[dev] test bed stopped", flush=True)
