"""What the engines serve and how vLLM runs: ``spec.model`` and ``spec.engine``.

These settings are shared by both pools; the builders turn them into vLLM's command line and
environment. Extra ``args`` and ``env`` pass through as given, except flags and variables Tandem
derives itself (``tandem.api.owned``), which the rule table rejects.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from tandem.api.base import ApiModel
from tandem.api.v1alpha1.scalars import (
    Dtype,
    KVCacheDtype,
    Port,
    PullPolicy,
    Quantity,
    Quantization,
)

# Bounds that keep the CEL rules over args and env within the API server's cost budget.
MAX_ARGS = 128
MAX_ARG_LENGTH = 2048
MAX_ENV = 64
MAX_ENV_NAME_LENGTH = 256

EngineArg = Annotated[str, Field(max_length=MAX_ARG_LENGTH)]


class SecretKeyRef(ApiModel):
    name: str = Field(
        description="Name of a Secret in the InferenceService's namespace.",
        min_length=1,
        max_length=253,
    )
    key: str = Field(default="token", description="Key inside the Secret.", min_length=1)


class ModelSpec(ApiModel):
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


class EnvVar(ApiModel):
    name: str = Field(
        description="Variable name.",
        pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
        max_length=MAX_ENV_NAME_LENGTH,
    )
    value: str = Field(default="", description="Variable value.")


class SpeculativeDecoding(ApiModel):
    method: Literal["ngram", "draft"] = Field(
        description="ngram: prompt-lookup speculation; draft: a smaller draft model."
    )
    num_speculative_tokens: int = Field(
        default=5, ge=1, le=16, description="Tokens proposed per step."
    )
    draft_model: str | None = Field(
        default=None,
        description="Draft model (a Hugging Face id or a path in the engine image).",
        min_length=1,
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
    image_pull_secrets: list[
        Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)]
    ] = Field(
        default_factory=list,
        description="Secrets (in the InferenceService's namespace) to pull the engine image.",
        max_length=8,
    )
    port: Port = Field(default=8000, description="HTTP port of vLLM's OpenAI server.")
    args: list[EngineArg] = Field(
        default_factory=list,
        description="Extra vLLM arguments for both pools, appended after the derived ones.",
        max_length=MAX_ARGS,
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        description="Extra environment for engine containers.",
        max_length=MAX_ENV,
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
