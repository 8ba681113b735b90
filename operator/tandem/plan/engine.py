"""The vLLM engine of one pool: command line, environment, ports, resources, probes, volumes.

Every vLLM flag is derived here, in one place, so ``tandem render`` shows exactly what the
engines run and the data-plane tests start real engines with the same arguments. Connector
specifics come from the pool's :class:`~tandem.plan.kv.KvStrategy`.
"""

from __future__ import annotations

import json
from typing import Any, Final

from tandem.api.v1alpha1 import Dtype, InferenceServiceSpec, KVCacheDtype
from tandem.api.vocabulary import Role
from tandem.plan.kv import KvStrategy, kv_config_json
from tandem.plan.model import ContainerPort, Json
from tandem.plan.names import ENGINE_PORT_NAME

ENGINE_COMMAND: Final = ("vllm", "serve")
MODEL_MOUNT: Final = "/mnt/models"
CACHE_MOUNT: Final = "/var/cache/vllm"
# P and D must hash prompt chunks identically (LMCache keys chunks with Python's hash()).
PYTHONHASHSEED: Final = "0"
HEALTH_PATH: Final = "/health"

# Requests when spec.<pool>.resources leaves them unset, per GPU of a replica.
CPU_PER_GPU: Final = 4
MEMORY_GIB_PER_GPU: Final = 32

# Defaults a user may replace through engine/pool env.
ENV_DEFAULTS: Final = {
    "HF_HOME": f"{CACHE_MOUNT}/huggingface",
    "VLLM_CACHE_ROOT": f"{CACHE_MOUNT}/vllm",
    # UCX turns off zero-copy GET over cuda_ipc when it detects no NVLink, and NIXL READs (how
    # the decode side pulls KV) then fall back to software emulation over TCP. Measured between
    # two processes on one H100 without NVLink peers (bench/nixl_kv_bench.py, Llama-3.1-8B KV,
    # 8,192 tokens, 1 GiB): 2,526-2,654 ms (0.4 GB/s) with UCX's default, 2.6-2.9 ms
    # (372-410 GB/s) with "yes". It only matters where cuda_ipc reaches the peer (same node, the
    # peer's GPU visible); elsewhere UCX picks RDMA or TCP and the setting has no effect.
    "UCX_CUDA_IPC_ENABLE_GET_ZCOPY": "yes",
}


def served_name(spec: InferenceServiceSpec, name: str) -> str:
    return spec.model.served_name or name


def pvc_claim(spec: InferenceServiceSpec) -> tuple[str, str] | None:
    """``(claim, path inside it)`` of a ``pvc://`` model, else None."""
    if not spec.model.uri.startswith("pvc://"):
        return None
    claim, _, path = spec.model.uri.removeprefix("pvc://").partition("/")
    return claim, path.strip("/")


def model_location(spec: InferenceServiceSpec) -> tuple[str, list[str]]:
    """vLLM's model argument and the flags that go with the URI scheme."""
    uri = spec.model.uri
    scheme, rest = uri.split("://", 1)
    if scheme == "hf":
        extra = ["--revision", spec.model.revision] if spec.model.revision else []
        return rest, extra
    claim = pvc_claim(spec)
    if claim is not None:
        name, path = claim
        return f"{MODEL_MOUNT}/{name}" + (f"/{path}" if path else ""), []
    return uri, ["--load-format", "runai_streamer"]


def _toggle(flag: str, value: bool | None) -> list[str]:
    if value is None:
        return []
    return [f"--{flag}"] if value else [f"--no-{flag}"]


def _speculative(spec: InferenceServiceSpec, role: Role) -> list[str]:
    sd = spec.engine.speculative_decoding
    if sd is None or role is not Role.DECODE:
        return []
    cfg: dict[str, Any] = {"num_speculative_tokens": sd.num_speculative_tokens}
    if sd.method == "ngram":
        cfg |= {
            "method": "ngram",
            "prompt_lookup_max": sd.prompt_lookup_max,
            "prompt_lookup_min": sd.prompt_lookup_min,
        }
    else:
        cfg["model"] = sd.draft_model
    return ["--speculative-config", json.dumps(cfg, separators=(",", ":"), sort_keys=True)]


def _model_flags(spec: InferenceServiceSpec) -> list[str]:
    args: list[str] = []
    if spec.model.max_model_len is not None:
        args += ["--max-model-len", str(spec.model.max_model_len)]
    if spec.model.dtype != Dtype.AUTO:
        args += ["--dtype", str(spec.model.dtype)]
    if spec.model.quantization is not None:
        args += ["--quantization", str(spec.model.quantization)]
    if spec.engine.kv_cache_dtype != KVCacheDtype.AUTO:
        args += ["--kv-cache-dtype", str(spec.engine.kv_cache_dtype)]
    return args


