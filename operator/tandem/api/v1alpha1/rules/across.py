"""Rules across blocks of the spec (``self`` is the spec), and on the object's name.

Part of the rule table (see ``rules/__init__.py``). The port rules keep every port of one engine
pod distinct: ``engine.port``, NIXL's side channel, and LMCache's init and alloc ranges (one
port per decode rank, tensor x pipeline, from ``initPort`` and ``allocPort``). Rules whose
CEL needs a value from an optional block (``kvTransfer.lmcache``) spell out the block's default,
taken from the model, since the API server does not default an absent block.
"""

from __future__ import annotations

import re
from typing import Any

from tandem.api.v1alpha1.kvtransfer import LMCacheSettings, NixlSettings
from tandem.api.v1alpha1.rules.rule import Named, Rule
from tandem.api.v1alpha1.scalars import DNS_1035_LABEL, MAX_NAME_LENGTH
from tandem.api.v1alpha1.spec import InferenceServiceSpec
from tandem.api.vocabulary import ROLES, Connector, Role


def _replicas_within_bounds(role: Role) -> Rule[InferenceServiceSpec]:
    """``spec.<pool>.replicas`` inside the pool's autoscaling bounds (one rule per pool: it needs
    ``spec.autoscaling.enabled``, so it sits on the spec)."""

    def check(s: InferenceServiceSpec) -> bool:
        pool = s.pool(role)
        a = pool.autoscaling
        return not s.autoscaling.enabled or a.min_replicas <= pool.replicas <= a.max_replicas

    p = role.value
    return Rule[InferenceServiceSpec](
        name=f"{p}-replicas-within-autoscaling-bounds",
        scopes=("spec",),
        field=f".{p}.replicas",
        cel=f"!self.autoscaling.enabled || (self.{p}.replicas >= self.{p}.autoscaling.minReplicas"
        f" && self.{p}.replicas <= self.{p}.autoscaling.maxReplicas)",
        message=f"{p}.replicas must lie within {p}.autoscaling minReplicas..maxReplicas when "
        "autoscaling is enabled",
        check=check,
    )


# -------------------------------------------------- LMCache's decoder port ranges, in CEL

_LM_DEFAULTS = LMCacheSettings()
_NIXL_DEFAULTS = NixlSettings()
_DECODE_RANKS = "self.decode.parallelism.tensor * self.decode.parallelism.pipeline"
_IS_LMCACHE = f"self.kvTransfer.connector != '{Connector.LMCACHE}'"


def _lm(field: str, default: int) -> str:
    """An LMCache setting in CEL, its default when the block is absent."""
    return f"(has(self.kvTransfer.lmcache) ? self.kvTransfer.lmcache.{field} : {default})"


_INIT = _lm("initPort", _LM_DEFAULTS.init_port)
_ALLOC = _lm("allocPort", _LM_DEFAULTS.alloc_port)
_SIDE = (
    "(has(self.kvTransfer.nixl) ? self.kvTransfer.nixl.sideChannelPort : "
    f"{_NIXL_DEFAULTS.side_channel_port})"
)


def _decode_ranks(s: InferenceServiceSpec) -> int:
    """Processes of one decode engine: each holds one LMCache init and one alloc port."""
    return s.decode.parallelism.gpus


def _in_range(port: int, first: int, count: int) -> bool:
    return first <= port < first + count


def _fits(first: int, count: int) -> bool:
    return first + count <= 65536


def _init_range(s: InferenceServiceSpec) -> tuple[int, int]:
    return s.kv_transfer.lmcache_settings.init_port, _decode_ranks(s)


def _alloc_range(s: InferenceServiceSpec) -> tuple[int, int]:
    return s.kv_transfer.lmcache_settings.alloc_port, _decode_ranks(s)


