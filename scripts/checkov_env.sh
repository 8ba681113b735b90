#!/usr/bin/env bash
# A separate, cached virtual environment with Checkov (its pins clash with Tandem's own), used by
# tests/policy to check every rendered example and the Helm chart against Checkov's Kubernetes
# rules. Prints the checkov executable as its last line; a warm run takes < 1 s.
set -euo pipefail
CACHE=${TANDEM_CACHE:-$HOME/.cache/tandem}
VERSION=3.3.30
VENV=$CACHE/checkov-$VERSION
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/checkov" ]; then
  start=$(date +%s)
  echo "checkov_env: installing checkov $VERSION into $VENV" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >&2
  "$VENV/bin/pip" install -q "checkov==$VERSION" >&2
  echo "checkov_env: installed in $(( $(date +%s) - start ))s" >&2
fi
echo "$VENV/bin/checkov"
