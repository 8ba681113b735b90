"""Properties of the policy over random pools, signals and memories (hypothesis).

The bounds a user writes must hold whatever the metrics say: min <= desired <= max, step limits,
the GPU budget, the prefill:decode ratio whenever it can be met, and no scale-down on missing or
stale metrics. A brute-force search checks "whenever it can be met" independently of the
policy's own search.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import product

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tandem.api.vocabulary import ROLES, Role
from tandem.autoscale.config import PolicyConfig, PoolPolicy
from tandem.autoscale.coupling import ratio_violation
from tandem.autoscale.observation import PodSample, PoolObservation, missing, observe
from tandem.autoscale.policy import (
    Evaluation,
    PolicyMemory,
    PoolMemory,
    PoolState,
    Recommendation,
    evaluate,
)
from tandem.autoscale.rates import RateMemory

NOW = 50_000.0
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# Strategies are built once at import: rebuilding them inside every draw costs more than the
# policy itself.
_MAYBE_KV = st.none() | st.sampled_from([0.5, 0.8, 1.0])
_MAYBE_AGE = st.none() | st.integers(0, 5000)


def _pool(
    bounds: tuple[int, int],
    kv: float | None,
    up_window: float,
    down_window: float,
    up_step: int,
    down_step: int,
    gpus: int,
) -> PoolPolicy:
    lo, span = bounds
    return PoolPolicy(
        min_replicas=lo,
        max_replicas=max(lo, 1) + span,
        target_waiting_per_replica=4,
        target_kv_cache_usage=kv,
        scale_up_stabilization_s=up_window,
        scale_down_stabilization_s=down_window,
        max_scale_up_step=up_step,
        max_scale_down_step=down_step,
        gpus_per_replica=gpus,
    )


POOLS = st.builds(
    _pool,
    st.tuples(st.integers(0, 4), st.integers(0, 6)),
    _MAYBE_KV,
    st.sampled_from([0.0, 30.0]),
    st.sampled_from([0.0, 60.0, 300.0]),
    st.integers(1, 5),
    st.integers(1, 3),
    st.sampled_from([1, 2, 4, 8]),
)
RATIOS = st.sampled_from([(0.1, 1.0), (0.25, 4.0), (0.5, 2.0), (1.0, 1.0), (0.1, 8.0)])
KINDS = st.sampled_from(["ok", "ok", "ok", "error", "stale", "partial"])
KV_USAGE = st.none() | st.sampled_from([0.0, 0.3, 0.79, 0.81, 1.0])


@st.composite
def configs(draw: st.DrawFn) -> PolicyConfig:
    p, d = draw(POOLS), draw(POOLS)
    rmin, rmax = draw(RATIOS)
    floor = p.min_replicas * p.gpus_per_replica + d.min_replicas * d.gpus_per_replica
    extra = draw(st.none() | st.integers(0, 40))
    return PolicyConfig(
        prefill=p,
        decode=d,
        ratio_min=rmin,
        ratio_max=rmax,
        max_gpus=None if extra is None else max(floor, 1) + extra,
        stale_after_s=30,
    )


@st.composite
def observations(draw: st.DrawFn, role: Role, ready: int) -> PoolObservation:
    kind = draw(KINDS)
    if kind == "error":
        return missing(role, "boom")
    reporting = ready if kind != "partial" else draw(st.integers(0, max(ready - 1, 0)))
    # Totals spread evenly: per-pod draws would make generation, not the policy, the cost.
    waiting, running = draw(st.integers(0, 800)), draw(st.integers(0, 256))
    kv, deferred = draw(KV_USAGE), draw(st.integers(0, 20))
    done = draw(st.none() | st.integers(0, 100_000))
    samples = [
        PodSample(
            f"{role}-{i}",
            waiting / reporting,
            running / reporting,
            kv,
            deferred / reporting,
            None if done is None else float(done + 37 * i),
        )
        for i in range(reporting)
    ]
    age = draw(st.integers(31, 600)) if kind == "stale" else draw(st.integers(0, 29))
    return observe(role, samples, NOW - age, router_pending=draw(st.integers(0, 50)))


def _memory(
    recs: list[tuple[int, int]],
    since: int | None,
    grew: int | None,
    cap: int,
    rates: tuple[list[tuple[int, int]], int | None, int] | None,
) -> PoolMemory:
    learnt = RateMemory()
    if rates is not None:
        arrivals, service, seen = rates
        learnt = RateMemory(
            at=NOW - 10,
            demand=float(seen),
            completed=tuple((f"{r}-{i}", float(seen * (i + 1))) for r in ROLES for i in range(3)),
            arrivals=tuple((NOW - a, float(v)) for a, v in sorted(arrivals, reverse=True)),
            service=None if service is None else float(service),
        )
    return PoolMemory(
        history=tuple(Recommendation(NOW - a, n) for a, n in sorted(recs, reverse=True)),
        observing_since=None if since is None else NOW - since,
        last_scale_up=None if grew is None else NOW - grew,
        capacity=float(cap),
        rates=learnt,
    )


MEMORIES = st.builds(
    _memory,
    st.lists(st.tuples(st.integers(1, 400), st.integers(0, 12)), max_size=5),
    _MAYBE_AGE,
    _MAYBE_AGE,
    st.integers(0, 64),
    st.none()
    | st.tuples(
        st.lists(st.tuples(st.integers(1, 59), st.integers(0, 80)), max_size=6),
        st.none() | st.integers(1, 30),
        st.integers(0, 500),
    ),
)


Scenario = tuple[PolicyConfig, dict[Role, PoolState], dict[Role, PoolObservation], PolicyMemory]


@st.composite
def scenarios(draw: st.DrawFn, *, in_bounds: bool = True) -> Scenario:
    cfg = draw(configs())
    states: dict[Role, PoolState] = {}
    obs: dict[Role, PoolObservation] = {}
    for role in ROLES:
        pol = cfg.pool(role)
        cur = draw(
            st.integers(pol.min_replicas, pol.max_replicas) if in_bounds else st.integers(0, 14)
        )
        ready = draw(st.integers(0, cur))
        states[role] = PoolState(cur, ready)
        obs[role] = draw(observations(role, ready))
    mem = PolicyMemory(prefill=draw(MEMORIES), decode=draw(MEMORIES))
    return cfg, states, obs, mem


def _gpus(cfg: PolicyConfig, p: int, d: int) -> int:
    return p * cfg.prefill.gpus_per_replica + d * cfg.decode.gpus_per_replica


def _valid(cfg: PolicyConfig, p: int, d: int) -> bool:
    in_budget = cfg.max_gpus is None or _gpus(cfg, p, d) <= cfg.max_gpus
    return in_budget and ratio_violation(p, d, cfg.ratio_min, cfg.ratio_max) == 0


def _pair(ev: Evaluation) -> tuple[int, int]:
    return ev.prefill.desired, ev.decode.desired


@SETTINGS
@given(scenarios(in_bounds=False))
def test_min_and_max_always_hold(case: Scenario) -> None:
    cfg, states, obs, mem = case
    ev = evaluate(cfg, states, obs, mem, NOW)
    for role in ROLES:
        pol = cfg.pool(role)
        assert pol.min_replicas <= ev.decision(role).desired <= pol.max_replicas


@SETTINGS
@given(scenarios())
def test_steps_budget_holds_and_purity(case: Scenario) -> None:
    cfg, states, obs, mem = case
    ev = evaluate(cfg, states, obs, mem, NOW)
    assert ev == evaluate(cfg, states, obs, mem, NOW), "not a pure function of its inputs"
    for role in ROLES:
        pol, cur, d = cfg.pool(role), states[role].replicas, ev.decision(role)
        assert -pol.max_scale_down_step <= d.desired - cur <= pol.max_scale_up_step
        o = obs[role]
        stale = o.sampled_at is None or NOW - o.sampled_at > cfg.stale_after_s
        partial = o.pods_reporting < states[role].ready_replicas
        if o.error is not None or stale or partial:
            assert d.desired >= cur, "scaled down on missing, stale or partial metrics"
    cur_gpus = _gpus(cfg, states["prefill"].replicas, states["decode"].replicas)
    new_gpus = _gpus(cfg, *_pair(ev))
    if cfg.max_gpus is not None:
        assert new_gpus <= max(cfg.max_gpus, cur_gpus), "grew past the GPU budget"


@SETTINGS
@given(scenarios())
def test_a_valid_state_never_becomes_invalid(case: Scenario) -> None:
    cfg, states, obs, mem = case
    ev = evaluate(cfg, states, obs, mem, NOW)
    if _valid(cfg, states["prefill"].replicas, states["decode"].replicas):
        assert _valid(cfg, *_pair(ev))


@SETTINGS
@given(scenarios())
def test_ratio_and_budget_hold_whenever_any_pair_satisfies_them(case: Scenario) -> None:
    cfg, states, obs, mem = case
    # Lift step limits so every pair within min..max is reachable this tick, and keep metrics
    # usable so no pool is held at its current size.
    cfg = replace(
        cfg,
        prefill=replace(cfg.prefill, max_scale_up_step=100, max_scale_down_step=100),
        decode=replace(cfg.decode, max_scale_up_step=100, max_scale_down_step=100),
    )
    states = {r: PoolState(s.replicas, s.replicas) for r, s in states.items()}
    obs = {
        r: observe(r, [PodSample(f"{r}-{i}", 1, 1) for i in range(s.replicas)], NOW)
        for r, s in states.items()
    }
    p, d = cfg.prefill, cfg.decode
    feasible = any(
        _valid(cfg, a, b)
        for a, b in product(
            range(p.min_replicas, p.max_replicas + 1), range(d.min_replicas, d.max_replicas + 1)
        )
    )
    ev = evaluate(cfg, states, obs, mem, NOW)
    if feasible:
        assert _valid(cfg, *_pair(ev)), (states, _pair(ev))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=10, max_size=60), POOLS)
def test_no_scale_down_within_the_window_after_a_scale_up(
    waiting: list[int], pol: PoolPolicy
) -> None:
    """Drive one pool through a random load sequence, every 10 s; check the history."""
    cfg = PolicyConfig(prefill=pol, ratio_min=0.001, ratio_max=1000.0)
    memory, cur, events = PolicyMemory(), max(pol.min_replicas, 1), []
    for i, w in enumerate(waiting):
        now = NOW + 10 * i
        states = {"prefill": PoolState(cur, cur), "decode": PoolState(1, 0)}
        pods = [PodSample(f"p{k}", w / max(cur, 1), 2.0) for k in range(cur)]
        obs = {"prefill": observe("prefill", pods, now), "decode": observe("decode", [], now)}
        ev = evaluate(cfg, states, obs, memory, now)
        if ev.prefill.desired != cur:
            events.append((now, ev.prefill.desired - cur))
        memory, cur = ev.memory, ev.prefill.desired
    window = pol.scale_down_stabilization_s
    for t, delta in events:
        if delta < 0:
            assert t - NOW >= window, "scaled down before a full window of evidence"
            ups = [u for u, dd in events if dd > 0 and t - window < u < t]
            assert not ups, "scaled down within the window after a scale-up"