ACROSS_BLOCKS: tuple[Rule[Any], ...] = (
    *(_replicas_within_bounds(role) for role in ROLES),
    Rule[InferenceServiceSpec](
        name="max-gpus-covers-min-replicas",
        scopes=("spec",),
        field=".autoscaling.maxGPUs",
        cel="!has(self.autoscaling.maxGPUs) || self.autoscaling.maxGPUs >= "
        "self.prefill.autoscaling.minReplicas * self.prefill.parallelism.tensor * "
        "self.prefill.parallelism.pipeline + self.decode.autoscaling.minReplicas * "
        "self.decode.parallelism.tensor * self.decode.parallelism.pipeline",
        message="autoscaling.maxGPUs is below the GPUs the pools' minReplicas need",
        check=lambda s: (
            s.autoscaling.max_gpus is None
            or s.autoscaling.max_gpus
            >= sum(s.pool(r).autoscaling.min_replicas * s.pool(r).parallelism.gpus for r in ROLES)
        ),
    ),
    Rule[InferenceServiceSpec](
        name="one-gpu-resource-name",
        scopes=("spec",),
        field=".decode.resources.gpuResourceName",
        cel="self.prefill.resources.gpuResourceName == self.decode.resources.gpuResourceName",
        message="prefill and decode must use the same resources.gpuResourceName",
        check=lambda s: (
            s.prefill.resources.gpu_resource_name == s.decode.resources.gpu_resource_name
        ),
    ),
    # spec: ports of one engine pod
    Rule[InferenceServiceSpec](
        name="nixl-side-channel-port-not-engine-port",
        scopes=("spec",),
        field=".kvTransfer.nixl.sideChannelPort",
        cel=f"self.kvTransfer.connector != 'nixl' || {_SIDE} != self.engine.port",
        message="kvTransfer.nixl.sideChannelPort must differ from engine.port",
        check=lambda s: (
            s.kv_transfer.connector != Connector.NIXL
            or s.kv_transfer.nixl_settings.side_channel_port != s.engine.port
        ),
    ),
    Rule[InferenceServiceSpec](
        name="lmcache-init-ports-fit",
        scopes=("spec",),
        field=".kvTransfer.lmcache.initPort",
        cel=f"{_IS_LMCACHE} || {_INIT} + {_DECODE_RANKS} <= 65536",
        message="kvTransfer.lmcache.initPort + one port per decode rank (tensor x pipeline) "
        "must stay within 65535",
        check=lambda s: (
            s.kv_transfer.connector != Connector.LMCACHE
            or _fits(s.kv_transfer.lmcache_settings.init_port, _decode_ranks(s))
        ),
    ),
    Rule[InferenceServiceSpec](
        name="lmcache-alloc-ports-fit",
        scopes=("spec",),
        field=".kvTransfer.lmcache.allocPort",
        cel=f"{_IS_LMCACHE} || {_ALLOC} + {_DECODE_RANKS} <= 65536",
        message="kvTransfer.lmcache.allocPort + one port per decode rank (tensor x pipeline) "
        "must stay within 65535",
        check=lambda s: (
            s.kv_transfer.connector != Connector.LMCACHE
            or _fits(s.kv_transfer.lmcache_settings.alloc_port, _decode_ranks(s))
        ),
    ),
    Rule[InferenceServiceSpec](
        name="lmcache-init-and-alloc-ports-disjoint",
        scopes=("spec",),
        field=".kvTransfer.lmcache.allocPort",
        cel=f"{_IS_LMCACHE} || {_INIT} + {_DECODE_RANKS} <= {_ALLOC} || "
        f"{_ALLOC} + {_DECODE_RANKS} <= {_INIT}",
        message="the LMCache init and alloc port ranges (one port per decode rank, "
        "tensor x pipeline) must not overlap",
        check=lambda s: (
            s.kv_transfer.connector != Connector.LMCACHE
            or not (
                _in_range(s.kv_transfer.lmcache_settings.alloc_port, *_init_range(s))
                or _in_range(s.kv_transfer.lmcache_settings.init_port, *_alloc_range(s))
            )
        ),
    ),
    Rule[InferenceServiceSpec](
        name="engine-port-outside-lmcache-ports",
        scopes=("spec",),
        field=".engine.port",
        cel=f"{_IS_LMCACHE} || ((self.engine.port < {_INIT} || "
        f"self.engine.port >= {_INIT} + {_DECODE_RANKS}) && (self.engine.port < {_ALLOC} || "
        f"self.engine.port >= {_ALLOC} + {_DECODE_RANKS}))",
        message="engine.port must not fall in the LMCache init or alloc port range of decode "
        "engines (one port per decode rank, tensor x pipeline)",
        check=lambda s: (
            s.kv_transfer.connector != Connector.LMCACHE
            or not (
                _in_range(s.engine.port, *_init_range(s))
                or _in_range(s.engine.port, *_alloc_range(s))
            )
        ),
    ),
    # the object: its name becomes the prefix of every child's name
    Rule[Named](
        name="name-length",
        scopes=("",),
        field=".metadata.name",
        cel=f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
        message=f"metadata.name must be at most {MAX_NAME_LENGTH} characters (child names add "
        "suffixes)",
        check=lambda o: len(o.name) <= MAX_NAME_LENGTH,
    ),
    Rule[Named](
        name="name-dns-1035-label",
        scopes=("",),
        field=".metadata.name",
        cel=f"self.metadata.name.matches('{DNS_1035_LABEL}')",
        message="metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', "
        "starting with a letter): child Services are named after it",
        check=lambda o: not o.name or re.fullmatch(DNS_1035_LABEL, o.name) is not None,
    ),
)
