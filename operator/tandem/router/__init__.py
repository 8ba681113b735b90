"""Tandem's prefill/decode router.

An aiohttp server that accepts OpenAI completion requests, picks a prefill and a decode engine
(pure functions in `pick.py`), runs the prefill leg, hands the KV-transfer parameters to the
decode leg in the configured connector's protocol (`protocols/nixl.py`, `protocols/lmcache.py`),
streams the decode answer back, and exports Prometheus metrics. Endpoints come from static flags
or from the EndpointSlices of the prefill and decode Services (`discovery.py`).

A hand-off only uses a prefill/decode *pair* that has shown KV arriving on the decoder: a canary
hand-off per new pair (`canary.py`), pair states and per-pair outcomes (`pairs.py`, pure).
Requests a split would not help or would change go decode-only before any prefill (`split.py`).

Entry points: `tandem.router.main.router_command` (click) and `python -m tandem.router`.
"""
