"""Rules inside one block of the spec: each reads only the object it is attached to.

Part of the rule table (see ``rules/__init__.py``); ordered as the spec's blocks are.
"""

from __future__ import annotations

from typing import Any

from tandem.api.owned import OWNED_ENV, OWNED_FLAG_PATTERN, OWNED_FLAGS, owned_flag
from tandem.api.v1alpha1.autoscaling import MetricsSource, Ratio
from tandem.api.v1alpha1.engine import EngineSpec, ModelSpec, SpeculativeDecoding
from tandem.api.v1alpha1.kvtransfer import KVTransfer, LMCacheSettings
from tandem.api.v1alpha1.pools import PoolAutoscaling, PoolSpec, Toleration
from tandem.api.v1alpha1.rules.rule import Rule
from tandem.api.vocabulary import ROUTER_CONTAINER_PORT, Connector

POOLS = ("spec.prefill", "spec.decode")
ARGS_AND_ENV = ("spec.engine", *POOLS)


def _cel_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{i}'" for i in items) + "]"


WITHIN_BLOCKS: tuple[Rule[Any], ...] = (
    # spec.model
    Rule[ModelSpec](
        name="token-secret-only-for-hf",
        scopes=("spec.model",),
        field=".tokenSecretRef",
        cel="!has(self.tokenSecretRef) || self.uri.startsWith('hf://')",
        message="tokenSecretRef is only used for hf:// models",
        check=lambda m: m.token_secret_ref is None or m.uri.startswith("hf://"),
    ),
    Rule[ModelSpec](
        name="revision-only-for-hf",
        scopes=("spec.model",),
        field=".revision",
        cel="!has(self.revision) || self.uri.startsWith('hf://')",
        message="revision is only used for hf:// models",
        check=lambda m: m.revision is None or m.uri.startswith("hf://"),
    ),
    # spec.engine.speculativeDecoding
    Rule[SpeculativeDecoding](
        name="draft-needs-draft-model",
        scopes=("spec.engine.speculativeDecoding",),
        field=".draftModel",
        cel="self.method != 'draft' || has(self.draftModel)",
        message="draftModel is required when method is draft",
        check=lambda d: d.method != "draft" or d.draft_model is not None,
    ),
    Rule[SpeculativeDecoding](
        name="ngram-takes-no-draft-model",
        scopes=("spec.engine.speculativeDecoding",),
        field=".draftModel",
        cel="self.method != 'ngram' || !has(self.draftModel)",
        message="draftModel must not be set when method is ngram",
        check=lambda d: d.method != "ngram" or d.draft_model is None,
    ),
    Rule[SpeculativeDecoding](
        name="prompt-lookup-min-le-max",
        scopes=("spec.engine.speculativeDecoding",),
        field=".promptLookupMin",
        cel="self.promptLookupMin <= self.promptLookupMax",
        message="promptLookupMin must be less than or equal to promptLookupMax",
        check=lambda d: d.prompt_lookup_min <= d.prompt_lookup_max,
    ),
    # spec.engine, spec.prefill, spec.decode: args and env
    Rule[EngineSpec | PoolSpec](
        name="args-set-no-derived-flag",
        scopes=ARGS_AND_ENV,
        field=".args",
        cel=f"!self.args.exists(a, a.matches('{OWNED_FLAG_PATTERN}'))",
        message="args must not set a flag Tandem derives from the spec ("
        + ", ".join(OWNED_FLAGS)
        + ", in any spelling)",
        check=lambda p: not any(owned_flag(a) for a in p.args),
    ),
    Rule[EngineSpec | PoolSpec](
        name="env-sets-no-derived-variable",
        scopes=ARGS_AND_ENV,
        field=".env",
        cel=f"!self.env.exists(e, e.name in {_cel_list(OWNED_ENV)})",
        message="env must not set a variable Tandem derives from the spec ("
        + ", ".join(OWNED_ENV)
        + ")",
        check=lambda p: not any(e.name in OWNED_ENV for e in p.env),
    ),
    Rule[EngineSpec | PoolSpec](
        name="env-names-unique",
        scopes=ARGS_AND_ENV,
        field=".env",
        cel="self.env.all(e, self.env.exists_one(f, f.name == e.name))",
        message="env names must be unique",
        check=lambda p: len({e.name for e in p.env}) == len(p.env),
    ),
    # spec.<pool>.autoscaling and spec.<pool>.tolerations[]
    Rule[PoolAutoscaling](
        name="min-replicas-le-max-replicas",
        scopes=tuple(f"{p}.autoscaling" for p in POOLS),
        field=".minReplicas",
        cel="self.minReplicas <= self.maxReplicas",
        message="minReplicas must be less than or equal to maxReplicas",
        check=lambda a: a.min_replicas <= a.max_replicas,
    ),
    Rule[Toleration](
        name="exists-takes-no-value",
        scopes=tuple(f"{p}.tolerations[]" for p in POOLS),
        field=".value",
        cel="self.operator != 'Exists' || !has(self.value) || self.value == ''",
        message="value must be empty when operator is Exists",
        check=lambda t: t.operator != "Exists" or not t.value,
    ),
    Rule[Toleration](
        name="empty-key-needs-exists",
        scopes=tuple(f"{p}.tolerations[]" for p in POOLS),
        field=".operator",
        cel="has(self.key) || self.operator == 'Exists'",
        message="operator must be Exists when key is empty",
        check=lambda t: t.key is not None or t.operator == "Exists",
    ),
    Rule[Toleration](
        name="toleration-seconds-only-for-no-execute",
        scopes=tuple(f"{p}.tolerations[]" for p in POOLS),
        field=".tolerationSeconds",
        cel="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
        message="tolerationSeconds is only used with effect NoExecute",
        check=lambda t: t.toleration_seconds is None or t.effect == "NoExecute",
    ),
    # spec.kvTransfer
    Rule[KVTransfer](
        name="lmcache-block-only-for-lmcache",
        scopes=("spec.kvTransfer",),
        field=".lmcache",
        cel="!has(self.lmcache) || self.connector == 'lmcache'",
        message="kvTransfer.lmcache may only be set when connector is lmcache",
        check=lambda k: k.lmcache is None or k.connector == Connector.LMCACHE,
    ),
    Rule[KVTransfer](
        name="nixl-block-only-for-nixl",
        scopes=("spec.kvTransfer",),
        field=".nixl",
        cel="!has(self.nixl) || self.connector == 'nixl'",
        message="kvTransfer.nixl may only be set when connector is nixl",
        check=lambda k: k.nixl is None or k.connector == Connector.NIXL,
    ),
    Rule[LMCacheSettings](
        name="kv-ready-timeout-above-allocation-timeout",
        scopes=("spec.kvTransfer.lmcache",),
        field=".kvReadyTimeoutSeconds",
        cel="self.kvReadyTimeoutSeconds > self.allocationTimeoutSeconds",
        message="kvReadyTimeoutSeconds must be greater than allocationTimeoutSeconds",
        check=lambda lm: lm.kv_ready_timeout_seconds > lm.allocation_timeout_seconds,
    ),
    Rule[LMCacheSettings](
        name="proxy-port-not-router-container-port",
        scopes=("spec.kvTransfer.lmcache",),
        field=".proxyPort",
        cel=f"self.proxyPort != {ROUTER_CONTAINER_PORT}",
        message=f"proxyPort must not be {ROUTER_CONTAINER_PORT}, the router container's HTTP port",
        check=lambda lm: lm.proxy_port != ROUTER_CONTAINER_PORT,
    ),
    # spec.autoscaling
    Rule[Ratio](
        name="ratio-min-le-max",
        scopes=("spec.autoscaling.prefillToDecodeRatio",),
        field=".min",
        cel="self.min <= self.max",
        message="min must be less than or equal to max",
        check=lambda r: r.min <= r.max,
    ),
    Rule[MetricsSource](
        name="prometheus-type-needs-settings",
        scopes=("spec.autoscaling.source",),
        field=".prometheus",
        cel="self.type != 'prometheus' || has(self.prometheus)",
        message="prometheus settings are required when type is prometheus",
        check=lambda m: m.type != "prometheus" or m.prometheus is not None,
    ),
    Rule[MetricsSource](
        name="prometheus-settings-only-for-prometheus",
        scopes=("spec.autoscaling.source",),
        field=".prometheus",
        cel="!has(self.prometheus) || self.type == 'prometheus'",
        message="prometheus settings are only used when type is prometheus",
        check=lambda m: m.prometheus is None or m.type == "prometheus",
    ),
)
