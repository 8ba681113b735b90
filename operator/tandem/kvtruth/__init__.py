"""Is KV really moving? The ``KVTransferEffective`` condition, from what actually happened.

A broken transfer is invisible from outside: pods are Ready, ``/health`` answers 200, and
requests are silently recomputed on the decoder or wait for a timeout. So Tandem does not assume
the transfer works; it measures it. Every interval the operator reads

- the routers' per-pair hand-off outcomes, decode-only fallbacks, abandoned hand-offs and
  broken pairs (``tandem_router_*``, exported by ``tandem router``), and
- the decode engines' prompt tokens by source (``vllm:prompt_tokens_by_source_total``:
  ``external_kv_transfer`` vs ``local_compute``) and NIXL's failure counters,

and judges the difference between two readings (:mod:`.verdict`, pure). Parsing is in
:mod:`.signals` (pure); the scraping loop lives with the operator's other daemons.
"""

from tandem.kvtruth.signals import KvSample, parse_decoder, parse_prefill, parse_router
from tandem.kvtruth.store import KvVerdicts
from tandem.kvtruth.verdict import KvVerdict, Reading, judge

__all__ = [
    "KvSample",
    "KvVerdict",
    "KvVerdicts",
    "Reading",
    "judge",
    "parse_decoder",
    "parse_prefill",
    "parse_router",
]
