"""scripts/bootstrap.sh (`make dev`'s first step) on a fresh Debian machine: the packages
it installs, and a virtualenv that a failed first run left without pip.

The script, sourced, only defines its steps; these run one of them in a directory of
their own, with a stub ``python3`` first on PATH that records how it was called.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "scripts" / "bootstrap.sh"

# Records its arguments; `-m venv ... DIR` makes DIR/bin/python and DIR/bin/pip, as a
# python3 with ensurepip does; `-c 'import ensurepip'` fails when NO_ENSUREPIP is set.
STUB_PYTHON = """#!/bin/sh
echo "$*" >>"$STUB_LOG"
if [ "$1" = "-c" ] && [ -n "${NO_ENSUREPIP:-}" ]; then exit 1; fi
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  for dir; do :; done
  mkdir -p "$dir/bin"
  printf '#!/bin/sh\\n' >"$dir/bin/python"; printf '#!/bin/sh\\n' >"$dir/bin/pip"
  chmod +x "$dir/bin/python" "$dir/bin/pip"
fi
"""


def _executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _run_step(
    step: str, work: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run one function of the script in ``work``; its result and the stub's calls."""
    work.mkdir(parents=True, exist_ok=True)
    stubs = work.parent / "stubs"
    _executable(stubs / "python3", STUB_PYTHON)
    log = work.parent / "python3.log"
    log.write_text("")
    result = subprocess.run(
        ["bash", "-c", f'source "$1"; {step}', "bash", str(BOOTSTRAP)],
        cwd=work,
        env={"PATH": f"{stubs}:{os.environ['PATH']}", "STUB_LOG": str(log), **env},
        capture_output=True,
        text=True,
        check=False,
    )
    return result, log.read_text().splitlines()


def test_a_venv_left_without_pip_is_created_again_with_clear(tmp_path: Path) -> None:
    """What `python3 -m venv` leaves where Debian's python3-venv is missing: before, every
    later run skipped it (bin/python exists) and failed on the missing bin/pip."""
    work = tmp_path / "checkout"
    _executable(work / ".venv" / "bin" / "python", "#!/bin/sh\n")
    (work / ".venv" / ".dockyard-installed").write_text("stale\n")

    result, calls = _run_step("ensure_venv", work)

    assert result.returncode == 0, result.stderr
    assert "-m venv --clear .venv" in calls
    assert os.access(work / ".venv" / "bin" / "pip", os.X_OK)
    assert "re-creating .venv" in result.stdout


def test_a_fresh_checkout_gets_a_venv(tmp_path: Path) -> None:
    work = tmp_path / "checkout"

    result, calls = _run_step("ensure_venv", work)

    assert result.returncode == 0, result.stderr
    assert calls[-1] == "-m venv --clear .venv"
    assert os.access(work / ".venv" / "bin" / "pip", os.X_OK)


def test_a_whole_venv_is_left_alone(tmp_path: Path) -> None:
    work = tmp_path / "checkout"
    _executable(work / ".venv" / "bin" / "python", "#!/bin/sh\n")
    _executable(work / ".venv" / "bin" / "pip", "#!/bin/sh\n")

    result, calls = _run_step("ensure_venv", work)

    assert result.returncode == 0, result.stderr
    assert calls == []


def test_a_python_without_ensurepip_stops_in_one_line_naming_python3_venv(
    tmp_path: Path,
) -> None:
    work = tmp_path / "checkout"

    result, calls = _run_step("ensure_venv", work, NO_ENSUREPIP="1")

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "apt-get install python3-venv" in result.stderr
    assert not [call for call in calls if call.startswith("-m venv")]
    assert not (work / ".venv").exists()


def test_debians_python3_venv_is_among_the_apt_packages(tmp_path: Path) -> None:
    """Debian's python3 (bookworm, trixie) has no ensurepip without it."""
    result, _ = _run_step('printf "%s\\n" "${APT_PACKAGES[@]}"', tmp_path / "x")

    assert result.returncode == 0, result.stderr
    assert "python3-venv" in result.stdout.split()
