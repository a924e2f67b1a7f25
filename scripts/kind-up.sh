#!/usr/bin/env bash
# Dockyard on a local kind cluster, the development overlay (docs/deployment.md):
# creates the cluster (once), builds the image from the Dockerfile and loads it into
# kind, applies the CRDs, creates the Secrets and applies deploy/overlays/development,
# then waits for every rollout. Safe to run again: it reuses the cluster and the
# Secrets, and restarts the pods only when the image changed.
#
# Settings (environment):
#   KIND_CLUSTER_NAME   cluster name (default: dockyard)
#   DOCKYARD_DATABASE_URL, DOCKYARD_REDIS_URL, DOCKYARD_MANAGED_POSTGRES_URL
#                       when set, the Secret dockyard-platform holds these instead of
#                       DSNs of the in-cluster dev PostgreSQL and Redis
#   DOCKYARD_MIGRATION_DATABASE_URL
#                       the database owner's DSN, for the migrations (default:
#                       DOCKYARD_DATABASE_URL, else the dev PostgreSQL's)
#   ROLLOUT_TIMEOUT     how long to wait for each rollout (default: 300s)
# A DSN on loopback (127.0.0.1, localhost, ::1), as 'dockyard testbed env' exports, is
# refused before anything starts: the pods cannot reach this machine's loopback.
#
# Sourced ('source scripts/kind-up.sh'), it only defines its functions and settings: the
# unit tests run one step at a time that way.
set -euo pipefail

CLUSTER=${KIND_CLUSTER_NAME:-dockyard}
# The development overlay's image (deploy/overlays/development/kustomization.yaml).
IMAGE=ghcr.io/dockyard/dockyard:dev
TIMEOUT=${ROLLOUT_TIMEOUT:-300s}
NAMESPACE=dockyard-system
OVERLAY=deploy/overlays/development
# The variables whose DSNs go into the Secret dockyard-platform.
URL_SETTINGS=(DOCKYARD_DATABASE_URL DOCKYARD_MIGRATION_DATABASE_URL DOCKYARD_REDIS_URL
  DOCKYARD_MANAGED_POSTGRES_URL)

say() { echo "[kind-up] $*"; }

KUBECTL=(kubectl --context "kind-${CLUSTER}")

check_tools() {
  local tool missing=()
  for tool in docker kind kubectl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    echo "kind-up: needs ${missing[*]} on PATH (Docker, kind and kubectl; see docs/deployment.md)" >&2
    exit 2
  fi
  if ! docker info >/dev/null 2>&1; then
    echo "kind-up: the Docker daemon is not reachable ('docker info' fails); start Docker first" >&2
    exit 2
  fi
}

