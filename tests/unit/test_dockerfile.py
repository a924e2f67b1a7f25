"""The Dockerfile builds the image the manifests expect: non-root, Debian's PostgreSQL 15
client and zstd for the backup runner, no compilers, `dockyard` as the entrypoint.

The image cannot be built where there is no Docker engine, so these read the file.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PG_MAJOR = "15"
COMPILERS = {"gcc", "g++", "build-essential", "clang", "make", "python3-dev", "libpq-dev"}


@dataclass
class Stage:
    """One ``FROM`` of the Dockerfile: its base, name and instructions, ARGs resolved."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [value for key, value in self.instructions if key == keyword]


def _logical_lines(text: str) -> list[str]:
    """Instructions one per line: comments dropped, continuations joined."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        raise ValueError("the Dockerfile ends inside a continuation")
    return lines


def _substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), value)


def _stages() -> list[Stage]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    args: dict[str, str] = {}
    for line in _logical_lines(DOCKERFILE.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=_substitute(words[0], global_args), name=name))
            args = {}
            continue
        if keyword == "ARG":
            key, _, default = rest.partition("=")
            target = args if stages else global_args
            # A bare ARG in a stage brings the global one in.
            target[key] = default if default else global_args.get(key, "")
            continue
        if not stages:
            continue
        stages[-1].instructions.append((keyword, _substitute(rest, args)))
    return stages


def _runtime() -> Stage:
    return _stages()[-1]


def _apt_installed(stage: Stage) -> set[str]:
    packages: set[str] = set()
    for command in stage.values("RUN"):
        for part in re.split(r"&&|;", command):
            words = shlex.split(part)
            if "apt-get" in words and "install" in words:
                start = words.index("install") + 1
                packages |= {w for w in words[start:] if not w.startswith("-")}
    return packages


def test_the_image_runs_as_a_non_root_numeric_user() -> None:
    # Numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd.
    (user,) = _runtime().values("USER")
    uid, _, gid = user.partition(":")
    for number in (uid, gid):
        assert number.isdigit(), user
        assert int(number) > 0, user


def test_the_runtime_installs_the_postgres_client_of_the_servers_major_and_zstd() -> None:
    installed = _apt_installed(_runtime())
    assert {f"postgresql-client-{PG_MAJOR}", "zstd"} <= installed
    assert not installed & COMPILERS


def test_the_runtime_keeps_no_apt_lists_and_installs_no_recommends() -> None:
    (install,) = [run for run in _runtime().values("RUN") if "apt-get install" in run]
    assert "--no-install-recommends" in install
    assert "rm -rf /var/lib/apt/lists/*" in install


def test_the_clients_of_that_major_come_first_on_path() -> None:
    env = " ".join(_runtime().values("ENV"))
    match = re.search(r'PATH="([^"]+)"', env)
    assert match is not None
    assert match[1].split(":")[0] == f"/usr/lib/postgresql/{PG_MAJOR}/bin"


def test_nothing_is_written_at_run_time_outside_tmp() -> None:
    env = " ".join(_runtime().values("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env


def test_dockyard_is_the_entrypoint_and_the_api_the_default_command() -> None:
    runtime = _runtime()
    assert [json.loads(v) for v in runtime.values("ENTRYPOINT")] == [["dockyard"]]
    assert [json.loads(v) for v in runtime.values("CMD")] == [
        ["api", "--host", "0.0.0.0", "--port", "8080"]  # noqa: S104  # in a pod: all interfaces
    ]


def test_both_stages_are_debian_bookworm_slim_pinned_and_python_is_debians() -> None:
    builder, runtime = _stages()
    assert builder.base == runtime.base
    assert re.fullmatch(
        r"docker\.io/library/debian:bookworm-slim@sha256:[0-9a-f]{64}", runtime.base
    ), runtime.base
    for stage in (builder, runtime):
        assert "python3" in _apt_installed(stage)
    # The builder makes the virtualenv at the pinned versions; the runtime copies it and
    # has no pip of its own.
    assert any(
        "pip install --no-cache-dir --constraint constraints.txt ." in " ".join(run.split())
        for run in builder.values("RUN")
    )
    assert f"--from={builder.name} /opt/dockyard /opt/dockyard" in runtime.values("COPY")
    assert not any("pip" in run for run in runtime.values("RUN"))


def test_the_image_carries_oci_labels() -> None:
    labels = " ".join(_runtime().values("LABEL"))
    for key in ("title", "version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_the_build_context_is_only_what_the_builder_copies() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    included = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    builder = _stages()[0]
    copied = {src for copy in builder.values("COPY") for src in copy.split()[:-1]}
    assert copied == included == {"pyproject.toml", "README.md", "constraints.txt", "dockyard"}
