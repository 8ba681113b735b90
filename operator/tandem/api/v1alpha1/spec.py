"""The root of the API: ``InferenceServiceSpec`` and the ``InferenceService`` object.

The spec gathers the blocks of the sibling modules and is where the rule table runs in Python:
its validator reports every rule broken anywhere in the spec, named by full path, with the
message the API server gives for the same rule's CEL.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tandem.api.base import ApiModel
from tandem.api.v1alpha1.autoscaling import Autoscaling
from tandem.api.v1alpha1.engine import EngineSpec, ModelSpec
from tandem.api.v1alpha1.kvtransfer import KVTransfer
from tandem.api.v1alpha1.pools import DecodePoolSpec, PrefillPoolSpec
from tandem.api.v1alpha1.router import RouterSpec
from tandem.api.v1alpha1.status import InferenceServiceStatus
from tandem.api.vocabulary import Role


class InferenceServiceSpec(ApiModel):
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
        default_factory=KVTransfer, description="How KV moves from prefill to decode."
    )
    router: RouterSpec = Field(default_factory=RouterSpec, description="The P/D router.")
    autoscaling: Autoscaling = Field(
        default_factory=Autoscaling, description="Per-pool autoscaling from queue metrics."
    )

    def pool(self, role: Role) -> PrefillPoolSpec | DecodePoolSpec:
        """The spec of one pool, typed (never ``getattr(spec, role)``)."""
        return self.prefill if role is Role.PREFILL else self.decode

    @property
    def scrape_port(self) -> int:
        """The port the autoscaler scrapes engines' /metrics on."""
        return self.autoscaling.source.scrape.port or self.engine.port

    @model_validator(mode="after")
    def _rules(self) -> InferenceServiceSpec:
        """The rule table's Python side (the CRD carries its CEL side)."""
        _enforce_rules(self, "spec")
        return self


class InferenceService(ApiModel):
    """The custom resource as a whole (metadata is Kubernetes', kept loosely typed)."""

    api_version: Literal["tandem.dev/v1alpha1"] = Field(
        default="tandem.dev/v1alpha1", description="API version."
    )
    kind: Literal["InferenceService"] = Field(default="InferenceService", description="Kind.")
    metadata: dict[str, object] = Field(default_factory=dict, description="Object metadata.")
    spec: InferenceServiceSpec = Field(description="Desired state.")
    status: InferenceServiceStatus | None = Field(default=None, description="Observed state.")

    @property
    def name(self) -> str:
        """``metadata.name`` ("" while the API server has not named it yet)."""
        return str(self.metadata.get("name") or "")

    @model_validator(mode="after")
    def _rules(self) -> InferenceService:
        """The rules on the object itself (its name); the spec checks its own."""
        _enforce_rules(self, "")
        return self


def _enforce_rules(model: ApiModel, at: str) -> None:
    # Imported here, not at the top: the rule table types its predicates with the classes above.
    from tandem.api.v1alpha1.rules import violations

    if found := violations(model, at):
        raise ValueError("; ".join(found))
