"""``status``: what the operator and the autoscaler observed, written through the status
subresource. Nothing here is validated at admission (the CRD's status schema has no defaults and
no rules); the condition vocabulary lives in ``tandem.api.conditions``.
"""

from __future__ import annotations

from pydantic import Field

from tandem.api.base import ApiModel
from tandem.api.conditions import Condition
from tandem.api.vocabulary import Role


class LastScale(ApiModel):
    time: str = Field(description="When the autoscaler changed replicas (RFC 3339).")
    from_: int = Field(alias="from", description="Replicas before the change.")
    to: int = Field(description="Replicas after the change.")
    reason: str = Field(description="CamelCase reason of the decision.")


class RecommendationInputs(ApiModel):
    """The pool as the policy saw it when it made the recommendation."""

    replicas: int = Field(description="Replicas the pool's workload had.")
    ready_replicas: int = Field(description="Replicas passing readiness.")
    pods_reporting: int = Field(description="Engine pods whose metrics were read.")
    waiting: float = Field(description="Requests waiting (router-pending prefills included).")
    running: float = Field(description="Requests running.")
    kv_cache_usage_percent: int | None = Field(
        default=None, description="Mean KV-cache usage over the pool's pods, percent."
    )
    error: str | None = Field(default=None, description="Why no metrics were read, if so.")


class ScaleRecommendation(ApiModel):
    replicas: int = Field(description="Replicas the autoscaler recommends (in both modes).")
    reason: str = Field(description="CamelCase reason of the recommendation.")
    time: str = Field(description="When the recommendation last changed (RFC 3339).")
    inputs: RecommendationInputs | None = Field(
        default=None, description="What drove it, as of that time."
    )


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
    recommendation: ScaleRecommendation | None = Field(
        default=None, description="The autoscaler's newest recommendation (Active and Shadow)."
    )


class RouterStatus(ApiModel):
    replicas: int = Field(default=0, description="Router replicas.")
    ready_replicas: int = Field(default=0, description="Router replicas passing readiness.")


class AutoscalingStatus(ApiModel):
    mode: str = Field(default="Active", description="Active or Shadow (changes nothing).")
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
