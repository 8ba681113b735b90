"""The two engine pools, ``spec.prefill`` and ``spec.decode``: size, placement and autoscaling.

Both pools share :class:`PoolSpec`; they differ only in their autoscaling defaults (decode also
scales on KV-cache pressure), so each has its own small subclass.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from tandem.api.base import ApiModel
from tandem.api.v1alpha1.engine import MAX_ARGS, MAX_ENV, EngineArg, EnvVar
from tandem.api.v1alpha1.scalars import QUALIFIED_NAME, LabelValue, Quantity


class Parallelism(ApiModel):
    tensor: int = Field(default=1, ge=1, le=64, description="Tensor-parallel size.")
    pipeline: int = Field(default=1, ge=1, le=32, description="Pipeline-parallel size.")

    @property
    def gpus(self) -> int:
        """GPUs one replica needs."""
        return self.tensor * self.pipeline


class Resources(ApiModel):
    gpu_resource_name: str = Field(
        default="nvidia.com/gpu",
        description="Extended resource that counts GPUs on nodes.",
        pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$",
    )
    cpu: Quantity | None = Field(
        default=None,
        description="CPU request of each engine pod. Unset: 4 per GPU (never BestEffort).",
    )
    memory: Quantity | None = Field(
        default=None,
        description=(
            "Memory request and limit of each engine pod. Unset: a request of 32Gi per GPU and "
            "no limit (model loading needs host memory)."
        ),
    )
    ephemeral_storage: Quantity | None = Field(
        default=None,
        description=(
            "Ephemeral storage of each engine pod (request, limit, and the size of the download "
            "cache, where hf:// models land); set it for hf:// models so the kubelet neither "
            "evicts the pod nor lets the node's disk fill."
        ),
    )
    extra: dict[str, Quantity] = Field(
        default_factory=dict,
        description=(
            "Further extended resources per engine pod (requests and limits), e.g. RDMA NICs: "
            "{rdma/ib: 1}."
        ),
        max_length=8,
    )


class Toleration(ApiModel):
    key: str | None = Field(
        default=None,
        description="Taint key; empty with Exists matches all.",
        pattern=QUALIFIED_NAME,
        max_length=317,
    )
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Match operator.")
    value: LabelValue | None = Field(default=None, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, description="For NoExecute: how long the pod stays bound."
    )


# Declared once so both pools' autoscaling blocks share bounds and wording; only the default
# differs (decode scales on KV-cache pressure by default, prefill does not).
KVCacheUsagePercent = Annotated[
    int | None,
    Field(
        alias="targetKVCacheUsagePercent",
        ge=1,
        le=100,
        description="Scale up when mean KV-cache usage (vllm:kv_cache_usage_perc) exceeds this.",
    ),
]


class PoolAutoscaling(ApiModel):
    min_replicas: int = Field(default=1, ge=0, le=1000, description="Fewest replicas.")
    max_replicas: int = Field(default=4, ge=1, le=1000, description="Most replicas.")
    target_waiting_per_replica: int = Field(
        default=4,
        ge=1,
        le=10_000,
        description=(
            "Target of waiting requests per replica (vllm:num_requests_waiting; for prefill "
            "the router's pending prefills count too)."
        ),
    )
    target_kv_cache_usage_percent: KVCacheUsagePercent = None
    scale_up_stabilization_seconds: int = Field(
        default=0, ge=0, le=3600, description="Window over which scale-up takes the lowest need."
    )
    scale_down_stabilization_seconds: int = Field(
        default=300,
        ge=0,
        le=3600,
        description="Window over which scale-down takes the highest recommendation.",
    )
    max_scale_up_step: int = Field(
        default=4, ge=1, le=100, description="Most replicas added by one decision."
    )
    max_scale_down_step: int = Field(
        default=1, ge=1, le=100, description="Most replicas removed by one decision."
    )


class DecodeAutoscaling(PoolAutoscaling):
    """Decode's autoscaling: also scales up on KV-cache pressure unless told otherwise."""

    target_kv_cache_usage_percent: KVCacheUsagePercent = 80


class PoolSpec(ApiModel):
    """Fields shared by the prefill and decode pools."""

    replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Replicas; the initial count when autoscaling is enabled.",
    )
    parallelism: Parallelism = Field(
        default_factory=Parallelism, description="Parallelism of one replica."
    )
    gpus_per_node: int = Field(
        default=8, ge=1, le=64, description="GPUs on one node; a larger replica spans nodes."
    )
    resources: Resources = Field(default_factory=Resources, description="Pod resources.")
    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict, description="Node labels the pool's pods must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints the pool's pods tolerate.", max_length=32
    )
    args: list[EngineArg] = Field(
        default_factory=list,
        description="Extra vLLM arguments for this pool, appended after engine.args.",
        max_length=MAX_ARGS,
    )
    env: list[EnvVar] = Field(
        default_factory=list, description="Extra environment for this pool.", max_length=MAX_ENV
    )
    pod_annotations: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Annotations of the pool's pods, e.g. Multus' k8s.v1.cni.cncf.io/networks to attach "
            "RDMA networks."
        ),
        max_length=16,
    )
    runtime_class_name: str | None = Field(
        default=None,
        description="RuntimeClass of the pool's pods (e.g. nvidia).",
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
    )
    affinity: dict[str, Any] | None = Field(
        default=None,
        description="Kubernetes affinity of the pool's pods (nodeAffinity, podAntiAffinity, ...).",
    )


class PrefillPoolSpec(PoolSpec):
    autoscaling: PoolAutoscaling = Field(
        default_factory=PoolAutoscaling,
        description="Bounds and targets used when spec.autoscaling.enabled is true.",
    )


class DecodePoolSpec(PoolSpec):
    autoscaling: DecodeAutoscaling = Field(
        default_factory=DecodeAutoscaling,
        description="Bounds and targets used when spec.autoscaling.enabled is true.",
    )
