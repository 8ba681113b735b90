"""Metric sources: where a tick's queue numbers come from. Errors come back as values.

Two sources return the same :class:`~tandem.autoscale.observation.PoolObservation`:

- :class:`ScrapeSource` (default, nothing to install): GET every ready engine pod's
  ``/metrics`` concurrently, plus the routers' ``tandem_router_queue_depth{role="prefill"}``
  for the prefill pool. A pod that times out or answers garbage is listed in ``failures`` and the
  rest is still used; the policy then holds instead of scaling down.
- :class:`PrometheusSource`: PromQL against ``/api/v1/query``. The default queries select the
  pool's pods by namespace and pod name (``<name>-<role>-<replicaset hash>-<suffix>`` for a
  Deployment, ``<name>-<role>-<group>[-<worker>]`` for a LeaderWorkerSet), because the
  ``namespace`` and ``pod`` target labels exist in every common Kubernetes scrape setup (the
  Prometheus Operator's PodMonitor, kubernetes_sd relabelling) while pod labels such as
  ``tandem.dev/role`` are only there if someone relabels them in. Freshness is read with
  ``timestamp()``, so a series Prometheus still returns after its pod stopped being scraped is
  seen as stale instead of as a quiet pool.

Neither ever raises to the caller (a source error must not kill the operator's timer); anything
unexpected becomes an observation marked missing with the error text.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from tandem.api.vocabulary import Role
from tandem.autoscale.config import PrometheusSettings, ScrapeSettings
from tandem.autoscale.observation import PodSample, PoolObservation, missing, observe
from tandem.autoscale.parse import engine_gauges, router_pending

Clock = Callable[[], float]


@dataclass(frozen=True)
class PodRef:
    """A ready pod: its name (for status, deletion cost) and its IP (for scraping)."""

    name: str
    ip: str


@dataclass(frozen=True)
class PoolTarget:
    """What to observe: one pool of one InferenceService."""

    namespace: str
    name: str
    role: Role
    pods: tuple[PodRef, ...] = ()
    routers: tuple[PodRef, ...] = ()


class MetricSource(Protocol):
    """Anything that can observe a pool; ``kind`` labels source-error metrics."""

    kind: str

    async def observe(self, target: PoolTarget) -> PoolObservation: ...


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"timed out after {timeout:g}s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _url(ip: str, port: int, path: str) -> str:
    host = f"[{ip}]" if ":" in ip else ip  # IPv6 pod IPs need brackets
    return f"http://{host}:{port}{path}"


async def _get_text(session: aiohttp.ClientSession, url: str, timeout: float) -> str:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        if resp.status != 200:
            raise aiohttp.ClientResponseError(
                resp.request_info, (), status=resp.status, message=resp.reason or ""
            )
        return await resp.text()


async def scrape_pods(
    session: aiohttp.ClientSession,
    pods: Sequence[PodRef],
    *,
    port: int = 8000,
    path: str = "/metrics",
    timeout: float = 2.0,
) -> tuple[list[PodSample], list[str]]:
    """Each pod's vLLM queue gauges, concurrently; returns (samples, per-pod errors)."""

    async def one(pod: PodRef) -> PodSample | str:
        try:
            g = engine_gauges(await _get_text(session, _url(pod.ip, port, path), timeout))
        except Exception as exc:  # any failure of one pod is that pod's failure
            return f"{pod.name} ({pod.ip}): {_describe(exc, timeout)}"
        return PodSample(pod.name, g.waiting, g.running, g.kv_usage, g.deferred, g.completed)

    results = await asyncio.gather(*(one(p) for p in pods))
    return (
        [r for r in results if isinstance(r, PodSample)],
        [r for r in results if isinstance(r, str)],
    )


async def scrape_router_pending(
    session: aiohttp.ClientSession,
    routers: Sequence[PodRef],
    *,
    port: int = 8000,
    path: str = "/metrics",
    timeout: float = 2.0,
    role: str = "prefill",
) -> tuple[float, list[str]]:
    """Sum of ``tandem_router_queue_depth{role=...}`` over router pods, plus per-pod errors."""

    async def one(pod: PodRef) -> float | str:
        try:
            return router_pending(await _get_text(session, _url(pod.ip, port, path), timeout), role)
        except Exception as exc:
            return f"router {pod.name} ({pod.ip}): {_describe(exc, timeout)}"

    results = await asyncio.gather(*(one(p) for p in routers))
    return (
        sum(r for r in results if isinstance(r, float)),
        [r for r in results if isinstance(r, str)],
    )


