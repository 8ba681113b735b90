"""The vLLM engine pools: command line, pod template, Deployment and headless Service.

Every vLLM flag is derived from the spec here, in one place, so ``tandem render`` shows exactly
what the engines run and the data-plane tests can start real engines with the same arguments.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

from tandem.api.v1alpha1 import (
    Connector,
    Dtype,
    EngineSpec,
    InferenceServiceSpec,
    KVCacheDtype,
    PoolSpec,
)
from tandem.api.vocabulary import Role
from tandem.render import lmcache
from tandem.render.kvconfig import kv_transfer_config_json
from tandem.render.meta import Owner, metadata
from tandem.render.names import (
    ENGINE_PORT_NAME,
    labels,
    lmcache_config_name,
    pool_name,
    selector_labels,
)

ENGINE_COMMAND: Final = ["vllm", "serve"]
ENGINE_COMPONENT: Final = "vllm"
MODEL_MOUNT: Final = "/mnt/models"
CACHE_MOUNT: Final = "/var/cache/vllm"
# P and D must hash prompt chunks identically (LMCache keys chunks with Python's hash()).
PYTHONHASHSEED: Final = "0"
NIXL_PORT_NAME: Final = "nixl"
PRESTOP_SECONDS: Final = 15

# Flags Tandem derives; engine/pool args may not override them (the reconciler reports
# ConflictingEngineArgs instead of starting engines that disagree with the router).
OWNED_FLAGS: Final = frozenset(
    {
        "--model",
        "--served-model-name",
        "--host",
        "--port",
        "--tensor-parallel-size",
        "-tp",
        "--pipeline-parallel-size",
        "-pp",
        "--kv-transfer-config",
    }
)


# Variables Tandem derives from the spec; engine/pool env may not set them.
OWNED_ENV: Final = frozenset(
    {
        "POD_IP",
        "PYTHONHASHSEED",
        "HF_TOKEN",
        "VLLM_NIXL_SIDE_CHANNEL_HOST",
        "VLLM_NIXL_SIDE_CHANNEL_PORT",
        "LMCACHE_CONFIG_FILE",
        "LMCACHE_PD_PEER_HOST",
    }
)

# Defaults a user may replace through engine/pool env.
ENV_DEFAULTS: Final = {
    # UCX turns off zero-copy GET over cuda_ipc when it detects no NVLink, and NIXL READs (how
    # the decode side pulls KV) then fall back to software emulation over TCP. Measured between
    # two processes on one H100 without NVLink peers (bench/nixl_kv_bench.py, Llama-3.1-8B KV,
    # 8,192 tokens, 1 GiB): 2,526-2,654 ms (0.4 GB/s) with UCX's default, 2.6-2.9 ms
    # (372-410 GB/s) with "yes". It only matters where cuda_ipc reaches the peer (same node, the
    # peer's GPU visible); elsewhere UCX picks RDMA or TCP and the setting has no effect.
    "UCX_CUDA_IPC_ENABLE_GET_ZCOPY": "yes",
}


def _places(spec: InferenceServiceSpec) -> tuple[tuple[str, EngineSpec | PoolSpec], ...]:
    """Where args and env can be given, with the spec path each is reported under."""
    return (("engine", spec.engine), ("prefill", spec.prefill), ("decode", spec.decode))


def owned_flag_conflicts(spec: InferenceServiceSpec) -> list[str]:
    """``spec.<where>.args`` entries that set a flag Tandem derives."""
    found = []
    for where, part in _places(spec):
        for arg in part.args:
            flag = arg.split("=", 1)[0]
            if flag in OWNED_FLAGS or flag.startswith("--kv-transfer-config."):
                found.append(f"spec.{where}.args: {flag}")
    return found


def served_name(spec: InferenceServiceSpec, name: str) -> str:
    return spec.model.served_name or name


def model_location(spec: InferenceServiceSpec) -> tuple[str, list[str]]:
    """vLLM's model argument and the flags that go with the URI scheme."""
    uri = spec.model.uri
    scheme, rest = uri.split("://", 1)
    if scheme == "hf":
        extra = ["--revision", spec.model.revision] if spec.model.revision else []
        return rest, extra
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        return f"{MODEL_MOUNT}/{claim}" + (f"/{path.strip('/')}" if path.strip("/") else ""), []
    return uri, ["--load-format", "runai_streamer"]


def _toggle(flag: str, value: bool | None) -> list[str]:
    if value is None:
        return []
    return [f"--{flag}"] if value else [f"--no-{flag}"]


