#!/usr/bin/env python3
"""Drive one NIXL-protocol disaggregated request by hand (prefill -> decode), stdlib only.

    python3 e2e/dataplane/pd_request.py --prefill http://127.0.0.1:8100 \
        --decode http://127.0.0.1:8200 [--plain http://127.0.0.1:8300] [--model tiny]

Steps (the NIXL protocol spoken by vllm-router and vLLM's toy proxy):
1. POST /v1/completions to the prefill engine with max_tokens 1, stream false and
   kv_transfer_params {do_remote_decode: true, ...nulls}, header X-Request-Id: <id>;
2. take kv_transfer_params from the prefill response verbatim;
3. POST the original request to the decode engine with those kv_transfer_params and the same
   X-Request-Id.

It reads the decode engine's /metrics before and after and reports the growth of
vllm:prompt_tokens_by_source_total per source (external_kv_transfer proves KV was pulled).
With --plain it also sends the original request to a plain engine and compares the greedy text.
Prints one JSON object; exits 1 if no KV arrived through the connector or the texts differ.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.request
import uuid

DEFAULT_PROMPT = (
    "The quick brown fox jumps over the lazy dog. " * 3
    + (
        "Tandem splits prefill and decode across two pools of vLLM engines, and a router moves "
        "the KV cache between them using NIXL over UCX. "
    )
    * 8
)  # 465 tokens with the tiny model's tokenizer: 3 full 128-token CPU blocks + a partial one


def post(url: str, body: dict, request_id: str, timeout: float = 120.0) -> dict:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Request-Id": request_id},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def metrics(base: str) -> dict[str, float]:
    with urllib.request.urlopen(base + "/metrics", timeout=30) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^(\S+?)(\{[^}]*\})?\s+(\S+)$", line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def by_prefix(ms: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: v for k, v in ms.items() if k.startswith(prefix)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prefill", required=True)
    ap.add_argument("--decode", required=True)
    ap.add_argument("--plain", help="plain engine to compare greedy output with")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--prompt", default=DEFAULT_PROMPT)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args(argv)

    original = {
        "model": args.model,
        "prompt": args.prompt,
        "max_tokens": args.max_tokens,
        "temperature": 0,
        "stream": False,
    }
    rid = "tandem-pd-" + uuid.uuid4().hex
    before = metrics(args.decode)

    prefill_body = dict(original, max_tokens=1, stream=False)
    prefill_body["kv_transfer_params"] = {
        "do_remote_decode": True,
        "do_remote_prefill": False,
        "remote_engine_id": None,
        "remote_block_ids": None,
        "remote_host": None,
        "remote_port": None,
    }
    t0 = time.monotonic()
    p = post(args.prefill + "/v1/completions", prefill_body, rid)
    t_prefill = time.monotonic() - t0
    kvp = p.get("kv_transfer_params")
    if not kvp:
        print(json.dumps({"error": "prefill returned no kv_transfer_params", "prefill": p}))
        return 1

    decode_body = dict(original, kv_transfer_params=kvp)
    t1 = time.monotonic()
    try:
        d = post(args.decode + "/v1/completions", decode_body, rid)
    except urllib.error.HTTPError as e:
        # e.g. 500 when the lazy NIXL side-channel handshake times out (vLLM 0.32 waits a
        # fixed 5 s for the prefiller's reply; seen on an overloaded 2-core machine).
        after = metrics(args.decode)
        print(
            json.dumps(
                {
                    "request_id": rid,
                    "ok": False,
                    "error": f"decode HTTP {e.code}: {e.read().decode(errors='replace')[:500]}",
                    "prefill_kv_transfer_params": kvp,
                    "decode_nixl_failed_transfers": {
                        k: v
                        for k, v in after.items()
                        if k.startswith("vllm:nixl_num_failed_transfers_total")
                    },
                },
                indent=1,
            )
        )
        return 1
    t_decode = time.monotonic() - t1
    time.sleep(0.5)  # let the engine publish its stats
    after = metrics(args.decode)

    src_prefix = "vllm:prompt_tokens_by_source_total"
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in by_prefix(after, src_prefix)}
    ext = sum(v for k, v in delta.items() if 'source="external_kv_transfer"' in k)
    nixl = {
        k: after[k]
        for k in after
        if k.startswith("vllm:nixl_") and k.split("{")[0].endswith(("_count", "_sum", "_total"))
    }
    report = {
        "request_id": rid,
        "prefill_seconds": round(t_prefill, 3),
        "decode_seconds": round(t_decode, 3),
        "prompt_tokens": d.get("usage", {}).get("prompt_tokens"),
        "prefill_kv_transfer_params": kvp,
        "decode_text": d["choices"][0]["text"],
        "decode_prompt_tokens_by_source_delta": delta,
        "decode_nixl_metrics": nixl,
    }
    ok = ext > 0
    if args.plain:
        q = post(args.plain + "/v1/completions", original, "tandem-plain-" + uuid.uuid4().hex)
        report["plain_text"] = q["choices"][0]["text"]
        report["greedy_equal"] = report["plain_text"] == report["decode_text"]
        ok = ok and report["greedy_equal"]
    report["ok"] = ok
    print(json.dumps(report, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
