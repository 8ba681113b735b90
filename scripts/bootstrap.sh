#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment outside the repo and install Tandem into
# it, editable, with the test and dev extras. Prints the venv path as its last line.
# Reused when the pyproject and the checkout path are unchanged, so a warm run takes < 1 s.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${TANDEM_CACHE:-$HOME/.cache/tandem}
VENV=${TANDEM_VENV:-$CACHE/venv}
PY=${PYTHON:-python3}
mkdir -p "$CACHE"

if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "bootstrap: Python >= 3.11 is required ($("$PY" --version 2>&1))" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV" >&2
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >&2
fi
stamp="$VENV/.tandem-stamp"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $ROOT"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! "$VENV/bin/python" -c 'import tandem' 2>/dev/null; then
  start=$(date +%s)
  echo "bootstrap: installing tandem[dev] into $VENV" >&2
  "$VENV/bin/pip" install -q -e "$ROOT[dev]" >&2
  echo "$want" > "$stamp"
  echo "bootstrap: installed in $(( $(date +%s) - start ))s" >&2
fi
echo "$VENV"
