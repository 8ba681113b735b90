"""Generate the InferenceService CRD from the pydantic models.

Pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3 schema. Each
post-processing step below is a small function: inline ``$ref``s (CRDs forbid them), collapse
``Optional`` unions to the non-null branch, turn ``const`` into a one-value ``enum``, rewrite
exclusive bounds into OpenAPI 3.0 form, drop titles and ``additionalProperties: false`` (the API
server prunes and, with strict field validation, rejects unknown fields itself), and add
explicit defaults to nested objects so stored objects show the full intent. The CEL rules come
from the rule table (``v1alpha1.rules``), attached at each rule's scopes.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pydantic import BaseModel

from tandem.api import v1alpha1 as api
from tandem.api.base import CEL_KEY
from tandem.api.v1alpha1.rules import RULES

Schema = dict[str, Any]

CRD_NAME = f"{api.PLURAL}.{api.GROUP}"
CRD_FILE = f"{api.GROUP}_{api.PLURAL}.yaml"

# Lists whose items are identified by a key (server-side apply merges them per item).
LIST_MAP_KEYS: dict[str, list[str]] = {"conditions": ["type"], "env": ["name"]}


def _resolve(node: Any, defs: dict[str, Schema]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        merged = {**_resolve(target, defs), **_resolve(extra, defs)}
        return merged
    out = {k: _resolve(v, defs) for k, v in node.items() if k != "$defs"}
    if "allOf" in out and len(out["allOf"]) == 1:
        inner = out.pop("allOf")[0]
        out = {**inner, **out}
    return out


def _collapse_optional(node: Schema) -> Schema:
    branches = node.get("anyOf")
    if branches is None:
        return node
    non_null = [b for b in branches if b.get("type") != "null"]
    if len(non_null) != 1:
        raise ValueError(f"union left in schema: {branches}")
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    if rest.get("default", "missing") is None:
        rest.pop("default")
    return {**non_null[0], **rest}


def _openapi_form(node: Schema) -> Schema:
    """One node's JSON Schema 2020-12 spellings, as a structural OpenAPI v3 schema wants them."""
    node = _collapse_optional(dict(node))
    node.pop("title", None)
    if node.get("additionalProperties") is False:
        node.pop("additionalProperties")
    if node.get("additionalProperties") is True:
        # A free-form Kubernetes object (affinity): kept as written, not pruned.
        node.pop("additionalProperties")
        node["x-kubernetes-preserve-unknown-fields"] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node and not isinstance(node[bound], bool):
            node[plain] = node.pop(bound)
            node[bound] = True
    if "enum" in node and "type" not in node:
        node["type"] = "string"
    return node


def _list_type(node: Schema, key: str | None) -> None:
    """Keyed lists merge per item under server-side apply; every other list is atomic."""
    if node.get("type") != "array":
        return
    if key in LIST_MAP_KEYS:
        node["x-kubernetes-list-type"] = "map"
        node["x-kubernetes-list-map-keys"] = LIST_MAP_KEYS[key]
    else:
        node.setdefault("x-kubernetes-list-type", "atomic")


