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
#   ROLLOUT_TIMEOUT     how long to wait for each rollout (default: 300s)
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER_NAME:-dockyard}
# The development overlay's image (deploy/overlays/development/kustomization.yaml).
IMAGE=ghcr.io/dockyard/dockyard:dev
TIMEOUT=${ROLLOUT_TIMEOUT:-300s}
NAMESPACE=dockyard-system
OVERLAY=deploy/overlays/development

say() { echo "[kind-up] $*"; }

missing=()
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

KUBECTL=(kubectl --context "kind-${CLUSTER}")

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
image_id=$(docker image inspect --format '{{.Id}}' "$IMAGE")

# The CRDs first: the overlay holds RateLimitPolicy objects, which need them established.
say "applying crds/"
"${KUBECTL[@]}" apply --server-side --force-conflicts -k crds
"${KUBECTL[@]}" wait --for=condition=Established crd \
  -l app.kubernetes.io/part-of=dockyard --timeout=60s
"${KUBECTL[@]}" apply --server-side --force-conflicts -f manifests/namespace.yaml

# A random hex string; od reads exactly what it needs, so no SIGPIPE under pipefail.
random_secret() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }

# The value of KEY in Secret NAME, or nothing when the Secret does not exist yet.
secret_value() {
  local name=$1 key=$2 encoded
  encoded=$("${KUBECTL[@]}" -n "$NAMESPACE" get secret "$name" \
    -o "jsonpath={.data.${key}}" --ignore-not-found)
  if [ -n "$encoded" ]; then printf '%s' "$encoded" | base64 -d; fi
}

# Secret values go through files in a private directory, never through argv.
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
chmod 700 "$workdir"

# apply_secret NAME KEY=VALUE...: create or update the Secret, idempotently.
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
apply_secret dockyard-platform \
  "database-url=${DOCKYARD_DATABASE_URL:-postgresql://dockyard:${pg_password}@${pg_host}:5432/dockyard}" \
  "migration-database-url=${DOCKYARD_MIGRATION_DATABASE_URL:-postgresql://dockyard:${pg_password}@${pg_host}:5432/dockyard}" \
  "redis-url=${DOCKYARD_REDIS_URL:-redis://:${redis_password}@${redis_host}:6379/0}" \
  "managed-postgres-url=${DOCKYARD_MANAGED_POSTGRES_URL:-postgresql://dockyard:${pg_password}@${pg_host}:5432/postgres}" \
  "cursor-key=${cursor_key}"

# The tag stays the same across builds, so the pod templates carry the image's id: a
# new build rolls the pods, an unchanged one leaves them alone. Added by a throwaway
# overlay on top of the development one, so the repository's files stay as they are.
say "applying $OVERLAY"
mkdir -p "$workdir/overlay"
# kustomize takes only relative paths: climb from the throwaway overlay to / first.
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
