"""KVTransferEffective on the real control plane: the operator watches KV really move.

The operator (the session's ``tandem run``, KV monitor every 2 s), the real kube-apiserver and
the real router; the engines are the fake vLLM engines of tests/fake_engine.py, which reproduce
each failure's real symptom. They listen on the loopback pod IPs KWOK gave the InferenceService's
pods, port 8000 (the router's container port and the engine port), so the operator's KV
monitor reaches them exactly as it reaches real pods. A *degraded* prefiller (serving, /health
200, KV never handed off) must turn ``KVTransferEffective`` False within 30 s, with a Warning
event and the operator metric, while clients keep getting answers (``onPrefillFailure:
decode-only``); recovery must turn it back. With LMCache (its "degraded mode": no push, no
KV-ready notification) the router times out, takes the pair out of rotation and serves
decode-only: ``DecodeOnlyFallback``. With NIXL the decoder finds nothing to pull and silently
recomputes while every hand-off "succeeds": only the decoders' token counters tell, and the
condition says ``TransferFailing`` (they recomputed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from tests.fake_engine import FakeEngine, KvFabric
from tests.router.harness import make_config

from e2e import harness as h
from tandem.router.app import Router
from tandem.router.config import Connector

pytestmark = [pytest.mark.e2e]

NAME = "kvtruth"
PORT = 8000
PROMPT = {"model": NAME, "prompt": "one two three four five six seven eight", "max_tokens": 4}


CASES = {  # connector -> what the degraded prefiller must turn the condition into
    "lmcache": ("False", "DecodeOnlyFallback", "were served decode-only"),
    "nixl": ("False", "TransferFailing", "they recomputed"),
}
KV_READY_PORT = 7500


def manifest(namespace: str, connector: str) -> dict[str, Any]:
    return {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "model": {"uri": "hf://org/tiny"},
            "kvTransfer": {"connector": connector},
            "router": {"replicas": 1, "onPrefillFailure": "decode-only"},
        },
    }


def pod_ips(namespace: str) -> dict[str, str] | None:
    """Role -> the IP of its one Ready pod, once every role has one."""
    pods = h.kget("pods", namespace=namespace, selector=f"tandem.dev/instance={NAME}")["items"]
    ips = {}
    for p in pods:
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p.get("status", {}).get("conditions", [])
        )
        if ready and p["status"].get("podIP"):
            ips[p["metadata"]["labels"]["tandem.dev/role"]] = p["status"]["podIP"]
    return ips if set(ips) == {"prefill", "decode", "router"} else None


@contextlib.asynccontextmanager
async def data_plane(
    ips: dict[str, str], connector: str
) -> AsyncIterator[tuple[FakeEngine, Router]]:
    """Fake engines and the real router on the pods' addresses."""
    kv = KvFabric()
    async with contextlib.AsyncExitStack() as stack:
        engines = {}
        for role in ("prefill", "decode"):
            fake = FakeEngine(
                role=role, protocol=connector, model=NAME, kv=kv, host=ips[role], port=PORT
            )
            fake.proxy = f"{ips['router']}:{KV_READY_PORT}"  # LMCache: where KV-ready goes
            engines[role] = await stack.enter_async_context(fake)
        lmcache: dict[str, Any] = {}
        if connector == "lmcache":
            lmcache = {
                "decoder_init_ports": (7300,),
                "decoder_alloc_ports": (7400,),
                "kv_ready_port": KV_READY_PORT,
                "kv_ready_timeout": 1.0,
            }
        config = make_config(
            model=NAME,
            connector=Connector(connector),
            host=ips["router"],
            port=PORT,
            prefill_urls=(engines["prefill"].url,),
            decode_urls=(engines["decode"].url,),
            on_prefill_failure="decode-only",
            **lmcache,
        )
        router = await stack.enter_async_context(Router(config))
        yield engines["prefill"], router


async def kv_condition(namespace: str, want: tuple[str, str], timeout: float) -> float:
    """Seconds until KVTransferEffective shows ``want`` (status, reason)."""
    began = time.monotonic()

    def shows() -> bool:
        c = h.condition(h.isvc(NAME, namespace), "KVTransferEffective")
        return c is not None and (c["status"], c["reason"]) == want

    try:
        await asyncio.to_thread(h.wait_for, shows, timeout, 0.5, f"KVTransferEffective {want}")
    except TimeoutError as e:
        now = h.condition(h.isvc(NAME, namespace), "KVTransferEffective")
        raise TimeoutError(f"{e}; now: {now}") from None
    return time.monotonic() - began


async def traffic(router: Router, stop: asyncio.Event, errors: list[int]) -> None:
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            async with http.post(router.url + "/v1/completions", json=PROMPT) as resp:
                await resp.read()
                if resp.status != 200:
                    errors.append(resp.status)
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("connector", sorted(CASES))
async def test_kv_transfer_effective_follows_the_data_plane(
    operator: h.OperatorProcess, namespace: str, connector: str
) -> None:
    status, reason, words = CASES[connector]
    await asyncio.to_thread(h.apply, manifest(namespace, connector), namespace)
    ips = await asyncio.to_thread(h.wait_for, lambda: pod_ips(namespace), 120, 1.0, "pod IPs")
    async with data_plane(ips, connector) as (prefill, router):
        stop, errors = asyncio.Event(), []
        load = asyncio.create_task(traffic(router, stop, errors))
        try:
            await kv_condition(namespace, ("True", "Effective"), timeout=60)

            prefill.faults.degraded = True  # serving, /health 200, no KV handed off
            took = await kv_condition(namespace, (status, reason), timeout=30)
            assert took < 30
            warnings = h.kget("events", namespace=namespace)["items"]
            assert any(
                e["type"] == "Warning" and e["reason"] == reason
                and e["involvedObject"]["name"] == NAME
                for e in warnings
            ), [e["reason"] for e in warnings]  # fmt: skip
            gauge = [
                line
                for line in operator.metrics().splitlines()
                if line.startswith("tandem_kv_transfer_effective{")
                and f'namespace="{namespace}"' in line
                and f'name="{NAME}"' in line
            ]
            assert gauge and gauge[0].endswith(" 0.0"), gauge
            message = h.condition(h.isvc(NAME, namespace), "KVTransferEffective")["message"]  # type: ignore[index]
            assert words in message, message

            prefill.faults.degraded = False
            await kv_condition(namespace, ("True", "Effective"), timeout=60)
        finally:
            stop.set()
            await load
        assert errors == [], f"clients got errors: {errors}"
