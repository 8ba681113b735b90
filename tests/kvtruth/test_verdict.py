"""KVTransferEffective from counters: every reason, counter resets, and real metric text."""

from __future__ import annotations

from tandem.kvtruth import judge, parse_decoder, parse_prefill, parse_router


def router(ok: int = 0, fallback: int = 0, kv_timeout: int = 0, broken: bool = False) -> str:
    lines = [
        "# HELP tandem_router_handoffs_total P/D hand-offs by pair and outcome.",
        "# TYPE tandem_router_handoffs_total counter",
        f'tandem_router_handoffs_total{{prefill="10.0.0.1:8000",decode="10.0.0.2:8000",outcome="ok"}} {ok}.0',
        f'tandem_router_handoffs_total{{prefill="10.0.0.1:8000",decode="10.0.0.2:8000",outcome="kv_timeout"}} {kv_timeout}.0',
        f'tandem_router_handoffs_total{{prefill="",decode="10.0.0.2:8000",outcome="decode_only_fallback"}} {fallback}.0',
    ]
    if broken:
        lines.append(
            'tandem_router_pair_broken{prefill="10.0.0.1:8000",decode="10.0.0.2:8000"} 1.0'
        )
    return "\n".join(lines) + "\n"


def decoder(external: int, local: int, failed: int = 0, expired: int = 0) -> str:
    return (
        "# TYPE vllm:prompt_tokens_by_source_total counter\n"
        f'vllm:prompt_tokens_by_source_total{{engine="0",model_name="m",source="external_kv_transfer"}} {external}.0\n'
        f'vllm:prompt_tokens_by_source_total{{engine="0",model_name="m",source="local_compute"}} {local}.0\n'
        f'vllm:prompt_tokens_by_source_total{{engine="0",model_name="m",source="local_cache_hit"}} 0.0\n'
        f'vllm:nixl_num_failed_transfers_total{{engine="0",model_name="m"}} {failed}.0\n'
        f'vllm:nixl_num_kv_expired_reqs_total{{engine="0",model_name="m"}} {expired}.0\n'
    )


def reading(r: str, d: str) -> dict:  # type: ignore[type-arg]
    return {"router-0": parse_router(r), "decode-0": parse_decoder(d)}


def test_effective_when_kv_arrives() -> None:
    before = reading(router(ok=10), decoder(1000, 10))
    after = reading(router(ok=30), decoder(3000, 30))
    v = judge(before, after)
    assert (v.status, v.reason) == ("True", "Effective")
    assert v.handoffs == 20 and v.failed == 0 and v.external_share == 2000 / 2020
    assert "20 of 20 hand-offs moved KV" in v.message and "99%" in v.message


def test_silent_recompute_is_a_failure() -> None:
    """Hand-offs 'succeed' (a degraded LMCache engine answers) but decoders load nothing."""
    before = reading(router(ok=10), decoder(1000, 10))
    after = reading(router(ok=20), decoder(1000, 1010))
    v = judge(before, after)
    assert (v.status, v.reason) == ("False", "TransferFailing")
    assert "loaded no prompt token by KV transfer" in v.message


def test_decode_only_fallback_with_its_rate() -> None:
    v = judge(
        reading(router(ok=5), decoder(500, 0)), reading(router(ok=6, fallback=9), decoder(600, 900))
    )
    assert (v.status, v.reason) == ("False", "DecodeOnlyFallback")
    assert "9 of 10 disaggregated requests (90%) were served decode-only" in v.message


def test_failures_broken_pairs_and_nixl_counters() -> None:
    v = judge(reading(router(), decoder(0, 0)), reading(router(ok=1, kv_timeout=4), decoder(10, 0)))
    assert v.reason == "TransferFailing" and "4 of 5 hand-offs failed (4 kv_timeout)" in v.message
    v = judge(
        reading(router(ok=1), decoder(10, 0)), reading(router(ok=2), decoder(20, 0, expired=3))
    )
    assert v.reason == "TransferFailing" and "3 expired KV leases" in v.message
    v = judge({}, reading(router(broken=True), decoder(0, 0)))
    assert v.reason == "TransferFailing" and "10.0.0.1:8000 -> 10.0.0.2:8000" in v.message


def test_no_traffic_is_unknown() -> None:
    same = reading(router(ok=3), decoder(30, 0))
    v = judge(same, same)
    assert (v.status, v.reason) == ("Unknown", "NoTraffic")


def test_a_restarted_pod_counts_from_zero() -> None:
    """Counters that went down belong to a new process: their whole value is in the window."""
    before = reading(router(ok=100), decoder(10_000, 0))
    after = reading(router(ok=4), decoder(400, 0))
    v = judge(before, after)
    assert v.reason == "Effective" and v.handoffs == 4


def test_small_failure_rates_are_tolerated() -> None:
    v = judge(
        reading(router(), decoder(0, 0)), reading(router(ok=95, kv_timeout=5), decoder(950, 0))
    )
    assert v.reason == "Effective"


def test_reads_after_an_expired_lease_on_the_prefiller_count_as_failures() -> None:
    """vLLM logs "Potentially invalid KV blocks ... retrieved by a decode worker" on the
    prefiller and counts it there; the decoder sees nothing wrong."""
    prefill = (
        "# TYPE vllm:nixl_num_notifications_after_expiry_total counter\n"
        'vllm:nixl_num_notifications_after_expiry_total{engine="0",model_name="m"} 7.0\n'
        'vllm:prompt_tokens_by_source_total{engine="0",model_name="m",source="local_compute"} 900.0\n'
    )
    before = {**reading(router(ok=1), decoder(10, 0)), "prefill-0": parse_prefill("")}
    after = {**reading(router(ok=9), decoder(90, 0)), "prefill-0": parse_prefill(prefill)}
    v = judge(before, after)
    assert v.reason == "TransferFailing" and "7 expired KV leases" in v.message
    assert v.external_share == 1.0  # the prefiller's own prompt tokens are not the decoders'
