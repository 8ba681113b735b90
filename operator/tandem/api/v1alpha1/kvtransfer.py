"""``spec.kvTransfer``: how KV moves from prefill to decode, one block per connector.

Only the chosen connector's block may be set; when it is absent its defaults apply (the
``*_settings`` properties), which the port rules in the rule table also assume.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tandem.api.base import ApiModel
from tandem.api.v1alpha1.scalars import NixlBackend, Port, Quantity
from tandem.api.vocabulary import Connector


class RemoteCache(ApiModel):
    url: str = Field(
        description="Shared LMCache backend, e.g. lm://cache-server:65432 or redis://host:6379.",
        pattern=r"^(lm|redis|rediss|fs|s3|mooncakestore)://.+$",
        max_length=512,
    )
    serde: Literal["naive", "cachegen"] = Field(
        default="naive", description="Serialization used for the remote backend."
    )


class LMCacheSettings(ApiModel):
    chunk_size: int = Field(default=256, ge=16, le=4096, description="Tokens per LMCache chunk.")
    prefill_buffer_size: Quantity = Field(
        default="1Gi", description="PD transfer buffer of each prefill engine (pd_buffer_size)."
    )
    decode_buffer_size: Quantity = Field(
        default="2Gi",
        description="PD receive buffer of each decode engine; at least the sum of senders'.",
    )
    buffer_device: Literal["cuda", "cpu"] = Field(
        default="cuda", description="Where PD transfer buffers live (pd_buffer_device)."
    )
    cpu_offload_gib: int = Field(
        alias="cpuOffloadGiB",
        default=0,
        ge=0,
        le=4096,
        description="Decode-side CPU KV cache in GiB (local_cpu); 0 turns it off.",
    )
    init_port: Port = Field(
        default=7300,
        description="First LMCache init port of decode engines; tensor x pipeline are reserved.",
    )
    alloc_port: Port = Field(
        default=7400,
        description="First LMCache alloc port of decode engines; tensor x pipeline are reserved.",
    )
    proxy_port: Port = Field(
        default=7500, description="Router port that receives LMCache's KV-ready notifications."
    )
    allocation_timeout_seconds: int = Field(
        default=20,
        ge=1,
        le=600,
        description=(
            "How long a PD sender or receiver waits for buffer space (LMCache's "
            "pd_allocation_timeout_sec, infinite by default: a full buffer would stall the "
            "prefill engine for good)."
        ),
    )
    kv_ready_timeout_seconds: int = Field(
        default=30,
        ge=1,
        le=600,
        description=(
            "How long the router waits for a hand-off's KV-ready notifications after the "
            "prefill answered; above allocationTimeoutSeconds, so a full buffer fails first."
        ),
    )
    nixl_backends: list[NixlBackend] = Field(
        default_factory=lambda: [NixlBackend.UCX],
        description="NIXL backends LMCache uses.",
        max_length=4,
    )
    remote_cache: RemoteCache | None = Field(
        default=None, description="Optional shared remote KV cache (LMCache remote_url)."
    )


class NixlSettings(ApiModel):
    backends: list[NixlBackend] = Field(
        default_factory=lambda: [NixlBackend.UCX],
        description="NIXL transfer backends.",
        max_length=4,
    )
    side_channel_port: Port = Field(
        default=5600, description="NIXL handshake port (VLLM_NIXL_SIDE_CHANNEL_PORT)."
    )
    kv_buffer_device: Literal["cuda", "cpu"] = Field(
        default="cuda",
        description=(
            "Where NIXL stages KV (vLLM's kv_buffer_device): cuda reads GPU memory directly "
            "(needs GPUDirect RDMA or same-node cuda_ipc); cpu copies through host memory, for "
            "NICs or drivers without GPUDirect."
        ),
    )
    kv_lease_seconds: int | None = Field(
        default=None,
        ge=5,
        le=3600,
        description=(
            "How long a prefill engine keeps a request's KV blocks for its decoder to pull "
            "(vLLM's kv_lease_duration, 30 s when unset; the decoder extends it by heartbeats "
            "only once it holds the request). A lease that expires before the pull lets the "
            "decoder read blocks the prefiller may have reused; raise it when decoders queue "
            "long (KVTransferEffective reports expired leases)."
        ),
    )
    kv_load_failure_policy: Literal["recompute", "fail"] = Field(
        default="recompute",
        description=(
            "What a decoder does when pulling KV fails (e.g. its prefiller was scaled down): "
            "recompute the prompt, or fail the request."
        ),
    )


class KVTransfer(ApiModel):
    connector: Connector = Field(
        default=Connector.LMCACHE,
        description="lmcache (LMCacheConnectorV1 in PD mode) or nixl (vLLM's NixlConnector).",
    )
    lmcache: LMCacheSettings | None = Field(
        default=None, description="LMCache settings (connector lmcache only)."
    )
    nixl: NixlSettings | None = Field(
        default=None, description="NIXL settings (connector nixl only)."
    )
    rdma: bool = Field(
        default=False,
        description=(
            "KV moves over RDMA NICs: engine containers get the IPC_LOCK capability (UCX pins "
            "the memory it registers). Request the NICs in spec.<pool>.resources.extra."
        ),
    )

    @property
    def lmcache_settings(self) -> LMCacheSettings:
        return self.lmcache or LMCacheSettings()

    @property
    def nixl_settings(self) -> NixlSettings:
        return self.nixl or NixlSettings()
