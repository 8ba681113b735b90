"""The ``nixl`` connector: vLLM's native NixlConnector.

Both pools load the same connector; the decode engine pulls the prefill engine's KV blocks over
NIXL after a handshake on the prefill pod's *side channel* (``VLLM_NIXL_SIDE_CHANNEL_HOST`` /
``_PORT``, the pod IP and a fixed port). The router needs no extra port: the KV parameters
travel in the prefill response and the decode request (see ``router/protocols/nixl.py``).
"""

from __future__ import annotations

from typing import Any, Final

from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.api.vocabulary import Connector, Role
from tandem.plan.kv.base import producer_role
from tandem.plan.model import ConfigFile, ContainerPort, Json, Owner

CONNECTOR: Final = "NixlConnector"
PORT_NAME: Final = "nixl"


class NixlStrategy:
    connector = Connector.NIXL

    def __init__(self, spec: InferenceServiceSpec, owner: Owner) -> None:
        self.settings = spec.kv_transfer.nixl_settings

    def kv_transfer_config(self, role: Role) -> dict[str, Any]:
        # NIXL ignores the role, but it makes the configuration say what each pool does.
        config: dict[str, Any] = {
            "kv_connector": CONNECTOR,
            "kv_role": producer_role(role),
            "kv_load_failure_policy": self.settings.kv_load_failure_policy,
            "kv_connector_extra_config": {"backends": list(self.settings.backends)},
        }
        if self.settings.kv_lease_seconds is not None:
            config["kv_connector_extra_config"]["kv_lease_duration"] = (
                self.settings.kv_lease_seconds
            )
        if self.settings.kv_buffer_device != "cuda":
            # Host-buffer mode: vLLM copies KV through a CPU buffer that NIXL registers.
            config["kv_buffer_device"] = self.settings.kv_buffer_device
        return config

    def engine_env(self, role: Role) -> list[Json]:
        return [
            {"name": "VLLM_NIXL_SIDE_CHANNEL_HOST", "value": "$(POD_IP)"},
            {"name": "VLLM_NIXL_SIDE_CHANNEL_PORT", "value": str(self.settings.side_channel_port)},
        ]

    def engine_ports(self, role: Role) -> list[ContainerPort]:
        return [ContainerPort(PORT_NAME, self.settings.side_channel_port)]

    def volumes(self, role: Role) -> tuple[list[Json], list[Json]]:
        return [], []

    def prefix_caching_default(self) -> bool | None:
        return None

    def config_files(self) -> list[ConfigFile]:
        return []

    def gpu_buffer_bytes(self, role: Role) -> int:
        # NIXL reads vLLM's own KV cache in place: no extra buffer.
        return 0

    def router_fields(self) -> dict[str, Any]:
        return {}

    def router_ports(self) -> list[ContainerPort]:
        return []