class ScrapeSource:
    """Direct scrape of the pool's ready pods (``spec.autoscaling.source.type: scrape``)."""

    kind = "scrape"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: ScrapeSettings,
        *,
        router_port: int = 8000,
        router_path: str = "/metrics",
        clock: Clock = time.time,
    ) -> None:
        self._session, self._settings, self._clock = session, settings, clock
        self._router_port, self._router_path = router_port, router_path

    async def observe(self, target: PoolTarget) -> PoolObservation:
        started = self._clock()  # the samples are at least this fresh
        s = self._settings
        try:
            (samples, failures), (pending, router_failures) = await asyncio.gather(
                scrape_pods(
                    self._session, target.pods, port=s.port, path=s.path, timeout=s.timeout_s
                ),
                scrape_router_pending(
                    self._session,
                    target.routers if target.role == "prefill" else (),
                    port=self._router_port,
                    path=self._router_path,
                    timeout=s.timeout_s,
                ),
            )
        except Exception as exc:  # defensive: the helpers already turn errors into values
            return missing(target.role, _describe(exc, s.timeout_s))
        if target.pods and not samples:
            first = failures[0] if failures else "no answer"
            return missing(target.role, f"all {len(target.pods)} pods failed; {first}")
        return observe(
            target.role,
            samples,
            started,
            router_pending=pending,
            failures=[*failures, *router_failures],
        )


def pod_regex(name: str, role: str) -> str:
    """RE2 matching the pod names of ``<name>-<role>`` (Deployment or LeaderWorkerSet).

    Anchored by PromQL, and strict about the suffix so that another InferenceService named
    ``<name>-<role>-x`` does not match. Dots (legal in custom resource names) become ``[.]``
    so the string needs no backslash escaping inside a PromQL string literal.
    """
    base = f"{name}-{role}".replace(".", "[.]")
    return f"{base}-([a-z0-9]{{1,10}}-[a-z0-9]{{5}}|[0-9]+(-[0-9]+)?)"


def default_queries(namespace: str, name: str, role: Role) -> dict[str, str]:
    sel = f'namespace="{namespace}",pod=~"{pod_regex(name, role)}"'
    return {
        "waiting": f"sum by (pod) (vllm:num_requests_waiting{{{sel}}})",
        "running": f"sum by (pod) (vllm:num_requests_running{{{sel}}})",
        "kv": f"avg by (pod) (vllm:kv_cache_usage_perc{{{sel}}})",
        "deferred": (
            f'sum by (pod) (vllm:num_requests_waiting_by_reason{{{sel},reason="deferred"}})'
        ),
        "completed": f"sum by (pod) (vllm:request_success_total{{{sel}}})",
        "fresh": f"min(timestamp(vllm:num_requests_waiting{{{sel}}}))",
        "router": (
            f'sum(tandem_router_queue_depth{{namespace="{namespace}",'
            f'pod=~"{pod_regex(name, "router")}",role="prefill"}})'
        ),
    }


def _expand(query: str, namespace: str, name: str, role: Role) -> str:
    values = {"namespace": namespace, "name": name, "role": role, "pool": pod_regex(name, role)}
    for key, value in values.items():
        query = query.replace("{" + key + "}", value)
    return query


def queries(settings: PrometheusSettings, namespace: str, name: str, role: Role) -> dict[str, str]:
    """The PromQL to run for one pool: defaults, with the spec's overrides expanded."""
    out = default_queries(namespace, name, role)
    overrides = {
        "waiting": settings.query_waiting,
        "running": settings.query_running,
        "kv": settings.query_kv_usage,
    }
    for key, query in overrides.items():
        if query:
            out[key] = _expand(query, namespace, name, role)
    if settings.query_waiting:
        # timestamp() of an aggregate is the evaluation time: freshness then cannot be checked.
        out["fresh"] = f"min(timestamp({out['waiting']}))"
    if role != "prefill":
        del out["router"]
    return out