def engine_args(spec: InferenceServiceSpec, name: str, role: Role) -> list[str]:
    """The arguments after ``vllm serve``."""
    pool: PoolSpec = spec.pool(role)
    eng = spec.engine
    model, model_flags = model_location(spec)
    par = pool.parallelism
    args = [
        model,
        "--served-model-name",
        served_name(spec, name),
        "--host",
        "0.0.0.0",
        "--port",
        str(eng.port),
        "--tensor-parallel-size",
        str(par.tensor),
        "--pipeline-parallel-size",
        str(par.pipeline),
        *model_flags,
    ]
    if par.gpus > 1:
        args += ["--distributed-executor-backend", "mp"]
    if spec.model.max_model_len is not None:
        args += ["--max-model-len", str(spec.model.max_model_len)]
    if spec.model.dtype != Dtype.AUTO:
        args += ["--dtype", str(spec.model.dtype)]
    if spec.model.quantization is not None:
        args += ["--quantization", str(spec.model.quantization)]
    if eng.kv_cache_dtype != KVCacheDtype.AUTO:
        args += ["--kv-cache-dtype", str(eng.kv_cache_dtype)]
    prefix_caching = eng.prefix_caching
    if prefix_caching is None and spec.kv_transfer.connector == Connector.LMCACHE:
        prefix_caching = False
    args += _toggle("enable-prefix-caching", prefix_caching)
    args += _toggle("enable-chunked-prefill", eng.chunked_prefill)
    if eng.gpu_memory_utilization_percent is not None:
        args += ["--gpu-memory-utilization", f"{eng.gpu_memory_utilization_percent / 100:.2f}"]
    if eng.enforce_eager:
        args.append("--enforce-eager")
    sd = eng.speculative_decoding
    if sd is not None and role == Role.DECODE:
        cfg: dict[str, Any] = {"num_speculative_tokens": sd.num_speculative_tokens}
        if sd.method == "ngram":
            cfg |= {
                "method": "ngram",
                "prompt_lookup_max": sd.prompt_lookup_max,
                "prompt_lookup_min": sd.prompt_lookup_min,
            }
        else:
            cfg["model"] = sd.draft_model
        args += ["--speculative-config", json.dumps(cfg, separators=(",", ":"), sort_keys=True)]
    args += ["--kv-transfer-config", kv_transfer_config_json(spec, role)]
    return args + list(eng.args) + list(pool.args)


def engine_env(spec: InferenceServiceSpec, role: Role) -> list[dict[str, Any]]:
    """Derived variables first, then tunable defaults (a user value replaces one in place), then
    the rest of ``spec.engine.env`` and ``spec.<pool>.env`` (the pool's wins). One entry per
    name: server-side apply merges the list by name and rejects duplicates. Variables Tandem
    derives cannot be overridden (see :func:`owned_env_conflicts`)."""
    pool: PoolSpec = spec.pool(role)
    derived: list[dict[str, Any]] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "PYTHONHASHSEED", "value": PYTHONHASHSEED},
    ]
    if spec.model.token_secret_ref is not None:
        ref = spec.model.token_secret_ref
        derived.append(
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
        )
    if spec.kv_transfer.connector == Connector.NIXL:
        derived += [
            {"name": "VLLM_NIXL_SIDE_CHANNEL_HOST", "value": "$(POD_IP)"},
            {
                "name": "VLLM_NIXL_SIDE_CHANNEL_PORT",
                "value": str(spec.kv_transfer.nixl_settings.side_channel_port),
            },
        ]
    else:
        derived.append({"name": "LMCACHE_CONFIG_FILE", "value": lmcache.config_path(role)})
        if role == Role.DECODE:
            derived.append({"name": "LMCACHE_PD_PEER_HOST", "value": "$(POD_IP)"})
    user = {var.name: var.value for var in [*spec.engine.env, *pool.env]}
    defaults = {
        "HF_HOME": f"{CACHE_MOUNT}/huggingface",
        "VLLM_CACHE_ROOT": f"{CACHE_MOUNT}/vllm",
        **ENV_DEFAULTS,
    }
    env = derived + [{"name": k, "value": user.pop(k, v)} for k, v in defaults.items()]
    owned = {e["name"] for e in derived}
    env += [{"name": k, "value": v} for k, v in user.items() if k not in owned]
    return env


def owned_env_conflicts(spec: InferenceServiceSpec) -> list[str]:
    """``spec.<where>.env`` entries that set a variable Tandem derives."""
    return [
        f"spec.{where}.env: {var.name}"
        for where, part in _places(spec)
        for var in part.env
        if var.name in OWNED_ENV
    ]


def _ports(spec: InferenceServiceSpec, role: Role) -> list[dict[str, Any]]:
    ports = [{"name": ENGINE_PORT_NAME, "containerPort": spec.engine.port, "protocol": "TCP"}]
    kv = spec.kv_transfer
    if kv.connector == Connector.NIXL:
        port = kv.nixl_settings.side_channel_port
        ports.append({"name": NIXL_PORT_NAME, "containerPort": port, "protocol": "TCP"})
    elif role == Role.DECODE:
        init_ports, alloc_ports = lmcache.decoder_ports(spec)
        for rank, (i, a) in enumerate(zip(init_ports, alloc_ports, strict=True)):
            ports.append({"name": f"lmc-init-{rank}", "containerPort": i, "protocol": "TCP"})
            ports.append({"name": f"lmc-alloc-{rank}", "containerPort": a, "protocol": "TCP"})
    return ports


