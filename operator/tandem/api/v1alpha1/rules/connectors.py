"""P/D shapes a KV connector cannot serve (``self`` is the spec): part of the rule table.

Each rule is what the pinned engines do, checked in their source (vLLM 0.32.0, LMCache 0.5.6):

- LMCache keys KV chunks by ``model@world_size@worker_id@hash`` and each sender rank pushes to
  the receiver port of its own *global* rank (``vllm_service_factory.py:149``,
  ``pd_backend_async.py:301,1068``), so prefill and decode must have the same tensor and
  pipeline sizes.
- LMCache masks chunks vLLM already holds in its prefix cache and never frees their reserved
  receive buffer (``vllm_v1_adapter.py:816``, ``token_database.py:404``; no eviction,
  ``pd_backend_async.py:1706``): prefix caching must stay off with LMCache.
- vLLM's NixlConnector raises ``NotImplementedError`` for a decode (kv_consumer) engine with
  pipeline > 1 (``nixl/base_worker.py:775``), and maps tensor ranks only when one size divides
  the other (``kv_connector/utils.py:502``); a larger prefill TP is supported (``tp_mapping.py``).
- Speculative decoding runs on the decode pool only; a draft (or EAGLE) model adds KV layers to
  the decoder, so LMCache's chunk geometry and NIXL's handshake compatibility hash and layer
  count no longer match the prefiller (``nixl/metadata.py:107,199``,
  ``nixl/base_worker.py:2573``). Only ``ngram`` (no draft layers) is accepted.
"""

from __future__ import annotations

from typing import Any

from tandem.api.v1alpha1.rules.rule import Rule
from tandem.api.v1alpha1.spec import InferenceServiceSpec
from tandem.api.vocabulary import Connector

_LMCACHE = f"self.kvTransfer.connector != '{Connector.LMCACHE}'"
_NIXL = f"self.kvTransfer.connector != '{Connector.NIXL}'"
_P, _D = "self.prefill.parallelism", "self.decode.parallelism"


def _connector_is_not(s: InferenceServiceSpec, connector: Connector) -> bool:
    return s.kv_transfer.connector != connector


def _same_shape(s: InferenceServiceSpec) -> bool:
    p, d = s.prefill.parallelism, s.decode.parallelism
    return (p.tensor, p.pipeline) == (d.tensor, d.pipeline)


def _tensor_sizes_divide(s: InferenceServiceSpec) -> bool:
    p, d = s.prefill.parallelism.tensor, s.decode.parallelism.tensor
    return p % d == 0 or d % p == 0


CONNECTOR_SHAPES: tuple[Rule[Any], ...] = (
    Rule[InferenceServiceSpec](
        name="lmcache-equal-parallelism",
        scopes=("spec",),
        field=".decode.parallelism",
        cel=f"{_LMCACHE} || ({_P}.tensor == {_D}.tensor && {_P}.pipeline == {_D}.pipeline)",
        message="the lmcache connector needs the same tensor and pipeline sizes on prefill and "
        "decode (LMCache keys KV by world size and rank)",
        check=lambda s: _connector_is_not(s, Connector.LMCACHE) or _same_shape(s),
    ),
    Rule[InferenceServiceSpec](
        name="lmcache-without-prefix-caching",
        scopes=("spec",),
        field=".engine.prefixCaching",
        cel=f"{_LMCACHE} || !has(self.engine.prefixCaching) || !self.engine.prefixCaching",
        message="prefix caching cannot be on with the lmcache connector (LMCache skips chunks "
        "vLLM already caches and never frees their receive buffer); leave it unset",
        check=lambda s: _connector_is_not(s, Connector.LMCACHE) or not s.engine.prefix_caching,
    ),
    Rule[InferenceServiceSpec](
        name="nixl-decode-pipeline-one",
        scopes=("spec",),
        field=".decode.parallelism.pipeline",
        cel=f"{_NIXL} || {_D}.pipeline == 1",
        message="the nixl connector cannot serve a decode pool with pipeline > 1 (vLLM 0.32 "
        "raises NotImplementedError)",
        check=lambda s: _connector_is_not(s, Connector.NIXL) or s.decode.parallelism.pipeline == 1,
    ),
    Rule[InferenceServiceSpec](
        name="nixl-tensor-sizes-divide",
        scopes=("spec",),
        field=".decode.parallelism.tensor",
        cel=f"{_NIXL} || {_P}.tensor % {_D}.tensor == 0 || {_D}.tensor % {_P}.tensor == 0",
        message="the nixl connector needs one of prefill.parallelism.tensor and "
        "decode.parallelism.tensor to divide the other",
        check=lambda s: _connector_is_not(s, Connector.NIXL) or _tensor_sizes_divide(s),
    ),
    Rule[InferenceServiceSpec](
        name="decode-only-speculation-is-ngram",
        scopes=("spec",),
        field=".engine.speculativeDecoding.method",
        cel="!has(self.engine.speculativeDecoding) || "
        "self.engine.speculativeDecoding.method == 'ngram'",
        message="only ngram speculative decoding can run on the decode pool alone: a draft or "
        "EAGLE model changes the decoder's KV layers, so transferred KV no longer matches",
        check=lambda s: (
            s.engine.speculative_decoding is None or s.engine.speculative_decoding.method == "ngram"
        ),
    ),
)
