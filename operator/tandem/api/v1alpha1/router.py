"""``spec.router``: the P/D router in front of the pools, and its Service.

The router container always listens on ``ROUTER_CONTAINER_PORT`` (``tandem.api.vocabulary``);
``port`` is the Service's.
"""

from __future__ import annotations

from pydantic import Field

from tandem.api.base import ApiModel
from tandem.api.v1alpha1.pools import Resources
from tandem.api.v1alpha1.scalars import Port, ServiceType
from tandem.api.vocabulary import PrefillFailurePolicy, RouterPolicy


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
