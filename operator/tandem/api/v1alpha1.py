"""InferenceService v1alpha1: the API, as pydantic models that generate the CRD.

Everything a user can write is declared here once. ``tandem crds`` turns these models into the
CRD's structural schema (defaults, enums, bounds, CEL rules); the operator validates every
object with the same models, so admission and the operator never disagree about a field.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, model_validator

from tandem.api.base import ApiModel, cel
from tandem.api.conditions import Condition
from tandem.api.vocabulary import Connector as Connector  # re-exported: the builders use it
from tandem.api.vocabulary import PrefillFailurePolicy, Role, RouterPolicy

GROUP = "tandem.dev"
VERSION = "v1alpha1"
KIND = "InferenceService"
PLURAL = "inferenceservices"
SINGULAR = "inferenceservice"
SHORT_NAMES = ["isvc", "tisvc"]
CATEGORIES = ["tandem", "ai"]

# Child names are "<name>-prefill", "<name>-decode-lmcache", ...; Service names must be DNS-1035
# labels of at most 63 characters, so the CR name leaves room for the longest suffix.
MAX_NAME_LENGTH = 40

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DURATION_PATTERN = r"^[0-9]+(s|m|h)$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"

Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Dtype(StrEnum):
    AUTO = "auto"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"
    FLOAT32 = "float32"


class Quantization(StrEnum):
    AWQ = "awq"
    GPTQ = "gptq"
    FP8 = "fp8"
    BITSANDBYTES = "bitsandbytes"
    COMPRESSED_TENSORS = "compressed-tensors"


class KVCacheDtype(StrEnum):
    AUTO = "auto"
    FP8 = "fp8"
    FP8_E4M3 = "fp8_e4m3"
    FP8_E5M2 = "fp8_e5m2"


class NixlBackend(StrEnum):
    UCX = "UCX"
    LIBFABRIC = "LIBFABRIC"
    GDS = "GDS"


class ServiceType(StrEnum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class PullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


# ---------------------------------------------------------------------------------- model


class SecretKeyRef(ApiModel):
    name: str = Field(
        description="Name of a Secret in the InferenceService's namespace.",
        min_length=1,
        max_length=253,
    )
    key: str = Field(default="token", description="Key inside the Secret.", min_length=1)


class ModelSpec(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": cel(
            (
                "!has(self.tokenSecretRef) || self.uri.startsWith('hf://')",
                "tokenSecretRef is only used for hf:// models",
                ".tokenSecretRef",
            ),
            (
                "!has(self.revision) || self.uri.startsWith('hf://')",
                "revision is only used for hf:// models",
                ".revision",
            ),
        )
    }

    uri: str = Field(
        description=(
            "Where the weights come from: hf://<org>/<model> (downloaded by vLLM), "
            "pvc://<claim>/<path> (mounted read-only) or s3://<bucket>/<path> (streamed)."
        ),
        pattern=r"^(hf://[A-Za-z0-9][-A-Za-z0-9_.]*/[-A-Za-z0-9_.]+|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/.*)?|s3://[a-z0-9][-a-z0-9.]*[a-z0-9](/.*)?)$",
        max_length=512,
    )
    served_name: str | None = Field(
        default=None,
        description="The OpenAI `model` name clients send. Defaults to the InferenceService name.",
        pattern=r"^[A-Za-z0-9][-A-Za-z0-9_./:]*$",
        max_length=128,
    )
    revision: str | None = Field(
        default=None, description="Model revision (branch, tag or commit) for hf:// models."
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret holding a Hugging Face token; passed to engines as HF_TOKEN only.",
    )
    max_model_len: int | None = Field(
        default=None,
        ge=16,
        le=10_485_760,
        description="Maximum context length (prompt + output tokens); vLLM's default if unset.",
    )
    dtype: Dtype = Field(default=Dtype.AUTO, description="Weight and activation dtype.")
    quantization: Quantization | None = Field(
        default=None, description="Weight quantization method (vLLM --quantization)."
    )


# --------------------------------------------------------------------------------- engine


class EnvVar(ApiModel):
    name: str = Field(description="Variable name.", pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    value: str = Field(default="", description="Variable value.")


class SpeculativeDecoding(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": cel(
            (
                "self.method != 'draft' || has(self.draftModel)",
                "draftModel is required when method is draft",
                ".draftModel",
            ),
            (
                "self.method != 'ngram' || !has(self.draftModel)",
                "draftModel must not be set when method is ngram",
                ".draftModel",
            ),
        )
    }

    method: Literal["ngram", "draft"] = Field(
        description="ngram: prompt-lookup speculation; draft: a smaller draft model."
    )
    num_speculative_tokens: int = Field(
        default=5, ge=1, le=16, description="Tokens proposed per step."
    )
    draft_model: str | None = Field(
        default=None,
        description="Draft model (a Hugging Face id or a path in the engine image).",
        max_length=512,
    )
    prompt_lookup_max: int = Field(
        default=4, ge=1, le=32, description="ngram only: longest n-gram matched in the prompt."
    )
    prompt_lookup_min: int = Field(
        default=1, ge=1, le=32, description="ngram only: shortest n-gram matched in the prompt."
    )


class EngineSpec(ApiModel):
    image: str = Field(
        default="tandem/engine:v0.32.0",
        description="vLLM engine image (vLLM with LMCache and NIXL) for both pools.",
        min_length=1,
        max_length=512,
    )
    image_pull_policy: PullPolicy = Field(
        default=PullPolicy.IF_NOT_PRESENT, description="Image pull policy of engine containers."
    )
    port: Port = Field(default=8000, description="HTTP port of vLLM's OpenAI server.")
    args: list[str] = Field(
        default_factory=list,
        description="Extra vLLM arguments for both pools, appended after the derived ones.",
        max_length=128,
    )
    env: list[EnvVar] = Field(
        default_factory=list, description="Extra environment for engine containers.", max_length=64
    )
    prefix_caching: bool | None = Field(
        default=None,
        description=(
            "Automatic prefix caching. Unset: vLLM's default, except with the lmcache "
            "connector, where LMCache's disaggregation recipe turns it off."
        ),
    )
    chunked_prefill: bool | None = Field(
        default=None, description="Chunked prefill; vLLM's default when unset."
    )
    kv_cache_dtype: KVCacheDtype = Field(
        alias="kvCacheDtype",
        default=KVCacheDtype.AUTO,
        description="KV-cache dtype; fp8 halves KV memory and transfer.",
    )
    gpu_memory_utilization_percent: int | None = Field(
        default=None, ge=10, le=99, description="Share of GPU memory vLLM may use, in percent."
    )
    enforce_eager: bool = Field(
        default=False,
        description="Skip torch.compile and CUDA graphs: faster start, slower steady state.",
    )
    speculative_decoding: SpeculativeDecoding | None = Field(
        default=None, description="Speculative decoding (applied to the decode pool only)."
    )
    startup_timeout_seconds: int = Field(
        default=1800,
        ge=60,
        le=7200,
        description="Budget for model download and load before the startup probe gives up.",
    )
    shm_size: Quantity = Field(
        default="16Gi", description="Size of the memory-backed /dev/shm of engine pods."
    )


# ---------------------------------------------------------------------------------- pools


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
    cpu: Quantity | None = Field(default=None, description="CPU request of each engine pod.")
    memory: Quantity | None = Field(
        default=None, description="Memory request (and limit) of each engine pod."
    )


class Toleration(ApiModel):
    key: str | None = Field(default=None, description="Taint key; empty with Exists matches all.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Match operator.")
    value: str | None = Field(default=None, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, description="For NoExecute: how long the pod stays bound."
    )


_AUTOSCALING_RULES = cel(
    (
        "self.minReplicas <= self.maxReplicas",
        "minReplicas must be less than or equal to maxReplicas",
        ".minReplicas",
    ),
)


class PoolAutoscaling(ApiModel):
    model_config = ApiModel.model_config | {"json_schema_extra": _AUTOSCALING_RULES}

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
    target_kv_cache_usage_percent: int | None = Field(
        alias="targetKVCacheUsagePercent",
        default=None,
        ge=1,
        le=100,
        description="Scale up when mean KV-cache usage (vllm:kv_cache_usage_perc) exceeds this.",
    )
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
    model_config = ApiModel.model_config | {"json_schema_extra": _AUTOSCALING_RULES}

    target_kv_cache_usage_percent: int | None = Field(
        alias="targetKVCacheUsagePercent",
        default=80,
        ge=1,
        le=100,
        description="Scale up when mean KV-cache usage (vllm:kv_cache_usage_perc) exceeds this.",
    )


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
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels the pool's pods must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints the pool's pods tolerate.", max_length=32
    )
    args: list[str] = Field(
        default_factory=list,
        description="Extra vLLM arguments for this pool, appended after engine.args.",
        max_length=128,
    )
    env: list[EnvVar] = Field(
        default_factory=list, description="Extra environment for this pool.", max_length=64
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


# ----------------------------------------------------------------------------- kvTransfer


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
        default=7300, description="First LMCache init port of decoders; one per TP rank."
    )
    alloc_port: Port = Field(
        default=7400, description="First LMCache alloc port of decoders; one per TP rank."
    )
    proxy_port: Port = Field(
        default=7500, description="Router port that receives LMCache's KV-ready notifications."
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
    kv_load_failure_policy: Literal["recompute", "fail"] = Field(
        default="recompute",
        description=(
            "What a decoder does when pulling KV fails (e.g. its prefiller was scaled down): "
            "recompute the prompt, or fail the request."
        ),
    )


class KVTransfer(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": cel(
            (
                "!has(self.lmcache) || self.connector == 'lmcache'",
                "kvTransfer.lmcache may only be set when connector is lmcache",
                ".lmcache",
            ),
            (
                "!has(self.nixl) || self.connector == 'nixl'",
                "kvTransfer.nixl may only be set when connector is nixl",
                ".nixl",
            ),
        )
    }

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

    @property
    def lmcache_settings(self) -> LMCacheSettings:
        return self.lmcache or LMCacheSettings()

    @property
    def nixl_settings(self) -> NixlSettings:
        return self.nixl or NixlSettings()


# --------------------------------------------------------------------------------- router


class Disaggregation(ApiModel):
    min_prompt_tokens: int = Field(
        default=0,
        ge=0,
        le=10_000_000,
        description="Prompts shorter than this skip the prefill pool and go straight to decode.",
    )


class RouterSpec(ApiModel):
    replicas: int = Field(default=2, ge=0, le=100, description="Router replicas.")
    image: str = Field(
        default="tandem/router:0.1.0", description="Router image.", min_length=1, max_length=512
    )
    policy: RouterPolicy = Field(
        default=RouterPolicy.LEAST_LOADED, description="How the router picks engines."
    )
    disaggregation: Disaggregation = Field(
        default_factory=Disaggregation, description="Selective disaggregation."
    )
    on_prefill_failure: PrefillFailurePolicy = Field(
        default=PrefillFailurePolicy.FAIL,
        description="fail: answer 503; decode-only: serve the request on a decode engine.",
    )
    request_timeout_seconds: int = Field(
        default=600, ge=1, le=86_400, description="Total time a request may take."
    )
    max_inflight_per_engine: int = Field(
        default=256, ge=1, le=100_000, description="In-flight requests per engine before queueing."
    )
    service_type: ServiceType = Field(
        default=ServiceType.CLUSTER_IP, description="Type of the router Service."
    )
    port: Port = Field(default=8000, description="Port of the router Service.")
    resources: Resources = Field(
        default_factory=Resources, description="Router pod resources (no GPUs are requested)."
    )


# ---------------------------------------------------------------------------- autoscaling


class Ratio(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": cel(
            ("self.min <= self.max", "min must be less than or equal to max", ".min"),
        )
    }

    min: float = Field(default=0.25, gt=0, le=1000, description="Lowest prefill:decode ratio.")
    max: float = Field(default=4.0, gt=0, le=1000, description="Highest prefill:decode ratio.")


class ScrapeSource(ApiModel):
    port: Port = Field(default=8000, description="Engine port serving /metrics.")
    path: str = Field(default="/metrics", pattern=r"^/.*$", description="Metrics path.")
    timeout_seconds: int = Field(default=2, ge=1, le=60, description="Per-pod scrape timeout.")


class PrometheusSource(ApiModel):
    url: str = Field(
        description="Prometheus base URL (its /api/v1/query is used).",
        pattern=r"^https?://.+$",
        max_length=512,
    )
    query_waiting: str | None = Field(
        default=None,
        description=(
            "PromQL for waiting requests; {namespace}, {name}, {role} and {pool} (the pool's "
            "pod-name regex) are expanded."
        ),
    )
    query_running: str | None = Field(default=None, description="PromQL for running requests.")
    query_kv_usage: str | None = Field(default=None, description="PromQL for KV-cache usage.")
    timeout_seconds: int = Field(default=5, ge=1, le=60, description="Query timeout.")


class MetricsSource(ApiModel):
    model_config = ApiModel.model_config | {
        "json_schema_extra": cel(
            (
                "self.type != 'prometheus' || has(self.prometheus)",
                "prometheus settings are required when type is prometheus",
                ".prometheus",
            ),
        )
    }

    type: Literal["scrape", "prometheus"] = Field(
        default="scrape", description="scrape: read pods' /metrics; prometheus: run PromQL."
    )
    scrape: ScrapeSource = Field(default_factory=ScrapeSource, description="Scrape settings.")
    prometheus: PrometheusSource | None = Field(
        default=None, description="Prometheus settings (type prometheus)."
    )


class Autoscaling(ApiModel):
    enabled: bool = Field(
        default=False, description="Let Tandem's autoscaler own each pool's replicas."
    )
    interval: str = Field(
        default="10s", pattern=DURATION_PATTERN, description="Evaluation period (e.g. 10s, 1m)."
    )
    prefill_to_decode_ratio: Ratio = Field(
        default_factory=Ratio, description="Bounds on prefill:decode replicas."
    )
    max_gpus: int | None = Field(
        default=None,
        alias="maxGPUs",
        ge=1,
        le=100_000,
        description="GPU budget of both pools together.",
    )
    stale_after_seconds: int = Field(
        default=30, ge=1, le=3600, description="Metrics older than this count as missing."
    )
    source: MetricsSource = Field(
        default_factory=MetricsSource, description="Where queue metrics come from."
    )

    @property
    def interval_seconds(self) -> int:
        return parse_duration(self.interval)


def parse_duration(text: str) -> int:
    """Seconds in a ``10s`` / ``5m`` / ``1h`` duration."""
    m = re.fullmatch(DURATION_PATTERN, text)
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return int(text[:-1]) * {"s": 1, "m": 60, "h": 3600}[text[-1]]


# ----------------------------------------------------------------------------------- spec

_SPEC_RULES = cel(
    (
        "!self.autoscaling.enabled || "
        "(self.prefill.replicas >= self.prefill.autoscaling.minReplicas && "
        "self.prefill.replicas <= self.prefill.autoscaling.maxReplicas)",
        "prefill.replicas must lie within prefill.autoscaling minReplicas..maxReplicas "
        "when autoscaling is enabled",
        ".prefill.replicas",
    ),
    (
        "!self.autoscaling.enabled || "
        "(self.decode.replicas >= self.decode.autoscaling.minReplicas && "
        "self.decode.replicas <= self.decode.autoscaling.maxReplicas)",
        "decode.replicas must lie within decode.autoscaling minReplicas..maxReplicas "
        "when autoscaling is enabled",
        ".decode.replicas",
    ),
    (
        "!has(self.autoscaling.maxGPUs) || self.autoscaling.maxGPUs >= "
        "self.prefill.autoscaling.minReplicas * self.prefill.parallelism.tensor * "
        "self.prefill.parallelism.pipeline + self.decode.autoscaling.minReplicas * "
        "self.decode.parallelism.tensor * self.decode.parallelism.pipeline",
        "autoscaling.maxGPUs is below the GPUs the pools' minReplicas need",
        ".autoscaling.maxGPUs",
    ),
    (
        "self.kvTransfer.connector != 'nixl' || "
        "self.decode.parallelism.tensor >= self.prefill.parallelism.tensor",
        "the nixl connector needs decode.parallelism.tensor >= prefill.parallelism.tensor",
        ".decode.parallelism.tensor",
    ),
    (
        "self.prefill.resources.gpuResourceName == self.decode.resources.gpuResourceName",
        "prefill and decode must use the same resources.gpuResourceName",
        ".decode.resources.gpuResourceName",
    ),
)


class InferenceServiceSpec(ApiModel):
    model_config = ApiModel.model_config | {"json_schema_extra": _SPEC_RULES}

    model: ModelSpec = Field(description="The model to serve.")
    engine: EngineSpec = Field(
        default_factory=EngineSpec, description="vLLM settings shared by both pools."
    )
    prefill: PrefillPoolSpec = Field(
        default_factory=PrefillPoolSpec, description="The prefill pool (KV producers)."
    )
    decode: DecodePoolSpec = Field(
        default_factory=DecodePoolSpec, description="The decode pool (KV consumers)."
    )
    kv_transfer: KVTransfer = Field(
        alias="kvTransfer",
        default_factory=KVTransfer,
        description="How KV moves from prefill to decode.",
    )
    router: RouterSpec = Field(default_factory=RouterSpec, description="The P/D router.")
    autoscaling: Autoscaling = Field(
        default_factory=Autoscaling, description="Per-pool autoscaling from queue metrics."
    )

    def pool(self, role: Role) -> PrefillPoolSpec | DecodePoolSpec:
        """The spec of one pool, typed (never ``getattr(spec, role)``)."""
        return self.prefill if role is Role.PREFILL else self.decode

    @model_validator(mode="after")
    def _cross_field(self) -> InferenceServiceSpec:
        """The same cross-field rules as the CRD's CEL, for clusters and tests without CEL."""
        errors: list[str] = []
        for role in Role:
            pool = self.pool(role)
            a: PoolAutoscaling = pool.autoscaling
            if a.min_replicas > a.max_replicas:
                errors.append(f"spec.{role}.autoscaling.minReplicas: must be <= maxReplicas")
            elif self.autoscaling.enabled and not a.min_replicas <= pool.replicas <= a.max_replicas:
                errors.append(
                    f"spec.{role}.replicas: must lie within autoscaling "
                    f"{a.min_replicas}..{a.max_replicas} when autoscaling is enabled"
                )
        r = self.autoscaling.prefill_to_decode_ratio
        if r.min > r.max:
            errors.append("spec.autoscaling.prefillToDecodeRatio.min: must be <= max")
        if self.autoscaling.max_gpus is not None:
            need = (
                self.prefill.autoscaling.min_replicas * self.prefill.parallelism.gpus
                + self.decode.autoscaling.min_replicas * self.decode.parallelism.gpus
            )
            if self.autoscaling.max_gpus < need:
                errors.append(
                    f"spec.autoscaling.maxGPUs: {self.autoscaling.max_gpus} is below the "
                    f"{need} GPUs the pools' minReplicas need"
                )
        kv = self.kv_transfer
        if kv.lmcache is not None and kv.connector != Connector.LMCACHE:
            errors.append("spec.kvTransfer.lmcache: only allowed when connector is lmcache")
        if kv.nixl is not None and kv.connector != Connector.NIXL:
            errors.append("spec.kvTransfer.nixl: only allowed when connector is nixl")
        if (
            kv.connector == Connector.NIXL
            and self.decode.parallelism.tensor < self.prefill.parallelism.tensor
        ):
            errors.append(
                "spec.decode.parallelism.tensor: the nixl connector needs decode tensor >= "
                "prefill tensor"
            )
        if self.prefill.resources.gpu_resource_name != self.decode.resources.gpu_resource_name:
            errors.append("spec.decode.resources.gpuResourceName: must equal prefill's")
        m = self.model
        if m.token_secret_ref is not None and not m.uri.startswith("hf://"):
            errors.append("spec.model.tokenSecretRef: only used for hf:// models")
        if m.revision is not None and not m.uri.startswith("hf://"):
            errors.append("spec.model.revision: only used for hf:// models")
        sd = self.engine.speculative_decoding
        if sd is not None:
            if sd.method == "draft" and not sd.draft_model:
                errors.append("spec.engine.speculativeDecoding.draftModel: required for draft")
            if sd.method == "ngram" and sd.draft_model:
                errors.append("spec.engine.speculativeDecoding.draftModel: not used by ngram")
        src = self.autoscaling.source
        if src.type == "prometheus" and src.prometheus is None:
            errors.append("spec.autoscaling.source.prometheus: required when type is prometheus")
        if errors:
            raise ValueError("; ".join(errors))
        return self