def _clean(node: Any, key: str | None = None) -> Any:
    if isinstance(node, list):
        return [_clean(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: Schema = {
        k: {name: _clean(sub, name) for name, sub in v.items()} if k == "properties" else _clean(v)
        for k, v in _openapi_form(node).items()
    }
    _list_type(out, key)
    return out


def _object_defaults(node: Schema, model: type[BaseModel] | None) -> None:
    """Add explicit defaults where pydantic uses a default_factory.

    The API server then stores them, so a stored object shows the full intent.
    """
    props = node.get("properties")
    if not props or model is None:
        return
    for name, field in model.model_fields.items():
        alias = field.alias or name
        sub = props.get(alias)
        if sub is None:
            continue
        if field.default_factory is not None and "default" not in sub:
            value = field.default_factory()  # type: ignore[call-arg]
            if isinstance(value, BaseModel):
                # The full object, not {}: the API server checks defaults against CEL rules
                # without applying nested defaults first.
                sub["default"] = value.model_dump(by_alias=True, exclude_none=True, mode="json")
            elif isinstance(value, list | dict):
                sub["default"] = json.loads(json.dumps(value))  # enum members -> values
        _object_defaults(sub, _model_of(field.annotation))


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _strip_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_strip_defaults(v) for v in node]
    return node


def model_schema(model: type[BaseModel], *, defaults: bool = True) -> Schema:
    """Structural OpenAPI v3 schema of one model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: Schema = _clean(_resolve(raw, defs))
    if defaults:
        _object_defaults(schema, model)
    else:
        schema = _strip_defaults(schema)
    return schema


def _schema_at(root: Schema, scope: str) -> Schema:
    """The schema node of the objects at a rule's scope (``a.b[]``: the items of list ``b``)."""
    node = root
    for seg in filter(None, scope.split(".")):
        node = node["properties"][seg.removesuffix("[]")]
        if seg.endswith("[]"):
            node = node["items"]
    return node


def attach_rules(root: Schema) -> Schema:
    """Copy every rule of the table into ``x-kubernetes-validations`` at its scopes."""
    for rule in RULES:
        for scope in rule.scopes:
            item = {"rule": rule.cel, "message": rule.message}
            if scope:
                # The root's rules read metadata.name, which the schema does not describe, so
                # a fieldPath into it is refused; the message names the field instead.
                item["fieldPath"] = rule.field
            _schema_at(root, scope).setdefault(CEL_KEY, []).append(item)
    return root


PRINTER_COLUMNS = [
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Whether the service answers requests.",
    },
    {
        "name": "Prefill",
        "type": "string",
        "jsonPath": ".status.prefill.ready",
        "description": "Prefill replicas ready/desired.",
    },
    {
        "name": "Decode",
        "type": "string",
        "jsonPath": ".status.decode.ready",
        "description": "Decode replicas ready/desired.",
    },
    {
        "name": "TPxPP",
        "type": "string",
        "jsonPath": ".status.parallelism",
        "description": "Tensor x pipeline parallelism of prefill and decode replicas.",
    },
    {
        "name": "KV",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="KVTransferEffective")].reason',
        "description": "Whether KV really moves from prefill to decode (KVTransferEffective).",
    },
    {
        "name": "Endpoint",
        "type": "string",
        "jsonPath": ".status.endpoint",
        "description": "OpenAI base URL of the router.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def inference_service_crd() -> dict[str, Any]:
    """The complete CustomResourceDefinition manifest."""
    root: Schema = {
        "type": "object",
        "description": (
            "A model served by separate prefill and decode vLLM pools with KV transfer "
            "between them, a P/D router in front, and per-pool autoscaling."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version."},
            "kind": {"type": "string", "description": "Kind."},
            "metadata": {"type": "object"},
            "spec": model_schema(api.InferenceServiceSpec),
            "status": model_schema(api.InferenceServiceStatus, defaults=False),
        },
    }
    attach_rules(root)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/part-of": "tandem"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": api.SHORT_NAMES,
                "categories": api.CATEGORIES,
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def _peering_crd(kind: str, plural: str, scope: str) -> dict[str, Any]:
    """kopf's peering resource, so several operator replicas can elect one active."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.kopf.dev",
            "labels": {"app.kubernetes.io/part-of": "tandem"},
        },
        "spec": {
            "group": "kopf.dev",
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": plural[:-1]},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    """File name → manifest, for ``crds/`` and the chart's ``crds/``."""
    return {
        CRD_FILE: inference_service_crd(),
        "kopf.dev_clusterkopfpeerings.yaml": _peering_crd(
            "ClusterKopfPeering", "clusterkopfpeerings", "Cluster"
        ),
        "kopf.dev_kopfpeerings.yaml": _peering_crd("KopfPeering", "kopfpeerings", "Namespaced"),
    }
