"""The KV monitor's reading (ready pods' /metrics) and how its verdict reaches status."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tandem.api.conditions import get_condition
from tandem.api.v1alpha1 import InferenceServiceSpec, InferenceServiceStatus
from tandem.kvtruth import KvVerdict, KvVerdicts
from tandem.plan import Owner, plan_service
from tandem.reconcile import status as st
from tandem.reconcile.kvmonitor import read
from tests.fake_engine import FakeEngine
from tests.memory_kube import MemoryKube


def pod(name: str, role: str, ip: str, ready: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"tandem.dev/instance": "svc", "tandem.dev/role": role},
        },
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


@pytest.mark.asyncio
async def test_reading_covers_ready_decoders_that_answer() -> None:
    async with FakeEngine(role="decode", protocol="nixl", model="m") as engine:
        engine.metrics.prompt_tokens_by_source["external_kv_transfer"] = 120
        port = int(engine.url.rsplit(":", 1)[1])
        spec = InferenceServiceSpec.model_validate(
            {
                "model": {"uri": "hf://o/m"},
                "kvTransfer": {"connector": "nixl"},
                "engine": {"port": port},
            }
        )
        plan = plan_service(spec, Owner("svc", "ml", "u"))
        kube = MemoryKube()
        kube.put(pod("svc-decode-a", "decode", "127.0.0.1"))
        kube.put(pod("svc-decode-b", "decode", "127.0.0.1", ready=False))  # not read
        kube.put(pod("svc-router-a", "router", "127.0.0.2"))  # nothing listens: left out
        async with aiohttp.ClientSession() as session:
            reading = await read(kube, session, plan)  # type: ignore[arg-type]
    assert list(reading) == ["svc-decode-a"]
    assert reading["svc-decode-a"].tokens["external_kv_transfer"] == 120


def test_store_reports_only_changes_of_the_condition() -> None:
    store = KvVerdicts()
    ok = KvVerdict("True", "Effective", "5 of 5 hand-offs moved KV")
    assert store.record("ml", "svc", ok) is True
    assert store.record("ml", "svc", KvVerdict("True", "Effective", "7 of 7")) is False
    assert store.get("ml", "svc") == ok  # the message of the window that changed it
    assert store.record("ml", "svc", KvVerdict("Unknown", "NoTraffic", "idle")) is True
    store.forget("ml", "svc")
    assert store.get("ml", "svc") is None


def test_status_keeps_the_stored_condition_without_a_verdict() -> None:
    plan = plan_service(
        InferenceServiceSpec.model_validate({"model": {"uri": "hf://o/m"}}), Owner("svc", "ml", "u")
    )
    acceptance = st.Acceptance(True, "Accepted", "ok")
    observed = st.Observed(deployments={})
    first = st.compute_status(
        plan, 1, acceptance, observed, InferenceServiceStatus(), "t0", None,
        KvVerdict("False", "TransferFailing", "3 of 3 hand-offs failed"),
    )  # fmt: skip
    # The operator restarted: no verdict yet, the stored condition stays as it was.
    again = st.compute_status(plan, 1, acceptance, observed, first, "t1")
    cond = get_condition(again.conditions, "KVTransferEffective")
    assert cond is not None and (cond.reason, cond.last_transition_time) == (
        "TransferFailing",
        "t0",
    )