# The hosts of a DSN (libpq takes several, comma-separated), one a line, without the
# user, password, port or brackets. After the last '@' first: a password may hold '/'.
dsn_hosts() {
  local rest=${1#*://} host hosts=()
  rest=${rest##*@}
  rest=${rest%%[/?]*}
  IFS=, read -ra hosts <<<"$rest"
  for host in "${hosts[@]}"; do
    if [[ $host == \[* ]]; then
      host=${host#[}
      host=${host%%]*}
    else
      host=${host%%:*}
    fi
    printf '%s\n' "$host"
  done
}

# Stop, in one line, when a DSN setting points at loopback: a pod's loopback is its own,
# so it would never reach a database or Redis on this machine. Names the setting and the
# host, never the DSN (it holds a password).
refuse_loopback_urls() {
  local name host
  for name in "${URL_SETTINGS[@]}"; do
    [ -n "${!name:-}" ] || continue
    while IFS= read -r host; do
      case ${host,,} in
        localhost | localhost.* | *.localhost | 127.* | ::1 | 0:0:0:0:0:0:0:1)
          echo "kind-up: $name points at $host, this machine's loopback, which the pods cannot reach; unset it to use the dev PostgreSQL and Redis (after 'dockyard testbed env': unset ${URL_SETTINGS[*]}), or give an address the cluster reaches" >&2
          exit 2
          ;;
      esac
    done < <(dsn_hosts "${!name}")
  done
}

# A random hex string; od reads exactly what it needs, so no SIGPIPE under pipefail.
random_secret() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }

# The value of KEY in Secret NAME, or nothing when the Secret does not exist yet.
secret_value() {
  local name=$1 key=$2 encoded
  encoded=$("${KUBECTL[@]}" -n "$NAMESPACE" get secret "$name" \
    -o "jsonpath={.data.${key}}" --ignore-not-found)
  if [ -n "$encoded" ]; then printf '%s' "$encoded" | base64 -d; fi
}

# apply_secret NAME KEY=VALUE...: create or update the Secret, idempotently. The values
# go through files in the private directory $workdir, never through argv.
apply_secret() {
  local name=$1 pair args=()
  shift
  mkdir -p "$workdir/$name"
  for pair in "$@"; do
    printf '%s' "${pair#*=}" >"$workdir/$name/${pair%%=*}"
    args+=("--from-file=${pair%%=*}=$workdir/$name/${pair%%=*}")
  done
  "${KUBECTL[@]}" -n "$NAMESPACE" create secret generic "$name" "${args[@]}" \
    --dry-run=client -o yaml | "${KUBECTL[@]}" apply --server-side --force-conflicts -f -
}

# The dev PostgreSQL's and Redis's Secrets, and dockyard-platform: the DSN settings
# when set, else the dev PostgreSQL and Redis. The migrations run against
# DOCKYARD_MIGRATION_DATABASE_URL, else the same database as the API.
apply_secrets() {
  local pg_password redis_password cursor_key pg_host redis_host database_url
  # The dev PostgreSQL and Redis keep their passwords across runs (the database's data
  # volume was initialised with the first one).
  pg_password=$(secret_value dockyard-dev-postgres password)
  pg_password=${pg_password:-$(random_secret)}
  redis_password=$(secret_value dockyard-dev-redis password)
  redis_password=${redis_password:-$(random_secret)}
  # Kept across runs too, so that a list cursor handed out before a rerun still works.
  cursor_key=$(secret_value dockyard-platform cursor-key)
  cursor_key=${cursor_key:-$(random_secret)}
  say "creating the Secrets in $NAMESPACE"
  apply_secret dockyard-dev-postgres "password=$pg_password"
  apply_secret dockyard-dev-redis "password=$redis_password"

  pg_host="dockyard-dev-postgres.${NAMESPACE}.svc.cluster.local"
  redis_host="dockyard-dev-redis.${NAMESPACE}.svc.cluster.local"
  database_url=${DOCKYARD_DATABASE_URL:-postgresql://dockyard:${pg_password}@${pg_host}:5432/dockyard}
  apply_secret dockyard-platform \
    "database-url=${database_url}" \
    "migration-database-url=${DOCKYARD_MIGRATION_DATABASE_URL:-${database_url}}" \
    "redis-url=${DOCKYARD_REDIS_URL:-redis://:${redis_password}@${redis_host}:6379/0}" \
    "managed-postgres-url=${DOCKYARD_MANAGED_POSTGRES_URL:-postgresql://dockyard:${pg_password}@${pg_host}:5432/postgres}" \
    "cursor-key=${cursor_key}"
}

main() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  refuse_loopback_urls
  check_tools

  if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    say "kind cluster '$CLUSTER' already exists"
  else
    say "creating kind cluster '$CLUSTER'"
    kind create cluster --name "$CLUSTER" --wait 120s
  fi

  say "building $IMAGE"
  # BuildKit: the Dockerfile bind-mounts the builder's wheels.
  DOCKER_BUILDKIT=1 docker build --tag "$IMAGE" .
  say "loading $IMAGE into kind"
  kind load docker-image "$IMAGE" --name "$CLUSTER"
  local image_id
  image_id=$(docker image inspect --format '{{.Id}}' "$IMAGE")

  # The CRDs first: the overlay holds RateLimitPolicy objects, which need them established.
  say "applying crds/"
  "${KUBECTL[@]}" apply --server-side --force-conflicts -k crds
  "${KUBECTL[@]}" wait --for=condition=Established crd \
    -l app.kubernetes.io/part-of=dockyard --timeout=60s
  "${KUBECTL[@]}" apply --server-side --force-conflicts -f manifests/namespace.yaml

  # Secret values go through files in a private directory, never through argv.
  workdir=$(mktemp -d)
  trap 'rm -rf "$workdir"' EXIT
  chmod 700 "$workdir"
  apply_secrets

  # The tag stays the same across builds, so the pod templates carry the image's id: a
  # new build rolls the pods, an unchanged one leaves them alone. Added by a throwaway
  # overlay on top of the development one, so the repository's files stay as they are.
  say "applying $OVERLAY"
  mkdir -p "$workdir/overlay"
  # kustomize takes only relative paths: climb from the throwaway overlay to / first.
  local to_root
  to_root=$(printf '%s' "$workdir/overlay" | tr -cd '/' | sed 's#/#../#g')
  cat >"$workdir/overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ${to_root}${PWD#/}/$OVERLAY
patches:
  - target:
      kind: Deployment
      name: ^dockyard-(api|operator)\$
    patch: |-
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: any
      spec:
        template:
          metadata:
            annotations:
              dockyard.io/image-id: "${image_id}"
EOF
  "${KUBECTL[@]}" apply --server-side --force-conflicts -k "$workdir/overlay"

  say "waiting for the rollouts (up to $TIMEOUT each)"
  "${KUBECTL[@]}" -n "$NAMESPACE" rollout status statefulset/dockyard-dev-postgres --timeout="$TIMEOUT"
  "${KUBECTL[@]}" -n "$NAMESPACE" rollout status deployment/dockyard-dev-redis --timeout="$TIMEOUT"
  "${KUBECTL[@]}" -n "$NAMESPACE" rollout status deployment/dockyard-api --timeout="$TIMEOUT"
  "${KUBECTL[@]}" -n "$NAMESPACE" rollout status deployment/dockyard-operator --timeout="$TIMEOUT"

  say "Dockyard is up on kind cluster '$CLUSTER' (context kind-${CLUSTER})"
  say "API: kubectl --context kind-${CLUSTER} -n $NAMESPACE port-forward svc/dockyard-api 8080:8080"
  say "then: curl http://127.0.0.1:8080/readyz"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
