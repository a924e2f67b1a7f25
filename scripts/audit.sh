#!/usr/bin/env bash
# Dependency audit with pip-audit, where the vulnerability data can be reached.
# Where it cannot (the advisory service or PyPI's JSON API is out of reach, as on a
# machine that only sees a package mirror), say so in one line and go on.
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(timeout 180 .venv/bin/pip-audit --skip-editable --progress-spinner off 2>&1)
rc=$?
if echo "$out" | grep -qE "Found [0-9]+ known vulnerabilit"; then
  echo "$out"
  exit 1
fi
unaudited=$(echo "$out" | grep -c "could not be audited" || true)
if [ $rc -ne 0 ] && echo "$out" | grep -qiE "connection|timed out|resolve|network|Max retries"; then
  echo "dependency audit skipped: the vulnerability service could not be reached"
elif [ "$unaudited" -gt 0 ]; then
  echo "dependency audit skipped for $unaudited packages: their vulnerability data could not be reached"
elif [ $rc -eq 0 ]; then
  echo "dependency audit: no known vulnerabilities"
else
  echo "$out"
  exit $rc
fi
