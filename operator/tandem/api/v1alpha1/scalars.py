"""Scalar vocabulary of the v1alpha1 API: identity, patterns, bounded scalar types and enums.

Everything here is a leaf (no model imports it back), so every other module of the package can
use it. Each pattern is also the CRD's ``pattern``, so the API server and pydantic accept the same
strings.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import Field

GROUP = "tandem.dev"
VERSION = "v1alpha1"
KIND = "InferenceService"
PLURAL = "inferenceservices"
SINGULAR = "inferenceservice"
# "isvc" is KServe's short name; "tisvc" is ours.
SHORT_NAMES = ["tisvc"]
CATEGORIES = ["tandem", "ai"]

# Child names are "<name>-prefill", "<name>-decode", "<name>-router", "<name>-lmcache", ...;
# Service names must be DNS-1035 labels of at most 63 characters, so the CR name leaves room for
# the longest suffix and is itself a DNS-1035 label (a name starting with a digit is a valid CR
# name but not a valid Service name).
MAX_NAME_LENGTH = 40
DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"

# A Kubernetes quantity above zero (every quantity in this API is a size or a request): no sign,
# and a non-zero digit somewhere in the number.
QUANTITY_PATTERN = (
    r"^((0*[1-9][0-9]*(\.[0-9]*)?)|([0-9]*\.[0-9]*[1-9][0-9]*))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# A positive number of seconds, minutes or hours ("0s" would spin the autoscaler).
DURATION_PATTERN = r"^0*[1-9][0-9]*(s|m|h)$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# A label or taint key: an optional DNS-subdomain prefix and "/", then a name.
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)

Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64)]
Port = Annotated[int, Field(ge=1, le=65535)]
LabelValue = Annotated[str, Field(pattern=LABEL_VALUE, max_length=63)]


def parse_duration(text: str) -> int:
    """Seconds in a ``10s`` / ``5m`` / ``1h`` duration."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration: {text!r}")
    return int(text[:-1]) * {"s": 1, "m": 60, "h": 3600}[text[-1]]


class Dtype(StrEnum):
    AUTO = "auto"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"
    FLOAT32 = "float32"


class Quantization(StrEnum):
    AWQ = "awq"
    GPTQ = "gptq"
    FP8 = "fp8"
    BITSANDBYTES = "bitsandbytes"
    COMPRESSED_TENSORS = "compressed-tensors"


class KVCacheDtype(StrEnum):
    AUTO = "auto"
    FP8 = "fp8"
    FP8_E4M3 = "fp8_e4m3"
    FP8_E5M2 = "fp8_e5m2"


class NixlBackend(StrEnum):
    UCX = "UCX"
    LIBFABRIC = "LIBFABRIC"
    GDS = "GDS"


class ServiceType(StrEnum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class PullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"
