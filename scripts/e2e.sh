#!/usr/bin/env bash
# `make e2e`: build the image (scripts/image.sh, cached layers) and run tests/e2e against
# it on the test bed. Where podman cannot run containers here (not root, no apt to
# install it, or a runtime that refuses), it says why in one line and skips.
set -euo pipefail
cd "$(dirname "$0")/.."

skip() { echo "[e2e] skipped: $*"; exit 0; }

[ "$(id -u)" -eq 0 ] || skip "podman runs the image as root here, and this is not root"
if ! command -v podman >/dev/null; then
  command -v apt-get >/dev/null || skip "no podman, and no apt-get to install it"
fi
bash scripts/image.sh
probe=$(podman run --rm --runtime runc --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
  --entrypoint true "${IMAGE:-localhost/dockyard:dev}" 2>&1) \
  || skip "podman cannot run a container here: $(echo "$probe" | tail -1)"
.venv/bin/pytest -q -p no:cacheprovider tests/e2e
