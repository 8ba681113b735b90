"""KV hand-off protocols: how one client request becomes a prefill call and a decode call.

`nixl.py` speaks vLLM's NixlConnector protocol (copy `kv_transfer_params` from the prefill answer
into the decode call); `lmcache.py` speaks LMCache's PD protocol (token ids, `disagg_spec`, ZMQ
KV-ready notifications, every token from the decoder; its bodies in `lmcache_legs.py`, its
abandoned pushes in `drain.py`). `relay.py` holds the decode leg both share, including the
decode-only route used for short prompts and prefill fallbacks. `base.py` places a hand-off on a
usable prefill/decode pair (decode slot first) and records how it ended.
"""
