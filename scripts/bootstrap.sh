#!/usr/bin/env bash
# Install what Dockyard needs on a fresh Debian machine, idempotently:
# Debian's PostgreSQL, Redis and zstd, then the virtualenv with the package and its dev tools.
# The control-plane binaries are built (once, then cached) by 'dockyard testbed up'.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(postgresql redis-server zstd)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "[bootstrap] apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a cluster-wide postgres and redis on install; the test bed runs its own.
  $SUDO systemctl disable --now postgresql redis-server >/dev/null 2>&1 || true
fi

command -v go >/dev/null || { echo "[bootstrap] Go is required to build the control plane once (go 1.26+)"; exit 1; }

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.dockyard-installed
# The versions are constraints.txt's (scripts/lock.sh): CI, `make dev` and the image agree.
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[bootstrap] pip install -c constraints.txt -e .[dev]"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -c constraints.txt -e '.[dev]'
  echo "$want" > "$stamp"
fi
