"""The actuator with fake cluster callables and a fake source: what gets written, and when."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import pytest
from autoscale_factory import broken, obs, pool, settled
from prometheus_client import CollectorRegistry

from tandem.api.vocabulary import Role
from tandem.autoscale.actuator import Autoscaler
from tandem.autoscale.config import AutoscalerConfig, PolicyConfig
from tandem.autoscale.metrics import AutoscalerMetrics
from tandem.autoscale.observation import PoolObservation
from tandem.autoscale.policy import PolicyMemory, PoolMemory, PoolState, ScaleReason
from tandem.autoscale.report import TickReport
from tandem.autoscale.sources import PodRef, PoolTarget

NOW = 1_000_000.0
NS, NAME = "ml", "llama"


@dataclass
class FakeCluster:
    """Two Deployments whose pods are ready at once; every write is logged in order."""

    replicas: dict[str, int] = field(default_factory=lambda: {"prefill": 2, "decode": 2})
    calls: list[tuple[object, ...]] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)

    async def read_pool(self, role: Role) -> PoolState:
        if "read" in self.fail:
            raise RuntimeError("apiserver unavailable")
        return PoolState(self.replicas[role], self.replicas[role])

    async def list_pods(self, role: Role) -> Sequence[PodRef]:
        if f"list-{role}" in self.fail:
            raise RuntimeError("forbidden")
        return [PodRef(f"{role}-{i}", f"10.0.0.{i}") for i in range(self.replicas[role])]

    async def list_routers(self) -> Sequence[PodRef]:
        return [PodRef("router-0", "10.0.1.1")]

    async def scale(self, role: Role, n: int) -> None:
        if "scale" in self.fail:
            raise RuntimeError("conflict")
        self.calls.append(("scale", role, n))
        self.replicas[role] = n

    async def set_deletion_costs(self, role: Role, costs: Mapping[str, int]) -> None:
        self.calls.append(("costs", role, dict(costs)))

    def writes(self) -> list[tuple[object, ...]]:
        return list(self.calls)


@dataclass
class FakeSource:
    """Returns canned observations; remembers the targets it was asked about."""

    load: dict[str, PoolObservation]
    kind: str = "scrape"
    targets: list[PoolTarget] = field(default_factory=list)
    now: float | None = None  # when set, samples are stamped fresh at this time

    async def observe(self, target: PoolTarget) -> PoolObservation:
        self.targets.append(target)
        if target.role not in self.load:
            raise RuntimeError("source bug")
        o = self.load[target.role]
        return o if self.now is None or o.error else replace(o, sampled_at=self.now)


def make(
    cluster: FakeCluster, source: FakeSource, **policy: object
) -> tuple[Autoscaler, CollectorRegistry]:
    registry = CollectorRegistry()
    base = PolicyConfig(prefill=pool(), decode=pool(), ratio_min=0.01, ratio_max=100.0)
    cfg = AutoscalerConfig(policy=replace(base, **policy))  # type: ignore[arg-type]
    scaler = Autoscaler(
        namespace=NS,
        name=NAME,
        config=cfg,
        source=source,
        hooks=cluster,
        metrics=AutoscalerMetrics(registry),
    )
    return scaler, registry


def value(registry: CollectorRegistry, metric: str, **labels: str) -> float | None:
    return registry.get_sample_value(metric, {"namespace": NS, "name": NAME, **labels})


def reason_of(report: TickReport, role: str) -> ScaleReason:
    return report.decisions[role].reason  # type: ignore[index]


STEADY = {
    "prefill": obs("prefill", 2, running=8, waiting=8),  # exactly 2 replicas of load
    "decode": obs("decode", 2, running=8, waiting=8),
}


async def test_no_write_when_nothing_changes() -> None:
    cluster = FakeCluster()
    scaler, registry = make(cluster, FakeSource(dict(STEADY)))
    report = await scaler.tick(NOW)
    assert cluster.writes() == []
    assert reason_of(report, "prefill") is ScaleReason.STABLE
    assert report.scaled == {} and report.errors == ()
    assert value(registry, "tandem_autoscaler_desired_replicas", role="prefill") == 2
    assert value(registry, "tandem_autoscaler_decisions_total", role="decode", reason="Stable") == 1


async def test_scale_up_writes_once_and_reports_everywhere() -> None:
    cluster = FakeCluster()
    hot = {**STEADY, "prefill": obs("prefill", 2, running=8, waiting=40)}
    scaler, registry = make(cluster, FakeSource(hot))
    report = await scaler.tick(NOW)
    assert cluster.writes() == [("scale", "prefill", 6)]
    assert report.scaled == {"prefill": (2, 6)}
    assert reason_of(report, "prefill") is ScaleReason.QUEUE_ABOVE_TARGET
    assert "prefill" in report.scaled
    assert value(registry, "tandem_autoscaler_current_replicas", role="prefill") == 6
    assert (
        value(
            registry, "tandem_autoscaler_decisions_total", role="prefill", reason="QueueAboveTarget"
        )
        == 1
    )
    assert scaler.memory.prefill.last_scale_up == NOW


async def test_the_source_gets_pods_and_routers_only_for_prefill() -> None:
    source = FakeSource(dict(STEADY))
    scaler, _ = make(FakeCluster(), source)
    await scaler.tick(NOW)
    by_role = {t.role: t for t in source.targets}
    assert [p.ip for p in by_role["prefill"].pods] == ["10.0.0.0", "10.0.0.1"]
    assert by_role["prefill"].routers == (PodRef("router-0", "10.0.1.1"),)
    assert (by_role["decode"].namespace, by_role["decode"].name) == (NS, NAME)


async def test_scale_down_goes_first_with_deletion_costs_then_scale_up() -> None:
    cluster = FakeCluster(replicas={"prefill": 2, "decode": 3})
    load = {
        "prefill": obs("prefill", 2, running=8, waiting=40),  # wants 6
        "decode": obs("decode", 3, running=3),  # 1 running per pod of 32: wants 1, steps to 2
    }
    scaler, _ = make(cluster, FakeSource(load))
    # Watched for long enough to shrink, and has seen decode batches of 32.
    scaler._memory = replace(settled(), decode=replace(settled().decode, capacity=32.0))
    await scaler.tick(NOW)
    writes = cluster.writes()
    assert [w[:2] for w in writes] == [
        ("costs", "decode"),
        ("scale", "decode"),
        ("scale", "prefill"),
    ]
    assert writes[0][2] == {"decode-0": 1, "decode-1": 1, "decode-2": 1}


async def test_missing_metrics_hold_and_count_source_errors() -> None:
    cluster = FakeCluster()
    bad = {"prefill": broken("prefill", "timed out"), "decode": STEADY["decode"]}
    scaler, registry = make(cluster, FakeSource(bad))
    scaler._memory = settled()
    report = await scaler.tick(NOW)
    assert cluster.writes() == []
    assert reason_of(report, "prefill") is ScaleReason.METRICS_MISSING
    assert value(registry, "tandem_autoscaler_source_errors_total", source="scrape") == 1


async def test_a_source_that_raises_is_treated_as_missing() -> None:
    cluster = FakeCluster()
    scaler, _ = make(cluster, FakeSource({"prefill": STEADY["prefill"]}))  # decode raises
    report = await scaler.tick(NOW)
    assert report.observations["decode"].error == "RuntimeError: source bug"
    assert reason_of(report, "decode") is ScaleReason.METRICS_MISSING


async def test_unreadable_pools_skip_the_tick() -> None:
    cluster = FakeCluster(fail={"read"})
    scaler, registry = make(cluster, FakeSource(dict(STEADY)))
    report = await scaler.tick(NOW)
    assert report.evaluation is None and "apiserver unavailable" in report.errors[0]
    assert cluster.calls == []
    assert value(registry, "tandem_autoscaler_source_errors_total", source="kubernetes") == 1


async def test_pod_listing_failure_holds_that_pool() -> None:
    cluster = FakeCluster(fail={"list-decode"})
    scaler, _ = make(cluster, FakeSource(dict(STEADY)))
    scaler._memory = settled()
    report = await scaler.tick(NOW)
    assert report.observations["decode"].error == "listing pods failed: forbidden"
    assert reason_of(report, "decode") is ScaleReason.METRICS_MISSING


async def test_failed_scale_is_retried_with_unchanged_memory() -> None:
    cluster = FakeCluster(fail={"scale"})
    hot = {**STEADY, "prefill": obs("prefill", 2, running=8, waiting=40)}
    scaler, registry = make(cluster, FakeSource(hot))
    report = await scaler.tick(NOW)
    assert "scaling prefill to 6 failed: conflict" in report.errors
    assert reason_of(report, "prefill") is ScaleReason.QUEUE_ABOVE_TARGET
    assert report.scaled == {}
    assert scaler.memory.prefill.last_scale_up is None
    assert value(registry, "tandem_autoscaler_current_replicas", role="prefill") == 2
    cluster.fail.clear()
    await scaler.tick(NOW + 10)
    assert cluster.writes() == [("scale", "prefill", 6)]


async def test_the_report_carries_the_tick_time_and_the_source() -> None:
    scaler, _ = make(FakeCluster(), FakeSource(dict(STEADY), kind="prometheus"))
    report = await scaler.tick(NOW)
    assert (report.at, report.source) == (NOW, "prometheus")
    assert set(report.decisions) == {"prefill", "decode"}


async def test_forget_removes_every_series_of_the_instance() -> None:
    scaler, registry = make(FakeCluster(), FakeSource(dict(STEADY)))
    await scaler.tick(NOW)
    scaler._metrics.source_error(NS, NAME, "scrape")
    scaler._metrics.forget(NS, NAME)
    names = {s.name for m in registry.collect() for s in m.samples if s.labels.get("name") == NAME}
    assert names == set()


def test_reconfigure_forgets_batch_size_only_when_gpus_per_replica_change() -> None:
    scaler, _ = make(FakeCluster(), FakeSource(dict(STEADY)))
    scaler._memory = PolicyMemory(prefill=PoolMemory(capacity=32), decode=PoolMemory(capacity=8))
    cfg = scaler.config
    scaler.reconfigure(replace(cfg, interval_s=30))
    assert scaler.memory.prefill.capacity == 32
    bigger = replace(cfg.policy, prefill=pool(gpus_per_replica=4))
    scaler.reconfigure(AutoscalerConfig(policy=bigger))
    assert scaler.memory.decode.capacity == 8
    assert scaler.memory.prefill.capacity == 0


@pytest.mark.parametrize("role", ["prefill", "decode"])
async def test_held_pool_is_never_shrunk_even_after_the_window(role: str) -> None:
    cluster = FakeCluster(replicas={"prefill": 3, "decode": 3})
    load = {"prefill": obs("prefill", 3), "decode": obs("decode", 3)}
    load[role] = broken(role)  # type: ignore[arg-type]
    source = FakeSource(load)
    scaler, _ = make(cluster, source)
    scaler._memory = settled()
    for i in range(5):
        source.now = NOW + 400 * i
        await scaler.tick(source.now)
    assert cluster.replicas[role] == 3
    other = "decode" if role == "prefill" else "prefill"
    assert cluster.replicas[other] == 1  # the healthy idle pool did shrink


# ------------------------------------------------------------------------ Shadow mode

HOT = {**STEADY, "prefill": obs("prefill", 2, running=8, waiting=40)}  # prefill wants 6


def shadowed(scaler: Autoscaler) -> Autoscaler:
    scaler.reconfigure(replace(scaler.config, shadow=True))
    return scaler


async def test_shadow_never_scales_nor_sets_deletion_costs() -> None:
    cluster = FakeCluster(replicas={"prefill": 2, "decode": 3})
    load = {**HOT, "decode": obs("decode", 3, running=3)}  # decode would shrink (with costs)
    source = FakeSource(load)
    scaler, registry = make(cluster, source)
    shadowed(scaler)._memory = replace(settled(), decode=replace(settled().decode, capacity=32.0))
    for i in range(3):
        source.now = NOW + 10 * i
        report = await scaler.tick(source.now)
        assert report.shadow and report.mode == "Shadow"
        assert report.scaled == {}
        # Each tick sees the real replicas and recommends the same change again.
        assert report.recommended == {"prefill": (2, 6), "decode": (3, 2)}
    assert cluster.writes() == []
    assert reason_of(report, "prefill") is ScaleReason.QUEUE_ABOVE_TARGET
    assert value(registry, "tandem_autoscaler_recommended_replicas", role="prefill") == 6
    assert value(registry, "tandem_autoscaler_desired_replicas", role="prefill") == 2
    assert value(registry, "tandem_autoscaler_current_replicas", role="prefill") == 2
    assert value(registry, "tandem_autoscaler_mode", mode="Shadow") == 1
    assert value(registry, "tandem_autoscaler_mode", mode="Active") == 0


async def test_shadow_keeps_the_damping_memory_as_if_nothing_was_scaled() -> None:
    scaler, _ = make(FakeCluster(), FakeSource(HOT))
    shadowed(scaler)._memory = settled()
    await scaler.tick(NOW)
    assert scaler.memory.prefill.last_scale_up is None
    assert scaler.memory.prefill.last_change is None
    # What it learns from the metrics is kept: the batch size and the recommendation history.
    assert scaler.memory.prefill.capacity == 4.0
    assert [r.replicas for r in scaler.memory.prefill.history] == [6]


async def test_switching_shadow_to_active_then_scales() -> None:
    cluster = FakeCluster()
    scaler, registry = make(cluster, FakeSource(HOT))
    shadowed(scaler)
    await scaler.tick(NOW)
    assert cluster.writes() == []
    scaler.reconfigure(replace(scaler.config, shadow=False))
    report = await scaler.tick(NOW + 10)
    assert cluster.writes() == [("scale", "prefill", 6)]
    assert report.scaled == report.recommended == {"prefill": (2, 6)}
    assert not report.shadow
    assert value(registry, "tandem_autoscaler_desired_replicas", role="prefill") == 6
    assert value(registry, "tandem_autoscaler_mode", mode="Active") == 1


async def test_active_reports_its_recommendation_too() -> None:
    scaler, registry = make(FakeCluster(), FakeSource(dict(STEADY)))
    report = await scaler.tick(NOW)
    assert report.recommended == {} and report.mode == "Active"
    assert value(registry, "tandem_autoscaler_recommended_replicas", role="decode") == 2
