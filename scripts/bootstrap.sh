#!/usr/bin/env bash
# Install what Dockyard needs on a fresh Debian machine, idempotently:
# Debian's PostgreSQL, Redis, zstd and python3-venv, then the virtualenv with the package
# and its dev tools. The control-plane binaries are built (once, then cached) by
# 'dockyard testbed up'.
#
# Sourced ('source scripts/bootstrap.sh'), it only defines its functions: the unit tests
# run one step at a time that way.
set -euo pipefail

# python3-venv: Debian's python3 has no ensurepip without it, and 'python3 -m venv' then
# fails after creating .venv/bin/python, with no pip.
APT_PACKAGES=(postgresql redis-server zstd python3-venv)

install_apt_packages() {
  local pkg missing=() sudo=""
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  echo "[bootstrap] apt-get install ${missing[*]}"
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a cluster-wide postgres and redis on install; the test bed runs its own.
  $sudo systemctl disable --now postgresql redis-server >/dev/null 2>&1 || true
}

# .venv in the current directory, with pip. One that has a python but no pip (a
# 'python3 -m venv' that failed at ensurepip) is created again with --clear, which also
# drops its stamp, so that the packages are installed into it again.
ensure_venv() {
  local python=${PYTHON:-python3}
  if [ -x .venv/bin/python ] && [ -x .venv/bin/pip ]; then
    return 0
  fi
  if ! "$python" -c 'import ensurepip' >/dev/null 2>&1; then
    echo "[bootstrap] $python has no ensurepip, so no venv with pip; on Debian: apt-get install python3-venv" >&2
    return 1
  fi
  if [ -e .venv ]; then
    echo "[bootstrap] re-creating .venv (it has no pip)"
  else
    echo "[bootstrap] creating .venv"
  fi
  "$python" -m venv --clear .venv
}

# The package and its dev tools, at constraints.txt's versions (scripts/lock.sh): CI,
# `make dev` and the image agree. Skipped while the stamp matches the two files.
install_package() {
  local stamp=.venv/.dockyard-installed want
  want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[bootstrap] pip install -c constraints.txt -e .[dev]"
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -c constraints.txt -e '.[dev]'
    echo "$want" >"$stamp"
  fi
}

main() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  install_apt_packages
  command -v go >/dev/null || { echo "[bootstrap] Go is required to build the control plane once (go 1.26+)"; exit 1; }
  ensure_venv
  install_package
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