def engine_args(spec: InferenceServiceSpec, name: str, role: Role, kv: KvStrategy) -> list[str]:
    """The arguments after ``vllm serve``."""
    pool, eng = spec.pool(role), spec.engine
    model, model_flags = model_location(spec)
    par = pool.parallelism
    args = [
        model,
        "--served-model-name", served_name(spec, name),
        "--host", "0.0.0.0",
        "--port", str(eng.port),
        "--tensor-parallel-size", str(par.tensor),
        "--pipeline-parallel-size", str(par.pipeline),
        *model_flags,
    ]  # fmt: skip
    if par.gpus > 1:
        args += ["--distributed-executor-backend", "mp"]
    args += _model_flags(spec)
    prefix_caching = eng.prefix_caching
    if prefix_caching is None:
        prefix_caching = kv.prefix_caching_default()
    args += _toggle("enable-prefix-caching", prefix_caching)
    args += _toggle("enable-chunked-prefill", eng.chunked_prefill)
    if eng.gpu_memory_utilization_percent is not None:
        args += ["--gpu-memory-utilization", f"{eng.gpu_memory_utilization_percent / 100:.2f}"]
    if eng.enforce_eager:
        args.append("--enforce-eager")
    args += _speculative(spec, role)
    args += ["--kv-transfer-config", kv_config_json(kv.kv_transfer_config(role))]
    return args + list(eng.args) + list(pool.args)


def engine_env(spec: InferenceServiceSpec, role: Role, kv: KvStrategy) -> list[Json]:
    """Derived variables first, then tunable defaults (a user value replaces one in place), then
    the rest of ``spec.engine.env`` and ``spec.<pool>.env`` (the pool's wins). One entry per
    name: server-side apply merges the list by name and rejects duplicates. Variables Tandem
    derives cannot be overridden (admission rejects them, see ``tandem.api.owned``)."""
    derived: list[Json] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "PYTHONHASHSEED", "value": PYTHONHASHSEED},
    ]
    if spec.model.token_secret_ref is not None:
        ref = spec.model.token_secret_ref
        derived.append(
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
        )
    derived += kv.engine_env(role)
    owned = {e["name"] for e in derived}
    user = {var.name: var.value for var in [*spec.engine.env, *spec.pool(role).env]}
    env = derived + [{"name": k, "value": user.pop(k, v)} for k, v in ENV_DEFAULTS.items()]
    env += [{"name": k, "value": v} for k, v in user.items() if k not in owned]
    return env


def engine_ports(spec: InferenceServiceSpec, role: Role, kv: KvStrategy) -> list[ContainerPort]:
    return [ContainerPort(ENGINE_PORT_NAME, spec.engine.port), *kv.engine_ports(role)]


def engine_resources(spec: InferenceServiceSpec, role: Role) -> Json:
    """GPUs (tensor x pipeline), CPU and memory (defaults per GPU: an engine pod is never
    BestEffort, the first to be evicted), ephemeral storage and extra resources (RDMA NICs)."""
    pool = spec.pool(role)
    res = pool.resources
    n = pool.parallelism.gpus
    requests: dict[str, str] = {res.gpu_resource_name: str(n)}
    limits: dict[str, str] = {res.gpu_resource_name: str(n)}
    requests["cpu"] = res.cpu or str(CPU_PER_GPU * n)
    requests["memory"] = res.memory or f"{MEMORY_GIB_PER_GPU * n}Gi"
    if res.memory:
        limits["memory"] = res.memory
    if res.ephemeral_storage:
        requests["ephemeral-storage"] = limits["ephemeral-storage"] = res.ephemeral_storage
    for name, quantity in res.extra.items():
        requests[name] = limits[name] = quantity
    return {"requests": requests, "limits": limits}


def engine_capabilities(spec: InferenceServiceSpec) -> tuple[str, ...]:
    """Linux capabilities the engine keeps (all others are dropped): IPC_LOCK for RDMA, where
    UCX pins the memory it registers with the NIC."""
    return ("IPC_LOCK",) if spec.kv_transfer.rdma else ()


def _probe(period: int, failures: int) -> Json:
    return {
        "httpGet": {"path": HEALTH_PATH, "port": ENGINE_PORT_NAME},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 5,
    }


def engine_probes(spec: InferenceServiceSpec) -> dict[str, Json]:
    """Startup within the model-loading budget, then readiness and liveness on ``/health``."""
    startup_failures = max(1, -(-spec.engine.startup_timeout_seconds // 10))
    return {
        "startupProbe": _probe(10, startup_failures),
        "readinessProbe": _probe(5, 3),
        "livenessProbe": _probe(10, 3),
    }


def engine_volumes(
    spec: InferenceServiceSpec, role: Role, kv: KvStrategy
) -> tuple[list[Json], list[Json]]:
    """Shared memory, the download cache, a ``pvc://`` model and the connector's volumes."""
    storage = spec.pool(role).resources.ephemeral_storage
    volumes: list[Json] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.engine.shm_size}},
        {"name": "cache", "emptyDir": {"sizeLimit": storage} if storage else {}},
    ]
    mounts: list[Json] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "cache", "mountPath": CACHE_MOUNT},
    ]
    claim = pvc_claim(spec)
    if claim is not None:
        name = claim[0]
        volumes.append(
            {"name": "model", "persistentVolumeClaim": {"claimName": name, "readOnly": True}}
        )
        mounts.append({"name": "model", "mountPath": f"{MODEL_MOUNT}/{name}", "readOnly": True})
    kv_volumes, kv_mounts = kv.volumes(role)
    return volumes + kv_volumes, mounts + kv_mounts
