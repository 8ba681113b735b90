"""The ``lmcache`` connector: LMCacheConnectorV1 in PD mode (LMCache 0.5.6 keys).

Prefill engines are PD *senders*: they push KV into the chosen decoder's NIXL buffer and tell
the router ("KV ready") at ``pd_proxy_host:pd_proxy_port``, the router Service. Decode engines
are *receivers* listening on one init and one alloc port per worker: LMCache indexes both lists
by the worker's *global* rank (``worker_id = parallel_config.rank``, tensor x pipeline;
``vllm_service_factory.py:149``, ``pd_backend_async.py:301,1068``), so a pool with pipeline > 1
needs tensor x pipeline ports, and prefill and decode must have the same shape (an admission
rule). Every sender rank pushes its own shard and sends its own notification, so the router
waits for the *prefill* world size of notifications; ``save_only_first_rank: false`` keeps that
true for MLA models too (LMCache would otherwise save on rank 0 only, ``cache_engine.py:116``).
``pd_allocation_timeout_sec`` is finite (LMCache's default is infinite: a full receive buffer
would stall the prefill engine's save path for good), and the router's KV-ready timeout is above
it, so a full buffer fails fast and visibly. A receiver
must also know its own reachable address; a ConfigMap cannot hold a pod IP, so the file carries
a bind-all placeholder and the pod sets ``LMCACHE_PD_PEER_HOST`` from the downward API (LMCache
applies ``LMCACHE_<KEY>`` environment overrides after loading the file). Each role's file is one
key of the ConfigMap ``<name>-lmcache``, mounted at ``/etc/lmcache``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

import yaml

from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.api.vocabulary import ROLES, Connector, Role
from tandem.plan.kv.base import producer_role
from tandem.plan.model import ConfigFile, ContainerPort, Json, Owner
from tandem.plan.names import kv_ready_host, lmcache_config_name
from tandem.plan.quantity import to_bytes

CONNECTOR: Final = "LMCacheConnectorV1"
CONFIG_DIR: Final = "/etc/lmcache"
PEER_HOST_PLACEHOLDER: Final = "0.0.0.0"
KV_READY_PORT_NAME: Final = "kv-ready"
VOLUME: Final = "lmcache-config"


def config_key(role: Role) -> str:
    return f"{role}.yaml"


def config_path(role: Role) -> str:
    return f"{CONFIG_DIR}/{config_key(role)}"


def content_hash(data: dict[str, str]) -> str:
    """Short hash of a ConfigMap's data: a change rolls the pods that mount it."""
    blob = json.dumps(data, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class LMCacheStrategy:
    connector = Connector.LMCACHE

    def __init__(self, spec: InferenceServiceSpec, owner: Owner) -> None:
        self.spec, self.owner = spec, owner
        self.settings = spec.kv_transfer.lmcache_settings
        ranks = spec.decode.parallelism.gpus
        # One init and one alloc port per decode worker (global rank: tensor x pipeline).
        self.init_ports = [self.settings.init_port + rank for rank in range(ranks)]
        self.alloc_ports = [self.settings.alloc_port + rank for rank in range(ranks)]
        # One KV-ready notification per prefill worker.
        self.notifications = spec.prefill.parallelism.gpus
        self._file = self._config_file()

    # -------------------------------------------------------------------------- engines

    def kv_transfer_config(self, role: Role) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "discard_partial_chunks": False,
            "lmcache_rpc_port": "producer1" if role is Role.PREFILL else "consumer1",
        }
        if role is Role.DECODE:
            # The decoder gets the whole prompt and looks all of it up: LMCache loads every
            # pushed chunk and vLLM recomputes only the last token (review A9).
            extra["skip_last_n_tokens"] = 0
        return {
            "kv_connector": CONNECTOR,
            "kv_role": producer_role(role),
            "kv_connector_extra_config": extra,
        }

    def engine_env(self, role: Role) -> list[Json]:
        env: list[Json] = [{"name": "LMCACHE_CONFIG_FILE", "value": config_path(role)}]
        if role is Role.DECODE:
            env.append({"name": "LMCACHE_PD_PEER_HOST", "value": "$(POD_IP)"})
        return env

    def engine_ports(self, role: Role) -> list[ContainerPort]:
        if role is not Role.DECODE:
            return []
        ports = []
        for rank, (i, a) in enumerate(zip(self.init_ports, self.alloc_ports, strict=True)):
            ports += [ContainerPort(f"lmc-init-{rank}", i), ContainerPort(f"lmc-alloc-{rank}", a)]
        return ports

    def volumes(self, role: Role) -> tuple[list[Json], list[Json]]:
        volume = {
            "name": VOLUME,
            "configMap": {
                "name": self._file.name,
                "items": [{"key": config_key(role), "path": config_key(role)}],
            },
        }
        mount = {"name": VOLUME, "mountPath": CONFIG_DIR, "readOnly": True}
        return [volume], [mount]

    def prefix_caching_default(self) -> bool | None:
        # LMCache's disaggregation recipe turns vLLM's prefix caching off.
        return False

    def config_files(self) -> list[ConfigFile]:
        return [self._file]

    # --------------------------------------------------------------------------- router

    def gpu_buffer_bytes(self, role: Role) -> int:
        """The PD buffer, per worker, when it lives on the GPU.

        LMCache allocates it when the connector registers vLLM's KV caches, *after* vLLM sized
        its KV cache to ``--gpu-memory-utilization`` (vLLM 0.32 ``gpu_worker.py:874``), so it
        must fit in the rest of the GPU.
        """
        if self.settings.buffer_device != "cuda":
            return 0
        lm = self.settings
        size = lm.prefill_buffer_size if role is Role.PREFILL else lm.decode_buffer_size
        return to_bytes(size)

    def router_fields(self) -> dict[str, Any]:
        return {
            "kv_ready_port": self.settings.proxy_port,
            # The router tells the sender where to notify it: its own pod IP (downward API).
            "advertise_host": "$(POD_IP)",
            "decoder_init_ports": tuple(self.init_ports),
            "decoder_alloc_ports": tuple(self.alloc_ports),
            "kv_ready_notifications": self.notifications,
            "kv_ready_timeout": self.settings.kv_ready_timeout_seconds,
        }

    def router_ports(self) -> list[ContainerPort]:
        # Published by their own ClusterIP Service (plan.names.kv_ready_name), not the router's.
        return [ContainerPort(KV_READY_PORT_NAME, self.settings.proxy_port)]

    # ---------------------------------------------------------------------- config file

    def lmcache_config(self, role: Role) -> dict[str, Any]:
        """The LMCache configuration of one role, as LMCache 0.5.6 reads it."""
        lm = self.settings
        common: dict[str, Any] = {
            "chunk_size": lm.chunk_size,
            "enable_pd": True,
            "transfer_channel": "nixl",
            "pd_buffer_device": lm.buffer_device,
            "nixl_backends": list(lm.nixl_backends),
            "pd_allocation_timeout_sec": lm.allocation_timeout_seconds,
            "extra_config": {"save_only_first_rank": False},
        }
        if role is Role.PREFILL:
            cfg = {
                **common,
                "local_cpu": False,
                "save_unfull_chunk": True,
                "pd_role": "sender",
                "pd_proxy_host": kv_ready_host(self.owner.name, self.owner.namespace),
                "pd_proxy_port": lm.proxy_port,
                "pd_buffer_size": to_bytes(lm.prefill_buffer_size),
            }
            if lm.remote_cache is not None:
                cfg["remote_url"] = lm.remote_cache.url
                cfg["remote_serde"] = lm.remote_cache.serde
            return cfg
        return {
            **common,
            "local_cpu": lm.cpu_offload_gib > 0,
            "max_local_cpu_size": lm.cpu_offload_gib,
            "max_local_disk_size": 0,
            "pd_role": "receiver",
            "pd_peer_host": PEER_HOST_PLACEHOLDER,
            "pd_peer_init_port": self.init_ports,
            "pd_peer_alloc_port": self.alloc_ports,
            "pd_buffer_size": to_bytes(lm.decode_buffer_size),
        }

    def _config_file(self) -> ConfigFile:
        data = {
            config_key(role): yaml.safe_dump(self.lmcache_config(role), sort_keys=True)
            for role in ROLES
        }
        return ConfigFile(
            name=lmcache_config_name(self.owner.name),
            component="lmcache",
            role_label="kv-transfer",
            data=data,
            hash=content_hash(data),
            hash_annotation="tandem.dev/lmcache-config-hash",
        )
