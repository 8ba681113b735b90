"""Per-role LMCache configuration (LMCache 0.5.6 keys) for the ``lmcache`` connector.

Prefill engines are PD *senders*: they push KV into the chosen decoder's NIXL buffer and tell
the router ("KV ready") at ``pd_proxy_host:pd_proxy_port``, the router Service. Decode engines
are *receivers* listening on one init and one alloc port per tensor-parallel rank. A receiver
must also know its own reachable address; a ConfigMap cannot hold a pod IP, so the file carries
a bind-all placeholder and the pod sets ``LMCACHE_PD_PEER_HOST`` from the downward API (LMCache
applies ``LMCACHE_<KEY>`` environment overrides after loading the file).
"""

from __future__ import annotations

from typing import Any

import yaml

from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.api.vocabulary import Role
from tandem.render.names import router_host
from tandem.render.quantity import to_bytes

CONFIG_DIR = "/etc/lmcache"
PEER_HOST_PLACEHOLDER = "0.0.0.0"


def config_key(role: Role) -> str:
    return f"{role}.yaml"


def config_path(role: Role) -> str:
    return f"{CONFIG_DIR}/{config_key(role)}"


def decoder_ports(spec: InferenceServiceSpec) -> tuple[list[int], list[int]]:
    """Init and alloc ports of every decoder, one per tensor-parallel rank."""
    lm = spec.kv_transfer.lmcache_settings
    tp = spec.decode.parallelism.tensor
    return (
        [lm.init_port + rank for rank in range(tp)],
        [lm.alloc_port + rank for rank in range(tp)],
    )


def lmcache_config(
    spec: InferenceServiceSpec, name: str, namespace: str, role: Role
) -> dict[str, Any]:
    lm = spec.kv_transfer.lmcache_settings
    common: dict[str, Any] = {
        "chunk_size": lm.chunk_size,
        "enable_pd": True,
        "transfer_channel": "nixl",
        "pd_buffer_device": lm.buffer_device,
        "nixl_backends": list(lm.nixl_backends),
    }
    if role == Role.PREFILL:
        cfg = {
            **common,
            "local_cpu": False,
            "save_unfull_chunk": True,
            "pd_role": "sender",
            "pd_proxy_host": router_host(name, namespace),
            "pd_proxy_port": lm.proxy_port,
            "pd_buffer_size": to_bytes(lm.prefill_buffer_size),
        }
        if lm.remote_cache is not None:
            cfg["remote_url"] = lm.remote_cache.url
            cfg["remote_serde"] = lm.remote_cache.serde
        return cfg
    if role != Role.DECODE:
        raise ValueError(f"unknown role {role!r}")
    init_ports, alloc_ports = decoder_ports(spec)
    return {
        **common,
        "local_cpu": lm.cpu_offload_gib > 0,
        "max_local_cpu_size": lm.cpu_offload_gib,
        "max_local_disk_size": 0,
        "pd_role": "receiver",
        "pd_peer_host": PEER_HOST_PLACEHOLDER,
        "pd_peer_init_port": init_ports,
        "pd_peer_alloc_port": alloc_ports,
        "pd_buffer_size": to_bytes(lm.decode_buffer_size),
    }


def lmcache_yaml(spec: InferenceServiceSpec, name: str, namespace: str, role: Role) -> str:
    return yaml.safe_dump(lmcache_config(spec, name, namespace, role), sort_keys=True)
