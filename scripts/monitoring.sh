#!/usr/bin/env bash
# Check Dockyard's alerts (manifests/monitoring/) with promtool: `promtool check rules`
# and the rule unit tests (`promtool test rules`). promtool is built once from the Go
# module proxy and cached, like the test bed's control plane; `make test` runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=v0.316.0  # github.com/prometheus/prometheus (Prometheus 3.x module versions)
DIR="${XDG_CACHE_HOME:-$HOME/.cache}/dockyard/promtool-$VERSION"
if [ ! -x "$DIR/promtool" ]; then
  command -v go >/dev/null || { echo "monitoring: 'go' is not on PATH; install Go 1.26 or later" >&2; exit 1; }
  echo "monitoring: building promtool $VERSION from the Go module proxy (once, cached in $DIR)"
  mkdir -p "$DIR"
  GOBIN="$DIR" GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" \
    go install "github.com/prometheus/prometheus/cmd/promtool@$VERSION"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The PrometheusRule's groups are the rule file: one source for both.
.venv/bin/python - "$work/rules.yaml" <<'PY'
import sys, yaml
rule = yaml.safe_load(open("manifests/monitoring/prometheusrule.yaml"))
yaml.safe_dump({"groups": rule["spec"]["groups"]}, open(sys.argv[1], "w"), sort_keys=False)
PY
cp manifests/monitoring/rules.test.yaml "$work/"
"$DIR/promtool" check rules "$work/rules.yaml"
"$DIR/promtool" test rules "$work/rules.test.yaml"
