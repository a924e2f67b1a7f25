#!/usr/bin/env bash
# The Dockerfile's base, built here where no registry is reachable: Debian bookworm by
# mmdebstrap (variant minbase, with the dpkg path excludes the official bookworm-slim
# image has), imported into podman as BASE_IMAGE. Cached: nothing is done when the
# image exists. Docker users build FROM the official debian:bookworm-slim instead (the
# Dockerfile's default, pinned by digest): the same distribution and package set.
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-localhost/dockyard-base:bookworm-slim}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if podman image exists "$BASE_IMAGE"; then
  exit 0
fi
for tool in mmdebstrap podman; do
  command -v "$tool" >/dev/null || { echo "base-image: $tool is missing (apt-get install $tool)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "[base-image] mmdebstrap bookworm (minbase) from $MIRROR"
# The excludes of the official slim image (debuerreotype's "slimify"): no man pages,
# docs or locales beyond what packages need to work.
mmdebstrap --quiet --variant=minbase --mode=root \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/groff/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --dpkgopt='path-exclude=/usr/share/linda/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --aptopt='APT::Install-Recommends "false"' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
  bookworm "$work/rootfs.tar" "$MIRROR"
podman import --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  "$work/rootfs.tar" "$BASE_IMAGE" >/dev/null
echo "[base-image] $BASE_IMAGE: $(podman image inspect --format '{{.Size}}' "$BASE_IMAGE") bytes"
