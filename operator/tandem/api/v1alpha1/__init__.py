"""InferenceService v1alpha1: the API, as pydantic models that generate the CRD.

Everything a user can write is declared in this package once. ``tandem crds`` turns the models
into the CRD's structural schema (defaults, enums, bounds) and the rule table into its CEL rules;
the operator validates every object with the same models and the same table, so admission and
the operator never disagree about a field.

Modules, leaves first: ``scalars`` (identity, patterns, enums), ``engine`` (spec.model,
spec.engine), ``pools`` (spec.prefill, spec.decode), ``kvtransfer``, ``router``, ``autoscaling``,
``status``, ``rules`` (the cross-field rule table) and ``spec`` (the root). Import from here.
"""

from tandem.api.v1alpha1.autoscaling import (
    Autoscaling,
    MetricsSource,
    PrometheusSource,
    Ratio,
    ScrapeSource,
)
from tandem.api.v1alpha1.engine import (
    EngineSpec,
    EnvVar,
    ModelSpec,
    SecretKeyRef,
    SpeculativeDecoding,
)
from tandem.api.v1alpha1.kvtransfer import KVTransfer, LMCacheSettings, NixlSettings, RemoteCache
from tandem.api.v1alpha1.pools import (
    DecodeAutoscaling,
    DecodePoolSpec,
    Parallelism,
    PoolAutoscaling,
    PoolSpec,
    PrefillPoolSpec,
    Resources,
    Toleration,
)
from tandem.api.v1alpha1.router import Disaggregation, RouterSpec
from tandem.api.v1alpha1.rules import RULES, Rule, name_problem, violations
from tandem.api.v1alpha1.scalars import (
    CATEGORIES,
    DNS_1035_LABEL,
    DURATION_PATTERN,
    GROUP,
    KIND,
    LABEL_VALUE,
    MAX_NAME_LENGTH,
    PLURAL,
    QUANTITY_PATTERN,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    Dtype,
    KVCacheDtype,
    NixlBackend,
    Port,
    PullPolicy,
    Quantity,
    Quantization,
    ServiceType,
    parse_duration,
)
from tandem.api.v1alpha1.spec import InferenceService, InferenceServiceSpec
from tandem.api.v1alpha1.status import (
    AutoscalingStatus,
    InferenceServiceStatus,
    LastScale,
    PoolStatus,
    RecommendationInputs,
    RouterStatus,
    ScaleRecommendation,
)
from tandem.api.vocabulary import (
    ROUTER_CONTAINER_PORT,
    Connector,
    PrefillFailurePolicy,
    Role,
    RouterPolicy,
)

__all__ = [
    "CATEGORIES",
    "DNS_1035_LABEL",
    "DURATION_PATTERN",
    "GROUP",
    "KIND",
    "LABEL_VALUE",
    "MAX_NAME_LENGTH",
    "PLURAL",
    "QUANTITY_PATTERN",
    "ROUTER_CONTAINER_PORT",
    "RULES",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "Autoscaling",
    "AutoscalingStatus",
    "Connector",
    "DecodeAutoscaling",
    "DecodePoolSpec",
    "Disaggregation",
    "Dtype",
    "EngineSpec",
    "EnvVar",
    "InferenceService",
    "InferenceServiceSpec",
    "InferenceServiceStatus",
    "KVCacheDtype",
    "KVTransfer",
    "LMCacheSettings",
    "LastScale",
    "MetricsSource",
    "ModelSpec",
    "NixlBackend",
    "NixlSettings",
    "Parallelism",
    "PoolAutoscaling",
    "PoolSpec",
    "PoolStatus",
    "Port",
    "PrefillFailurePolicy",
    "PrefillPoolSpec",
    "PrometheusSource",
    "PullPolicy",
    "Quantity",
    "Quantization",
    "Ratio",
    "RecommendationInputs",
    "RemoteCache",
    "Resources",
    "Role",
    "RouterPolicy",
    "RouterSpec",
    "RouterStatus",
    "Rule",
    "ScaleRecommendation",
    "ScrapeSource",
    "SecretKeyRef",
    "ServiceType",
    "SpeculativeDecoding",
    "Toleration",
    "name_problem",
    "parse_duration",
    "violations",
]
