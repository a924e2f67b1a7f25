# syntax=docker/dockerfile:1
# The one Dockyard image: the API (`dockyard api`, the default), the operator
# (`dockyard operator`), the migrations (`dockyard migrate`) and the backup runner Jobs
# (`dockyard backup-run`, DOCKYARD_RUNNER_IMAGE). See docs/deployment.md.
#
#   docker build -t ghcr.io/dockyard/dockyard:dev .
#   make image        # the same file with podman, FROM a base built here (scripts/base-image.sh)
#
# It runs as the numeric user 10001 (so `runAsNonRoot` can be verified) on a read-only
# root filesystem: nothing writes outside /tmp, which the manifests mount as an emptyDir.

# Debian bookworm slim, pinned by digest; Python is Debian's own 3.11 in both stages (the
# builder's virtualenv is copied into the runtime, so both must be the same base).
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim@sha256:3783cc01769c7b2b1b83a5c5ad96c815348e28ed7da68e2e3687004faa906251

# -- builder: a virtualenv with the project and every dependency ---------------------------
FROM ${BASE_IMAGE} AS builder
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates \
        python3 \
        python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# What the package is built from, and nothing else (see .dockerignore).
COPY pyproject.toml README.md constraints.txt ./
COPY dockyard ./dockyard
# constraints.txt pins every version (scripts/lock.sh), so the image runs what CI tested;
# every dependency has a binary wheel, so no compiler is needed. An optional build
# secret "ca" adds a CA bundle for pip (a TLS-intercepting proxy, as on the build
# machine of `make image`). pip and its cache stay in this stage.
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && python3 -m venv /opt/dockyard \
    && PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/dockyard/bin/pip install --no-cache-dir \
        --constraint constraints.txt . \
    && /opt/dockyard/bin/pip uninstall --yes pip setuptools

# -- runtime ------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
ARG BASE_IMAGE

# Debian's Python for the virtualenv; pg_dump and pg_restore of the PostgreSQL server's
# major version (15, as the test bed's Debian packages and the development overlay's
# server); zstd compresses backup artifacts. All from Debian bookworm; no compilers.
ARG PG_MAJOR=15
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates \
        python3 \
        "postgresql-client-${PG_MAJOR}" \
        zstd \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin

COPY --from=builder /opt/dockyard /opt/dockyard

RUN groupadd --system --gid 10001 dockyard \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin dockyard

# The client tools of that major first on PATH, whatever else Debian's wrapper might
# pick, then the virtualenv; no .pyc written at run time (the root filesystem is
# read-only, and pip compiled them at install); HOME in /tmp.
ENV PATH="/usr/lib/postgresql/${PG_MAJOR}/bin:/opt/dockyard/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp

# CI passes the release's version, commit and repository.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/dockyard/dockyard
LABEL org.opencontainers.image.title="dockyard" \
      org.opencontainers.image.description="Kubernetes-native environments, PostgreSQL databases, backups and restore drills: API, operator and backup runner" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

USER 10001:10001
WORKDIR /tmp
# 8080: the API; 9090: the API's /metrics; 9091: the operator's /metrics.
EXPOSE 8080 9090 9091
ENTRYPOINT ["dockyard"]
CMD ["api", "--host", "0.0.0.0", "--port", "8080"]
