"""What a KV connector implies, as one small interface (mirrors the router's ``protocols/``).

Each connector is one module in this package implementing :class:`KvStrategy`; the registry in
``plan/kv/__init__.py`` maps ``spec.kvTransfer.connector`` to it. Everything that differs
between connectors lives behind these methods: the engine's ``--kv-transfer-config``, its
environment, ports, volumes, defaults such as prefix caching, extra children (LMCache's
ConfigMap), the router's connector flags and the router's extra ports. The rest of the plan
never tests which connector is in use.

A connector's *admission* rules (which shapes it cannot serve) are part of the API's rule table
(``tandem.api``), next to its settings block, because the CRD is generated from the API alone.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from tandem.api.vocabulary import Connector, Role
from tandem.plan.model import ConfigFile, ContainerPort, Json


class KvStrategy(Protocol):
    """Facts one connector contributes to the plan of one InferenceService."""

    connector: Connector

    def kv_transfer_config(self, role: Role) -> dict[str, Any]:
        """vLLM's ``--kv-transfer-config`` for a pool (only fields vLLM 0.32 accepts)."""
        ...

    def engine_env(self, role: Role) -> list[Json]:
        """Variables the connector derives (users may not set them)."""
        ...

    def engine_ports(self, role: Role) -> list[ContainerPort]:
        """Container ports besides the engine's HTTP port."""
        ...

    def volumes(self, role: Role) -> tuple[list[Json], list[Json]]:
        """Extra pod volumes and the engine container's mounts of them."""
        ...

    def prefix_caching_default(self) -> bool | None:
        """Prefix caching when ``spec.engine.prefixCaching`` is unset (None: vLLM decides)."""
        ...

    def config_files(self) -> list[ConfigFile]:
        """ConfigMaps the engines mount."""
        ...

    def gpu_buffer_bytes(self, role: Role) -> int:
        """GPU memory per worker the connector allocates outside vLLM's memory budget."""
        ...

    def router_fields(self) -> dict[str, Any]:
        """The connector's fields of the router's :class:`RouterConfig` (its command line)."""
        ...

    def router_ports(self) -> list[ContainerPort]:
        """Ports the router listens on for this connector. They are internal: a ClusterIP
        Service of their own publishes them, never the (possibly public) router Service."""
        ...


def kv_config_json(config: dict[str, Any]) -> str:
    """Compact, key-sorted JSON, so identical specs give byte-identical pod templates."""
    return json.dumps(config, separators=(",", ":"), sort_keys=True)


def producer_role(role: Role) -> str:
    """vLLM's ``kv_role``: prefill engines produce KV, decode engines consume it."""
    return "kv_producer" if role is Role.PREFILL else "kv_consumer"
