# syntax=docker/dockerfile:1
# The one Dockyard image: the API (`dockyard api`, the default), the operator
# (`dockyard operator`), the migrations (`dockyard migrate`) and the backup runner Jobs
# (`dockyard backup-run`, DOCKYARD_RUNNER_IMAGE). See docs/deployment.md.
#
#   docker build -t ghcr.io/dockyard/dockyard:dev .
#
# It runs as the numeric user 10001 (so `runAsNonRoot` can be verified) on a read-only
# root filesystem: nothing writes outside /tmp, which the manifests mount as an emptyDir.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- builder: wheels of the project and of every dependency -------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# What the wheel is built from, and nothing else (see .dockerignore).
COPY pyproject.toml README.md constraints.txt ./
COPY dockyard ./dockyard
# pip's cache lives in a BuildKit cache mount, not in a layer: a rebuild after a code
# change does not download every dependency again. constraints.txt pins every version
# (scripts/lock.sh), so the image runs what CI tested.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip wheel --constraint constraints.txt --wheel-dir /wheels .

# -- runtime ------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON_IMAGE

# pg_dump and pg_restore must be of the PostgreSQL server's major version (15, as the
# test bed's Debian packages and the development overlay's server); zstd compresses
# backup artifacts. Both from Debian bookworm itself; no compilers.
ARG PG_MAJOR=15
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        "postgresql-client-${PG_MAJOR}" \
        zstd \
    && rm -rf /var/lib/apt/lists/*

# Installed from the builder's wheels only (no index), then the wheels are gone: they
# are bind-mounted, never copied into a layer.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    PIP_ROOT_USER_ACTION=ignore pip install --no-cache-dir --no-index --find-links=/wheels dockyard

RUN groupadd --system --gid 10001 dockyard \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin dockyard

# The client tools of that major first on PATH, whatever else Debian's wrapper might
# pick; no .pyc written at run time (the root filesystem is read-only); HOME in /tmp.
ENV PATH="/usr/lib/postgresql/${PG_MAJOR}/bin:${PATH}" \
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
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

USER 10001:10001
WORKDIR /tmp
# 8080: the API; 9090: the API's /metrics; 9091: the operator's /metrics.
EXPOSE 8080 9090 9091
ENTRYPOINT ["dockyard"]
CMD ["api", "--host", "0.0.0.0", "--port", "8080"]
