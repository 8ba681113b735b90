"""Shared pydantic base for every API object.

The models are the CRD: camelCase on the wire (``alias_generator``), python names in code,
unknown fields rejected (the structural schema prunes nothing silently), and a description on
every field (it becomes ``kubectl explain``). Cross-field rules are not declared on the models:
they live in one table (``tandem.api.v1alpha1.rules``) that feeds both the CRD's CEL and the
models' validators.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

CEL_KEY = "x-kubernetes-validations"


class ApiModel(BaseModel):
    """Base for API objects: camelCase aliases, unknown fields forbidden."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        use_enum_values=True,
        validate_default=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as Kubernetes stores it: camelCase keys, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
