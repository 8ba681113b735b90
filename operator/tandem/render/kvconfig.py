"""``--kv-transfer-config`` for each pool role.

Only fields that vLLM 0.32's ``KVTransferConfig`` accepts are emitted (it is strict: the removed
``kv_buffer_size``, ``kv_rank``, ``kv_parallel_size`` and ``kv_ip`` would fail engine start).
Prefill engines are producers and decode engines consumers; NIXL ignores the role but it makes
the configuration say what each pool does.
"""

from __future__ import annotations

import json
from typing import Any

from tandem.api.v1alpha1 import Connector, InferenceServiceSpec
from tandem.api.vocabulary import Role

NIXL_CONNECTOR = "NixlConnector"
LMCACHE_CONNECTOR = "LMCacheConnectorV1"


def kv_transfer_config(spec: InferenceServiceSpec, role: Role) -> dict[str, Any]:
    producer = role == Role.PREFILL
    kv = spec.kv_transfer
    if kv.connector == Connector.NIXL:
        nixl = kv.nixl_settings
        return {
            "kv_connector": NIXL_CONNECTOR,
            "kv_role": "kv_producer" if producer else "kv_consumer",
            "kv_load_failure_policy": nixl.kv_load_failure_policy,
            "kv_connector_extra_config": {"backends": list(nixl.backends)},
        }
    extra: dict[str, Any] = {
        "discard_partial_chunks": False,
        "lmcache_rpc_port": "producer1" if producer else "consumer1",
    }
    if not producer:
        # The decoder recomputes the last prompt token so vLLM schedules a decode step.
        extra["skip_last_n_tokens"] = 1
    return {
        "kv_connector": LMCACHE_CONNECTOR,
        "kv_role": "kv_producer" if producer else "kv_consumer",
        "kv_connector_extra_config": extra,
    }


def kv_transfer_config_json(spec: InferenceServiceSpec, role: Role) -> str:
    """Compact, key-sorted JSON, so identical specs give byte-identical pod templates."""
    return json.dumps(kv_transfer_config(spec, role), separators=(",", ":"), sort_keys=True)
