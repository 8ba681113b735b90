#!/usr/bin/env bash
# The local demo: a real control plane (kube-apiserver, etcd, controller-manager, scheduler,
# KWOK GPU nodes), the Helm chart installed, the operator running with the chart's RBAC, an
# example InferenceService reconciled and shown. A second run reuses the cluster and is fast.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export TANDEM_CACHE=${TANDEM_CACHE:-$HOME/.cache/tandem}
VENV=$(scripts/bootstrap.sh | tail -n1)
export PATH="$TANDEM_CACHE/bin:$VENV/bin:$PATH"
e2e/cluster.sh up
KUBECONFIG=$(e2e/cluster.sh kubeconfig)
export KUBECONFIG
exec python -m e2e.demo
