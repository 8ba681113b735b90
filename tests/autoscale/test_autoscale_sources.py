"""Metric sources against real HTTP servers on loopback: vLLM-format pods and a fake Prometheus.

Each "pod" is its own loopback address (127.0.0.2, 127.0.0.3, ...) on one shared port, exactly
as pod IPs share the engine port in a cluster.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from vllm_metrics import engine_text, router_text

from tandem.autoscale.config import PrometheusSettings, ScrapeSettings
from tandem.autoscale.parse import MetricsFormatError, engine_gauges
from tandem.autoscale.sources import (
    PodRef,
    PoolTarget,
    PrometheusSource,
    ScrapeSource,
    make_source,
    pod_regex,
    queries,
)

pytestmark = pytest.mark.timeout(10)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FIXED_NOW = 1_700_000_000.0


class Pods:
    """One aiohttp app answering on several loopback addresses, one handler per address."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.port = 0
        self.runner: web.AppRunner | None = None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        return await self.handlers[sock[0]](request)

    async def start(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._dispatch)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        first, *rest = handlers
        site = web.TCPSite(self.runner, first, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        for ip in rest:
            await web.TCPSite(self.runner, ip, self.port).start()


@pytest.fixture
async def pods() -> AsyncIterator[Pods]:
    p = Pods()
    yield p
    if p.runner:
        await p.runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def text(body: str, status: int = 200) -> Handler:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(text=body, status=status, content_type="text/plain")

    return handler


def slow(seconds: float) -> Handler:
    async def handler(_: web.Request) -> web.Response:
        await asyncio.sleep(seconds)
        return web.Response(text=engine_text([(0, 0, 0)]))

    return handler


def target(role: str, ips: list[str], routers: list[str] = ()) -> PoolTarget:  # type: ignore[assignment]
    return PoolTarget(
        namespace="ml",
        name="llama",
        role=role,  # type: ignore[arg-type]
        pods=tuple(PodRef(f"pod-{ip}", ip) for ip in ips),
        routers=tuple(PodRef(f"router-{ip}", ip) for ip in routers),
    )


def scrape(session: aiohttp.ClientSession, port: int, timeout: float = 0.5) -> ScrapeSource:
    return ScrapeSource(
        session,
        ScrapeSettings(port=port, timeout_s=timeout),
        router_port=port,
        clock=lambda: FIXED_NOW,
    )


# ------------------------------------------------------------------------------- parsing


def test_parse_sums_engines_and_averages_kv() -> None:
    g = engine_gauges(engine_text([(3, 10, 0.5), (1, 6, 0.7)], deferred=2, completed=(30, 5)))
    assert (g.waiting, g.running, g.deferred, g.completed) == (4, 16, 2, 35)
    assert g.kv_usage == pytest.approx(0.6)


@pytest.mark.parametrize(
    "body",
    [
        "<html>not metrics</html>",
        "# TYPE something_else gauge\nsomething_else 1\n",  # a pod that is not vLLM
    ],
)
def test_parse_rejects_text_without_vllm_gauges(body: str) -> None:
    with pytest.raises(MetricsFormatError):
        engine_gauges(body)


# -------------------------------------------------------------------------------- scrape


async def test_scrape_reads_every_pod_and_the_routers(
    pods: Pods, session: aiohttp.ClientSession
) -> None:
    await pods.start(
        {
            "127.0.0.2": text(engine_text([(5, 8, 0.25)])),
            "127.0.0.3": text(engine_text([(2, 7, 0.5), (1, 9, 0.75)], deferred=1)),
            "127.0.0.4": text(router_text(prefill=7, decode=3)),
            "127.0.0.5": text(router_text(prefill=5)),
        }
    )
    src = scrape(session, pods.port)
    o = await src.observe(target("prefill", ["127.0.0.2", "127.0.0.3"], ["127.0.0.4", "127.0.0.5"]))
    assert o.error is None and o.failures == ()
    assert (o.pods_reporting, o.waiting, o.running, o.deferred) == (2, 8, 24, 1)
    assert o.kv_usage_mean == pytest.approx((0.25 + 0.625) / 2)
    assert o.router_pending == 12  # prefill only: the decode queue is not prefill work
    assert o.sampled_at == FIXED_NOW
    assert {p.pod for p in o.pods} == {"pod-127.0.0.2", "pod-127.0.0.3"}


async def test_decode_pool_does_not_scrape_routers(
    pods: Pods, session: aiohttp.ClientSession
) -> None:
    await pods.start({"127.0.0.2": text(engine_text([(1, 2, 0.1)]))})
    o = await scrape(session, pods.port).observe(target("decode", ["127.0.0.2"], ["127.0.0.9"]))
    assert o.failures == () and o.router_pending == 0


async def test_one_slow_and_one_broken_pod_are_failures_not_exceptions(
    pods: Pods, session: aiohttp.ClientSession
) -> None:
    await pods.start(
        {
            "127.0.0.2": text(engine_text([(4, 4, 0.5)])),
            "127.0.0.3": slow(0.6),
            "127.0.0.4": text("oops", status=500),
            "127.0.0.5": text("<html>login</html>"),
        }
    )
    o = await scrape(session, pods.port, timeout=0.3).observe(
        target("decode", ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"])
    )
    assert o.error is None
    assert o.pods_reporting == 1
    failures = "\n".join(o.failures)
    assert "pod-127.0.0.3 (127.0.0.3): timed out after 0.3s" in failures
    assert "500" in failures
    assert "pod-127.0.0.5 (127.0.0.5): MetricsFormatError" in failures


async def test_all_pods_failing_is_a_missing_observation(
    pods: Pods, session: aiohttp.ClientSession
) -> None:
    await pods.start({"127.0.0.2": text("nope", status=503)})
    # 127.0.0.3 has no listener at all: connection refused.
    o = await scrape(session, pods.port).observe(target("prefill", ["127.0.0.2", "127.0.0.3"]))
    assert o.error is not None and o.error.startswith("all 2 pods failed")
    assert o.pods == ()


async def test_unreachable_router_is_a_failure_and_engines_still_count(
    pods: Pods, session: aiohttp.ClientSession
) -> None:
    await pods.start({"127.0.0.2": text(engine_text([(1, 1, 0.1)]))})
    o = await scrape(session, pods.port).observe(target("prefill", ["127.0.0.2"], ["127.0.0.7"]))
    assert o.pods_reporting == 1
    assert len(o.failures) == 1 and o.failures[0].startswith("router router-127.0.0.7")


# ---------------------------------------------------------------------------- prometheus


class FakePrometheus:
    """Answers /api/v1/query from canned vectors chosen by the metric named in the query."""

    def __init__(self, vectors: dict[str, list[tuple[dict[str, str], float]]]) -> None:
        self.vectors = vectors
        self.seen: list[str] = []
        self.fail_with: str | None = None

    async def handler(self, request: web.Request) -> web.Response:
        assert request.path == "/prom/api/v1/query"
        query = parse_qs(request.query_string)["query"][0]
        self.seen.append(query)
        if self.fail_with:
            body = {"status": "error", "errorType": "bad_data", "error": self.fail_with}
            return web.json_response(body, status=400)
        key = next((k for k in self.vectors if k in query), None)
        if key is None:
            return web.Response(status=500, text="no such series")
        result = [{"metric": m, "value": [FIXED_NOW, str(v)]} for m, v in self.vectors[key]]
        return web.json_response(
            {"status": "success", "data": {"resultType": "vector", "result": result}}
        )


def prom_vectors(fresh: float) -> dict[str, list[tuple[dict[str, str], float]]]:
    a, b = {"pod": "llama-prefill-7d9f8b6c4-x2x9q"}, {"pod": "llama-prefill-7d9f8b6c4-zz5kp"}
    # Keys are matched in order against the query text, so the most specific comes first.
    return {
        "timestamp(": [({}, fresh)],
        "waiting_by_reason": [(a, 2.0)],
        "num_requests_waiting": [(a, 6.0), (b, 3.0)],
        "num_requests_running": [(a, 8.0), (b, 8.0)],
        "kv_cache_usage_perc": [(a, 0.5), (b, 0.3)],
        "request_success_total": [(a, 120.0), (b, 80.0)],
        "tandem_router_queue_depth": [({}, 11.0)],
    }


async def start_prom(pods: Pods, fake: FakePrometheus) -> PrometheusSettings:
    await pods.start({"127.0.0.2": fake.handler})
    return PrometheusSettings(url=f"http://127.0.0.2:{pods.port}/prom/", timeout_s=1)


async def test_prometheus_source_builds_the_same_observation(
    pods: Pods, session: aiohttp.ClientSession
) -> None:
    fake = FakePrometheus(prom_vectors(fresh=FIXED_NOW - 12))
    src = PrometheusSource(session, await start_prom(pods, fake))
    o = await src.observe(target("prefill", []))
    assert o.error is None and o.failures == ()
    assert (o.pods_reporting, o.waiting, o.running, o.deferred) == (2, 9, 16, 2)
    assert o.kv_usage_mean == pytest.approx(0.4)
    assert o.router_pending == 11
    assert [p.completed for p in o.pods] == [120, 80]
    assert o.sampled_at == FIXED_NOW - 12  # the scrape time, not the evaluation time
    waiting_q = next(
        q for q in fake.seen if q.startswith("sum by (pod) (vllm:num_requests_waiting{")
    )
    assert 'namespace="ml"' in waiting_q and f'pod=~"{pod_regex("llama", "prefill")}"' in waiting_q


async def test_prometheus_partial_failure_is_listed_and_the_rest_used(
    pods: Pods, session: aiohttp.ClientSession
) -> None:
    vectors = prom_vectors(fresh=FIXED_NOW)
    del vectors["kv_cache_usage_perc"]  # the fake then answers 500 to the KV query
    o = await PrometheusSource(session, await start_prom(pods, FakePrometheus(vectors))).observe(
        target("decode", [])
    )
    assert o.error is None and o.pods_reporting == 2
    assert len(o.failures) == 1 and "kv_cache_usage_perc" in o.failures[0]
    assert o.kv_usage_mean is None


async def test_prometheus_error_answer_is_a_missing_observation(
    pods: Pods, session: aiohttp.ClientSession
) -> None:
    fake = FakePrometheus(prom_vectors(fresh=FIXED_NOW))
    fake.fail_with = "parse error at char 5"
    o = await PrometheusSource(session, await start_prom(pods, fake)).observe(target("decode", []))
    assert o.error is not None and "parse error at char 5" in o.error


async def test_prometheus_unreachable_is_a_missing_observation(
    session: aiohttp.ClientSession,
) -> None:
    src = make_source(PrometheusSettings(url="http://127.0.0.9:1", timeout_s=0.5), session)
    o = await src.observe(target("decode", []))
    assert o.error is not None and o.pods == ()


def test_overrides_expand_placeholders_and_decode_skips_the_router() -> None:
    s = PrometheusSettings(
        url="http://p",
        query_waiting='sum by (pod) (my_waiting{ns="{namespace}",pod=~"{pool}",r="{role}"})',
    )
    q = queries(s, "ml", "llama", "decode")
    assert q["waiting"] == (
        f'sum by (pod) (my_waiting{{ns="ml",pod=~"{pod_regex("llama", "decode")}",r="decode"}})'
    )
    assert q["fresh"] == f"min(timestamp({q['waiting']}))"
    assert "router" not in q


@pytest.mark.parametrize(
    ("pod", "matches"),
    [
        ("llama-prefill-7d9f8b6c4-x2x9q", True),  # Deployment pod
        ("llama-prefill-0", True),  # LeaderWorkerSet leader
        ("llama-prefill-0-1", True),  # LeaderWorkerSet worker
        ("llama-decode-7d9f8b6c4-x2x9q", False),  # the other pool
        ("llama-prefill-foo-prefill-7d9f8b6c4-x2x9q", False),  # instance "llama-prefill-foo"
        ("llama-router-5c6d7-abcde", False),
    ],
)
def test_pod_regex_selects_only_this_pool(pod: str, matches: bool) -> None:
    assert (re.fullmatch(pod_regex("llama", "prefill"), pod) is not None) is matches


# ------------------------------------------------------------------- source + actuator


async def test_autoscaler_scrapes_real_pods_and_scales(
    pods: Pods, session: aiohttp.ClientSession
) -> None:
    """The whole loop on loopback: vLLM-format text in, one scale call out."""
    from prometheus_client import CollectorRegistry

    from tandem.autoscale.actuator import Autoscaler
    from tandem.autoscale.config import AutoscalerConfig, PolicyConfig, PoolPolicy
    from tandem.autoscale.metrics import AutoscalerMetrics
    from tandem.autoscale.policy import PoolState

    await pods.start(
        {
            "127.0.0.2": text(engine_text([(20, 4, 0.3)])),  # prefill: 24 in flight
            "127.0.0.3": text(engine_text([(1, 4, 0.3)])),  # decode: calm
            "127.0.0.4": text(router_text(prefill=8)),
        }
    )
    ips = {"prefill": ["127.0.0.2"], "decode": ["127.0.0.3"]}
    scaled: list[tuple[str, int]] = []

    class Hooks:
        async def read_pool(self, role: str) -> PoolState:
            return PoolState(1, 1)

        async def list_pods(self, role: str) -> list[PodRef]:
            return [PodRef(f"{role}-0", ip) for ip in ips[role]]

        async def list_routers(self) -> list[PodRef]:
            return [PodRef("router-0", "127.0.0.4")]

        async def scale(self, role: str, n: int) -> None:
            scaled.append((role, n))

        async def set_deletion_costs(self, role: str, costs: object) -> None:
            return None

    wide = PolicyConfig(prefill=PoolPolicy(max_replicas=8), ratio_min=0.01, ratio_max=100)
    scaler = Autoscaler(
        namespace="ml",
        name="llama",
        config=AutoscalerConfig(policy=wide),
        source=scrape(session, pods.port),
        hooks=Hooks(),  # type: ignore[arg-type]
        metrics=AutoscalerMetrics(CollectorRegistry()),
    )
    report = await scaler.tick(FIXED_NOW)
    # 20 waiting + 8 at the router + 4 running over (4 batch + 4 target) per replica: 4.
    assert scaled == [("prefill", 4)]
    assert report.observations["prefill"].router_pending == 8
