"""The control-plane build's cache: a step counts as done only with all it makes.

The Go toolchain is stubbed: ``build._run`` records each command and makes what a
``go build -o DIR/`` would, so no compiler or network is needed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from dockyard.testbed import build

KUBERNETES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def _binary(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)


class _Go:
    """Stands in for ``build._run``: records each command, makes each ``go build -o``."""

    def __init__(self, tmp_path: Path, makes: Sequence[str] = KUBERNETES) -> None:
        self.commands: list[list[str]] = []
        self.makes = makes
        self.gomod = tmp_path / "kubernetes.go.mod"
        self.gomod.write_text("replace k8s.io/api => ./staging/src/k8s.io/api\n")

    def __call__(
        self, step: str, argv: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None
    ) -> str:
        self.commands.append(list(argv))
        if argv[:3] == ["go", "mod", "download"]:
            return json.dumps({"GoMod": str(self.gomod)})
        if argv[:2] == ["go", "build"]:
            out = Path(argv[argv.index("-o") + 1])
            for name in self.makes:
                _binary(out / name)
        return ""

    def built(self) -> bool:
        return any(command[:2] == ["go", "build"] for command in self.commands)


def _cache_with(tmp_path: Path, names: Sequence[str]) -> Path:
    bin_dir = build.cache_dir_for(tmp_path / "cache") / "bin"
    for name in names:
        _binary(bin_dir / name)
    return bin_dir


def test_kube_apiserver_alone_does_not_count_as_the_kubernetes_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a build interrupted after its first binary leaves: before, the step counted
    as cached for good, and every later run stopped without the scheduler."""
    others = [name for name in build.BINARIES if name not in KUBERNETES]
    bin_dir = _cache_with(tmp_path, [*others, "kube-apiserver"])
    go = _Go(tmp_path)
    monkeypatch.setattr(build, "_run", go)

    binaries = build.ensure_binaries(tmp_path / "cache", progress=lambda message: None)

    assert go.built()
    assert binaries.bin_dir == bin_dir
    assert all(os.access(bin_dir / name, os.X_OK) for name in build.BINARIES)
    assert sorted(path.name for path in bin_dir.parent.iterdir()) == ["bin", "src"]


def test_a_step_that_makes_only_part_of_its_binaries_leaves_none_of_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    others = [name for name in build.BINARIES if name not in KUBERNETES]
    bin_dir = _cache_with(tmp_path, others)
    monkeypatch.setattr(build, "_run", _Go(tmp_path, makes=["kube-apiserver"]))

    with pytest.raises(build.BuildError, match="kube-controller-manager"):
        build.ensure_binaries(tmp_path / "cache", progress=lambda message: None)

    assert not (bin_dir / "kube-apiserver").exists()


def test_a_whole_cache_builds_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cache_with(tmp_path, build.BINARIES)
    go = _Go(tmp_path)
    monkeypatch.setattr(build, "_run", go)

    build.ensure_binaries(tmp_path / "cache", progress=lambda message: None)

    assert go.commands == []
