"""Shared pydantic base for every API object.

The models are the CRD: camelCase on the wire (``alias_generator``), python names in code,
unknown fields rejected (the structural schema prunes nothing silently), and a description on
every field (it becomes ``kubectl explain``). CEL rules that Kubernetes should run at admission
are attached with :func:`cel` and copied into the schema as ``x-kubernetes-validations``.
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


def cel(*rules: tuple[str, str] | tuple[str, str, str]) -> dict[str, Any]:
    """JSON-schema extra holding CEL rules: ``(rule, message[, fieldPath])``.

    Each rule is one cross-field check the API server runs at admission, so a bad manifest is
    rejected by ``kubectl apply`` with a message naming the field, before the operator sees it.
    """
    out = []
    for r in rules:
        item = {"rule": r[0], "message": r[1]}
        if len(r) == 3:
            item["fieldPath"] = r[2]
        out.append(item)
    return {CEL_KEY: out}
