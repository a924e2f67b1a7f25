#!/usr/bin/env bash
# `make image`: the Dockerfile built with podman, as root, FROM the local bookworm base
# (scripts/base-image.sh builds it once; no registry is reachable here). Docker users run
# `docker build .` on the same file; only BASE_IMAGE differs, as a build argument.
#   IMAGE=localhost/dockyard:dev (the tag)   CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-localhost/dockyard:dev}
BASE_IMAGE=${BASE_IMAGE:-localhost/dockyard-base:bookworm-slim}
# The machine's CA bundle goes to pip as the optional build secret "ca": it trusts what
# the host trusts (here, a TLS-intercepting proxy in front of PyPI).
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

for tool in podman mmdebstrap runc; do
  if ! command -v "$tool" >/dev/null; then
    echo "[image] apt-get install podman buildah mmdebstrap runc"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq podman buildah mmdebstrap runc >/dev/null
    break
  fi
done

BASE_IMAGE=$BASE_IMAGE bash scripts/base-image.sh
secret=()
[ -s "$CA_BUNDLE" ] && secret=(--secret "id=ca,src=$CA_BUNDLE")
started=$(date +%s)
# runc: crun refuses this kernel's hybrid cgroups; the ulimits stay below the hard ones.
podman build --runtime runc --network host \
  --ulimit "nofile=4096:4096" --ulimit "nproc=4096:4096" \
  "${secret[@]}" \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  --tag "$IMAGE" .
echo "[image] $IMAGE built in $(( $(date +%s) - started ))s: $(podman image inspect --format '{{.Size}}' "$IMAGE") bytes"