# --------------------------------------------------------------------------------- status


class LastScale(ApiModel):
    time: str = Field(description="When the autoscaler changed replicas (RFC 3339).")
    from_: int = Field(alias="from", description="Replicas before the change.")
    to: int = Field(description="Replicas after the change.")
    reason: str = Field(description="CamelCase reason of the decision.")


class PoolStatus(ApiModel):
    replicas: int = Field(default=0, description="Replicas the pool's Deployment has.")
    ready_replicas: int = Field(default=0, description="Replicas passing readiness.")
    desired_replicas: int = Field(
        default=0, description="Replicas wanted (the spec, or the autoscaler's decision)."
    )
    gpus_per_replica: int = Field(default=0, description="GPUs one replica uses (TP x PP).")
    parallelism: str = Field(default="", description="TPxPP, e.g. 2x1.")
    ready: str = Field(default="", description="ready/desired, for kubectl get.")
    last_scale: LastScale | None = Field(default=None, description="Last autoscaler change.")


class RouterStatus(ApiModel):
    replicas: int = Field(default=0, description="Router replicas.")
    ready_replicas: int = Field(default=0, description="Router replicas passing readiness.")


class AutoscalingStatus(ApiModel):
    source: str = Field(default="", description="Metrics source in use.")
    last_evaluation_time: str | None = Field(
        default=None, description="Last time the autoscaler evaluated the pools."
    )
    last_error: str | None = Field(default=None, description="Last metrics-source error.")


