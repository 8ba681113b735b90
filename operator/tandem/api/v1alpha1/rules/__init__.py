"""The cross-field rules of v1alpha1: ONE table, run by the API server and by pydantic.

``tandem crds`` copies each rule's CEL into the CRD as ``x-kubernetes-validations`` at the
rule's scopes (:func:`tandem.api.crd.attach_rules`); the models' validators run the same rules'
Python checks (:func:`violations`), reporting e.g.
``spec.prefill.autoscaling.minReplicas: minReplicas must be less than or equal to maxReplicas``,
what the API server prints for the CEL. So ``kubectl apply`` and the operator reject the same
manifests with the same words. The table has two parts: rules within one block
(:mod:`.within`), rules across blocks and on the name (:mod:`.across`), and the P/D shapes each
KV connector cannot serve (:mod:`.connectors`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tandem.api.v1alpha1.rules.across import ACROSS_BLOCKS
from tandem.api.v1alpha1.rules.connectors import CONNECTOR_SHAPES
from tandem.api.v1alpha1.rules.rule import Named, Rule, broken
from tandem.api.v1alpha1.rules.within import WITHIN_BLOCKS

RULES: tuple[Rule[Any], ...] = (*WITHIN_BLOCKS, *ACROSS_BLOCKS, *CONNECTOR_SHAPES)


def violations(model: object, at: str) -> list[str]:
    """Every rule of the table ``model`` (the object at wire path ``at``) breaks."""
    return broken(RULES, model, at)


@dataclass(frozen=True)
class _Name:
    name: str


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name an InferenceService (every child's name starts with it), or None.

    The rules the CRD runs on ``metadata.name``, for the operator and ``tandem render``.
    """
    return "; ".join(violations(_Name(name), "")) or None


__all__ = ["RULES", "Named", "Rule", "name_problem", "violations"]