def _resources(spec: InferenceServiceSpec, role: Role) -> dict[str, Any]:
    pool: PoolSpec = spec.pool(role)
    gpus = str(pool.parallelism.gpus)
    gpu_name = pool.resources.gpu_resource_name
    requests: dict[str, str] = {gpu_name: gpus}
    limits: dict[str, str] = {gpu_name: gpus}
    if pool.resources.cpu:
        requests["cpu"] = pool.resources.cpu
    if pool.resources.memory:
        requests["memory"] = pool.resources.memory
        limits["memory"] = pool.resources.memory
    return {"requests": requests, "limits": limits}


def _probe(path: str, port: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 5,
    }


def pod_template(
    spec: InferenceServiceSpec, name: str, role: Role, config_hash: str | None
) -> dict[str, Any]:
    pool: PoolSpec = spec.pool(role)
    eng = spec.engine
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": eng.shm_size}},
        {"name": "cache", "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "cache", "mountPath": CACHE_MOUNT},
    ]
    if spec.model.uri.startswith("pvc://"):
        claim = spec.model.uri.removeprefix("pvc://").split("/", 1)[0]
        volumes.append(
            {"name": "model", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
        mounts.append({"name": "model", "mountPath": f"{MODEL_MOUNT}/{claim}", "readOnly": True})
    if spec.kv_transfer.connector == Connector.LMCACHE:
        volumes.append(
            {
                "name": "lmcache-config",
                "configMap": {
                    "name": lmcache_config_name(name),
                    "items": [{"key": lmcache.config_key(role), "path": lmcache.config_key(role)}],
                },
            }
        )
        mounts.append({"name": "lmcache-config", "mountPath": lmcache.CONFIG_DIR, "readOnly": True})
    startup_failures = max(1, -(-eng.startup_timeout_seconds // 10))
    container: dict[str, Any] = {
        "name": "engine",
        "image": eng.image,
        "imagePullPolicy": eng.image_pull_policy,
        "command": list(ENGINE_COMMAND),
        "args": engine_args(spec, name, role),
        "env": engine_env(spec, role),
        "ports": _ports(spec, role),
        "resources": _resources(spec, role),
        "volumeMounts": mounts,
        "startupProbe": _probe("/health", ENGINE_PORT_NAME, 10, startup_failures),
        "readinessProbe": _probe("/health", ENGINE_PORT_NAME, 5, 3),
        "livenessProbe": _probe("/health", ENGINE_PORT_NAME, 10, 3),
        "securityContext": {"allowPrivilegeEscalation": False},
        # Keep serving while the router notices the endpoint is gone (EndpointSlice update),
        # then let vLLM finish in-flight requests within the grace period.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}},
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        # Long enough for in-flight requests to finish after the endpoint is removed.
        "terminationGracePeriodSeconds": 60,
        "enableServiceLinks": False,
    }
    if pool.node_selector:
        pod_spec["nodeSelector"] = dict(pool.node_selector)
    if pool.tolerations:
        pod_spec["tolerations"] = [t.wire() for t in pool.tolerations]
    annotations = {"tandem.dev/lmcache-config-hash": config_hash} if config_hash else {}
    meta: dict[str, Any] = {"labels": labels(name, role, ENGINE_COMPONENT)}
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": pod_spec}


def config_hash(data: dict[str, str]) -> str:
    """Short hash of a ConfigMap's data: a change rolls the pods that mount it."""
    blob = json.dumps(data, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def pool_deployment(
    spec: InferenceServiceSpec,
    owner: Owner,
    role: Role,
    lmcache_hash: str | None,
) -> dict[str, Any]:
    """The pool's Deployment. ``replicas`` is left out when the autoscaler owns it."""
    if role not in (Role.PREFILL, Role.DECODE):
        raise ValueError(f"unknown role {role!r}")
    pool: PoolSpec = spec.pool(role)
    name = owner.name
    dep_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(name, role)},
        "strategy": {
            "type": "RollingUpdate",
            # GPUs are scarce: never surge, replace one replica at a time.
            "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
        },
        "revisionHistoryLimit": 5,
        "progressDeadlineSeconds": spec.engine.startup_timeout_seconds + 600,
        "template": pod_template(spec, name, role, lmcache_hash),
    }
    if not spec.autoscaling.enabled:
        dep_spec = {"replicas": pool.replicas, **dep_spec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner, pool_name(name, role), labels(name, role, ENGINE_COMPONENT)),
        "spec": dep_spec,
    }


def pool_service(spec: InferenceServiceSpec, owner: Owner, role: Role) -> dict[str, Any]:
    """Headless Service: its EndpointSlices list the pool's ready engines for the router."""
    name = owner.name
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, pool_name(name, role), labels(name, role, ENGINE_COMPONENT)),
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(name, role),
            "ports": [
                {
                    "name": ENGINE_PORT_NAME,
                    "port": spec.engine.port,
                    "targetPort": ENGINE_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def lmcache_configmap(spec: InferenceServiceSpec, owner: Owner) -> dict[str, Any]:
    data = {
        lmcache.config_key(role): lmcache.lmcache_yaml(spec, owner.name, owner.namespace, role)
        for role in (Role.PREFILL, Role.DECODE)
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(
            owner, lmcache_config_name(owner.name), labels(owner.name, "kv-transfer", "lmcache")
        ),
        "data": data,
    }