class InferenceServiceStatus(ApiModel):
    observed_generation: int | None = Field(
        default=None, description="metadata.generation this status describes."
    )
    endpoint: str | None = Field(default=None, description="OpenAI base URL of the router.")
    parallelism: str | None = Field(
        default=None, description="Prefill and decode TPxPP, for kubectl get."
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Ready, Accepted, PrefillReady, DecodeReady, ..."
    )
    prefill: PoolStatus | None = Field(default=None, description="Prefill pool.")
    decode: PoolStatus | None = Field(default=None, description="Decode pool.")
    router: RouterStatus | None = Field(default=None, description="Router.")
    autoscaling: AutoscalingStatus | None = Field(default=None, description="Autoscaler.")

    def pool(self, role: Role) -> PoolStatus | None:
        """The status of one pool, typed (never ``getattr(status, role)``)."""
        return self.prefill if role is Role.PREFILL else self.decode

    def with_pool(self, role: Role, pool: PoolStatus) -> None:
        if role is Role.PREFILL:
            self.prefill = pool
        else:
            self.decode = pool


class InferenceService(ApiModel):
    """The custom resource as a whole (metadata is Kubernetes', kept loosely typed)."""

    api_version: Literal["tandem.dev/v1alpha1"] = Field(
        default="tandem.dev/v1alpha1", alias="apiVersion", description="API version."
    )
    kind: Literal["InferenceService"] = Field(default="InferenceService", description="Kind.")
    metadata: dict[str, object] = Field(default_factory=dict, description="Object metadata.")
    spec: InferenceServiceSpec = Field(description="Desired state.")
    status: InferenceServiceStatus | None = Field(default=None, description="Observed state.")
