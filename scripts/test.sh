#!/usr/bin/env bash
# Run every test tier: lint and types, unit and component tests, the end-to-end suite on a
# real local control plane, and the real-vLLM data-plane tier. Fails on any failure; nothing is
# skipped silently. Caches (venvs, Kubernetes binaries) live in $TANDEM_CACHE, outside the repo.
#
#   scripts/test.sh            everything
#   TANDEM_TIERS="unit" scripts/test.sh     only some tiers (unit, e2e, dataplane)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export TANDEM_CACHE=${TANDEM_CACHE:-$HOME/.cache/tandem}
TIERS=${TANDEM_TIERS:-"unit e2e dataplane"}
has() { [[ " $TIERS " == *" $1 "* ]]; }
t0=$(date +%s)
step() { echo; echo "==> $* ($(( $(date +%s) - t0 ))s)"; }

step "Python environment"
VENV=$(scripts/bootstrap.sh | tail -n1)
export PATH="$TANDEM_CACHE/bin:$VENV/bin:$PATH"

step "Checkov environment (policy checks of the rendered children and the chart)"
TANDEM_CHECKOV=$(scripts/checkov_env.sh | tail -n1)
export TANDEM_CHECKOV

step "Cluster tools (kubectl, helm, kube-apiserver, kwok, etcd)"
e2e/cluster.sh tools

step "Lint, types, import contracts, CRD drift"
ruff check operator tests e2e bench
ruff format --check operator tests e2e bench
mypy
lint-imports --config .importlinter
tandem crds --check

markers=()
if has e2e; then
  step "Local control plane"
  e2e/cluster.sh up
  KUBECONFIG=$(e2e/cluster.sh kubeconfig)
  export KUBECONFIG
  trap 'e2e/cluster.sh down >/dev/null 2>&1 || true' EXIT
else
  markers+=("not e2e")
fi
if has dataplane; then
  step "Data-plane environment (vLLM CPU build, NIXL, LMCache)"
  TANDEM_VLLM_PYTHON=$(e2e/dataplane/setup_env.sh | tail -n1)
  export TANDEM_VLLM_PYTHON
else
  markers+=("not dataplane")
fi
has unit || markers+=("e2e or dataplane")

step "pytest"
expr=""
for m in "${markers[@]+"${markers[@]}"}"; do expr="${expr:+$expr and }($m)"; done
python -m pytest ${expr:+-m "$expr"} -p no:cacheprovider --timeout=600 --durations=10 "$@"
step "done"
