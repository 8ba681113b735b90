"""The router's own endpoints (/health, /v1/models, /metrics) and its command line."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tandem.api.vocabulary import Role
from tandem.router.main import router_command
from tests.router.harness import MODEL, cluster, wait_ready

pytestmark = pytest.mark.timeout(20)

REPO = Path(__file__).resolve().parents[2]
CONTRACT_FLAGS = [
    "--host", "--port", "--model", "--connector", "--policy", "--min-prompt-tokens",
    "--on-prefill-failure", "--request-timeout", "--max-inflight-per-engine",
    "--metrics-refresh-seconds", "--health-interval", "--namespace", "--prefill-service",
    "--decode-service", "--engine-port", "--prefill", "--decode", "--kv-ready-port",
    "--advertise-host", "--decoder-init-ports", "--decoder-alloc-ports",
]  # fmt: skip


async def test_models_lists_the_served_model() -> None:
    async with cluster() as c:
        async with c.http.get(c.url + "/v1/models") as resp:
            data = await resp.json()
        assert data["object"] == "list"
        assert [m["id"] for m in data["data"]] == [MODEL]


async def test_health_needs_a_healthy_prefill_and_decode_engine() -> None:
    async with cluster(health_interval=0.05) as c:
        async with c.http.get(c.url + "/health") as resp:
            assert resp.status == 200
            assert (await resp.json())["healthy_endpoints"] == {"prefill": 1, "decode": 1}
        c.prefill[0].faults.health_status = 503  # vLLM's EngineDeadError answer
        await c.prefill[0].wait_for(lambda: c.router.pools[Role.PREFILL].healthy_count == 0)
        async with c.http.get(c.url + "/health") as resp:
            assert resp.status == 503
            body = await resp.json()
        assert body["reason"] == "no healthy prefill endpoint"
        c.decode[0].faults.health_status = 500
        await c.decode[0].wait_for(lambda: c.router.pools[Role.DECODE].healthy_count == 0)
        async with c.http.get(c.url + "/health") as resp:
            assert (await resp.json())["reason"] == (
                "no healthy prefill and no healthy decode endpoint"
            )
        c.prefill[0].faults.health_status = c.decode[0].faults.health_status = 200
        await wait_ready(c.http, c.url)


async def test_health_is_503_before_any_probe_succeeds() -> None:
    async with cluster(wait=False, health_interval=0.05) as c:
        c.decode[0].faults.health_status = 503
        await asyncio.sleep(0.1)
        async with c.http.get(c.url + "/health") as resp:
            assert resp.status == 503
            assert (await resp.json())["reason"] == "no healthy decode endpoint"


async def test_metrics_expose_every_documented_family() -> None:
    async with cluster() as c:
        body = {"model": MODEL, "prompt": "x" * 100, "max_tokens": 2, "stream": True}
        assert (await c.post("/v1/completions", body)).status == 200
        async with c.http.get(c.url + "/metrics") as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
        for needle in [
            'tandem_router_requests_total{outcome="success",route="disaggregated"} 1.0',
            "tandem_router_handoff_seconds_count 1.0",
            "tandem_router_ttft_seconds_count 1.0",
            "tandem_router_e2e_seconds_count 1.0",
            f'tandem_router_inflight{{endpoint="{c.decode[0].url}",role="decode"}} 0.0',
            'tandem_router_queue_depth{role="prefill"} 0.0',
            'tandem_router_queue_depth{role="decode"} 0.0',
            'tandem_router_endpoints{role="prefill",state="healthy"} 1.0',
            'tandem_router_endpoints{role="decode",state="unhealthy"} 0.0',
            "# TYPE tandem_router_prefill_fallbacks_total counter",
        ]:
            assert needle in text, needle


async def test_two_routers_keep_separate_registries() -> None:
    async with cluster(replicas=2) as c:
        body = {"model": MODEL, "prompt": "x" * 100, "max_tokens": 1}
        async with c.http.post(c.routers[0].url + "/v1/completions", json=body) as resp:
            assert resp.status == 200
        assert "tandem_router_e2e_seconds_count 1.0" in await c.metrics_text(c.routers[0])
        assert "tandem_router_e2e_seconds_count 0.0" in await c.metrics_text(c.routers[1])


def test_cli_offers_every_contract_flag() -> None:
    result = CliRunner().invoke(router_command, ["--help"])
    assert result.exit_code == 0
    for flag in CONTRACT_FLAGS:
        assert flag in result.output, flag


def test_cli_rejects_contradictory_flags() -> None:
    result = CliRunner().invoke(router_command, ["--model", "m", "--prefill", "http://p:1"])
    assert result.exit_code == 2
    assert "--decode" in result.output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_python_dash_m_runs_a_router_until_sigterm() -> None:
    async with cluster(wait=False) as c:
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
        args = ["--host", "127.0.0.1", "--port", str(port), "--model", MODEL, "--connector", "nixl"]
        args += ["--health-interval", "0.2", "--prefill", c.prefill[0].url]
        args += ["--decode", c.decode[0].url]
        proc = subprocess.Popen(
            [sys.executable, "-m", "tandem.router", *args],
            env=env,
            stderr=subprocess.PIPE,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    await wait_ready(c.http, url, timeout=0.1)
                    break
                except (OSError, TimeoutError):
                    await asyncio.sleep(0.05)
            body = {"model": MODEL, "prompt": "x" * 100, "max_tokens": 2}
            async with c.http.post(url + "/v1/completions", json=body) as resp:
                assert resp.status == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.to_thread(proc.communicate, timeout=10)
        assert proc.returncode == 0, err.decode()
        assert b"Started router" in err


async def test_a_router_bug_still_answers_json_and_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    from tandem.router.dispatch import Dispatcher

    async def broken(self: Dispatcher, *_: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(Dispatcher, "handle", broken)
    async with cluster() as c:
        body = {"model": MODEL, "prompt": "x", "max_tokens": 1}
        async with c.http.post(c.url + "/v1/completions", json=body) as resp:
            assert resp.status == 500
            assert (await resp.json())["error"]["type"] == "internal_error"
        assert 'outcome="internal_error"' in await c.metrics_text()


async def test_a_down_engine_is_back_within_about_a_second() -> None:
    async with cluster(health_interval=30) as c:
        pool = c.router.pools[Role.DECODE]
        pool.set_health(c.decode[0].url, False)  # e.g. a refused connection a moment ago
        assert pool.healthy_count == 0
        await c.decode[0].wait_for(lambda: pool.healthy_count == 1, timeout=3)


def test_nixl_router_needs_neither_zmq_nor_the_kubernetes_client() -> None:
    code = (
        "import sys, tandem.router.app, tandem.router.main; "
        "bad = [m for m in ('zmq', 'msgpack', 'kubernetes') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)