Series = list[tuple[Mapping[str, str], float]]


def parse_query_result(body: Any) -> Series:
    """``/api/v1/query`` JSON -> [(labels, value)]; raises ValueError on an error answer."""
    if not isinstance(body, dict) or body.get("status") != "success":
        err = body.get("error", "no status") if isinstance(body, dict) else "not an object"
        raise ValueError(f"query failed: {err}")
    data = body.get("data") or {}
    rtype, result = data.get("resultType"), data.get("result")
    if rtype == "scalar":
        result = [{"metric": {}, "value": result}]
    elif rtype != "vector":
        raise ValueError(f"unexpected resultType {rtype!r}")
    out: Series = []
    for item in result or []:
        value = float(item["value"][1])
        if not math.isnan(value):
            out.append((item.get("metric") or {}, value))
    return out


class PrometheusSource:
    """PromQL against Prometheus (``spec.autoscaling.source.type: prometheus``)."""

    kind = "prometheus"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: PrometheusSettings,
        *,
        clock: Clock = time.time,
    ) -> None:
        self._session, self._settings, self._clock = session, settings, clock
        self._endpoint = settings.url.rstrip("/") + "/api/v1/query"

    async def _query(self, promql: str) -> Series | str:
        t = self._settings.timeout_s
        try:
            async with self._session.get(
                self._endpoint,
                params={"query": promql},
                timeout=aiohttp.ClientTimeout(total=t),
            ) as resp:
                body = await resp.json(content_type=None)
            return parse_query_result(body)
        except Exception as exc:
            return f"{promql}: {_describe(exc, t)}"

    async def observe(self, target: PoolTarget) -> PoolObservation:
        role = target.role
        try:
            q = queries(self._settings, target.namespace, target.name, role)
            keys = list(q)
            results = await asyncio.gather(*(self._query(q[k]) for k in keys))
            answers = dict(zip(keys, results, strict=True))
            return self._combine(role, answers)
        except Exception as exc:  # defensive: _query already turns errors into values
            return missing(role, _describe(exc, self._settings.timeout_s))

    def _combine(self, role: Role, answers: Mapping[str, Series | str]) -> PoolObservation:
        waiting = answers["waiting"]
        if isinstance(waiting, str):
            return missing(role, waiting)
        failures: list[str] = []

        def per_pod(key: str) -> dict[str, float]:
            got = answers.get(key, [])
            if isinstance(got, str):
                failures.append(got)
                return {}
            return {_pod_key(labels, i): v for i, (labels, v) in enumerate(got)}

        w, r, kv = per_pod("waiting"), per_pod("running"), per_pod("kv")
        deferred, completed = per_pod("deferred"), per_pod("completed")
        fresh = answers.get("fresh", [])
        if isinstance(fresh, str):
            failures.append(fresh)
        stamps = [] if isinstance(fresh, str) else [v for _, v in fresh]
        router = per_pod("router") if "router" in answers else {}
        samples = [
            PodSample(
                pod,
                w[pod],
                r.get(pod, 0.0),
                kv.get(pod),
                deferred.get(pod, 0.0),
                completed.get(pod),
            )
            for pod in sorted(w)
        ]
        return observe(
            role,
            samples,
            min(stamps) if stamps else None,
            router_pending=sum(router.values()),
            failures=failures,
        )


def _pod_key(labels: Mapping[str, str], index: int) -> str:
    return labels.get("pod") or labels.get("instance") or f"series-{index}"


def make_source(
    settings: ScrapeSettings | PrometheusSettings,
    session: aiohttp.ClientSession,
    *,
    router_port: int = 8000,
    router_path: str = "/metrics",
    clock: Clock = time.time,
) -> MetricSource:
    """The source ``spec.autoscaling.source`` asks for, sharing the operator's HTTP session."""
    if isinstance(settings, PrometheusSettings):
        return PrometheusSource(session, settings, clock=clock)
    return ScrapeSource(
        session, settings, router_port=router_port, router_path=router_path, clock=clock
    )
