"""From a broken transfer to what the user sees, with the real router and fake engines.

The fake engines reproduce each failure's real symptom (tests/fake_engine.py): a *degraded*
LMCache prefiller answers normally, /health 200, but never pushes KV nor notifies (LMCache's
"degraded mode"). The real router detects it, takes the pair out of rotation and serves
decode-only (``onPrefillFailure: decode-only``: no client error); the operator's pure chain
(``kvtruth.judge`` over the router's and decoders' /metrics, then ``compute_status`` and
``status_events``) turns it into ``KVTransferEffective=False`` with ``DecodeOnlyFallback``, a
Warning event and the operator metric; recovery flips it back.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tandem.api.conditions import get_condition
from tandem.api.v1alpha1 import InferenceServiceSpec, InferenceServiceStatus
from tandem.kvtruth import Reading, judge, parse_decoder, parse_router
from tandem.plan import Owner, plan_service
from tandem.reconcile import status as st
from tandem.reconcile.events import status_events
from tandem.reconcile.kvmonitor import export
from tandem.reconcile.metrics import OperatorMetrics
from tandem.router.pairs import PairState
from tests.conftest import make_spec
from tests.router.harness import Cluster, cluster, wait_pairs

PLAN = plan_service(InferenceServiceSpec.model_validate(make_spec()), Owner("svc", "ml", "u"))
PROMPT = {"model": "tiny", "prompt": "one two three four five six seven eight", "max_tokens": 4}


async def reading(c: Cluster) -> Reading:
    out = {"router": parse_router(await c.metrics_text())}
    for i, engine in enumerate(c.decode):
        async with c.http.get(engine.url + "/metrics") as resp:
            out[f"decode-{i}"] = parse_decoder(await resp.text())
    return out


async def traffic(c: Cluster, n: int) -> None:
    for _ in range(n):
        resp = await c.post("/v1/completions", PROMPT)
        assert resp.status == 200  # decode-only fallback: never a client error


def condition_after(previous: InferenceServiceStatus, verdict: Any) -> InferenceServiceStatus:
    observed = st.Observed(deployments={})
    acceptance = st.Acceptance(True, "Accepted", "ok")
    return st.compute_status(PLAN, 1, acceptance, observed, previous, st.utcnow(), None, verdict)


@pytest.mark.asyncio
async def test_degraded_transfer_becomes_a_visible_failure_and_recovers() -> None:
    metrics = OperatorMetrics()
    async with cluster(
        protocol="lmcache", on_prefill_failure="decode-only", kv_ready_timeout=0.3
    ) as c:
        start = await reading(c)
        await traffic(c, 5)
        healthy = await reading(c)
        v = judge(start, healthy)
        assert (v.status, v.reason) == ("True", "Effective"), v.message
        status = condition_after(InferenceServiceStatus(), v)

        # LMCache's degraded mode: the prefiller serves, /health 200, KV never moves.
        began = time.monotonic()
        c.prefill[0].faults.degraded = True
        await traffic(c, 12)
        await wait_pairs(c.router, PairState.BROKEN, 1)
        degraded = await reading(c)
        v = judge(healthy, degraded)
        assert time.monotonic() - began < 30
        assert (v.status, v.reason) == ("False", "DecodeOnlyFallback"), v.message
        assert "were served decode-only" in v.message and "pairs out of rotation" in v.message
        broken = condition_after(status, v)
        cond = get_condition(broken.conditions, "KVTransferEffective")
        assert cond is not None and (cond.status, cond.reason) == ("False", "DecodeOnlyFallback")
        events = status_events(status, broken)
        assert [(e.type, e.reason) for e in events] == [("Warning", "DecodeOnlyFallback")]
        export(metrics, PLAN, v)
        value = metrics.registry.get_sample_value(
            "tandem_kv_transfer_effective", {"namespace": "ml", "name": "svc"}
        )
        assert value == 0.0

        # The engine recovers: the router re-canaries the pair, traffic hands off again.
        c.prefill[0].faults.degraded = False
        await wait_pairs(c.router, PairState.VERIFIED, 1, timeout=20)
        await asyncio.sleep(0)
        await traffic(c, 10)
        v = judge(degraded, await reading(c))
        assert (v.status, v.reason) == ("True", "Effective"), v.message
        recovered = condition_after(broken, v)
        events = status_events(broken, recovered)
        assert [(e.type, e.reason) for e in events] == [("Normal", "Effective")]
