"""One test per policy rule, each named after the behaviour it protects."""

from __future__ import annotations

from collections.abc import Callable

from autoscale_factory import NOW, broken, config, idle, obs, pool, run, settled

from tandem.autoscale.config import PolicyConfig
from tandem.autoscale.observation import PoolObservation
from tandem.autoscale.policy import (
    Evaluation,
    PolicyMemory,
    PoolMemory,
    PoolState,
    Recommendation,
    ScaleReason,
    evaluate,
)

# --------------------------------------------------------------------------- scaling up


def test_queue_above_target_scales_up_at_once() -> None:
    # 2 pods each running 4 with 20 queued: a replica at target holds 4 running + 4 waiting,
    # so 48 requests need 6 replicas.
    ev = run(
        config(), prefill=(2, 2), decode=(1, 1), p_obs=obs("prefill", 2, waiting=40, running=8)
    )
    assert ev.prefill.desired == 6
    assert ev.prefill.reason is ScaleReason.QUEUE_ABOVE_TARGET
    assert ev.prefill.recommended == 6


def test_scale_up_is_bounded_by_max_scale_up_step() -> None:
    ev = run(
        config(), prefill=(2, 2), decode=(1, 1), p_obs=obs("prefill", 2, waiting=400, running=8)
    )
    assert ev.prefill.desired == 2 + 4
    assert "step-limited" in ev.prefill.message


def test_kv_cache_pressure_scales_decode_before_a_queue_forms() -> None:
    cfg = config(decode=pool(target_kv_cache_usage=0.8))
    d = obs("decode", 2, running=10, kv=0.95)
    ev = run(cfg, prefill=(1, 1), decode=(2, 2), d_obs=d)
    assert ev.decode.desired == 3  # 2 x 0.95 / 0.8 = 2.4 replicas of KV
    assert ev.decode.reason is ScaleReason.KV_CACHE_PRESSURE


def test_router_pending_prefills_count_as_prefill_waiting() -> None:
    p = obs("prefill", 1, running=2, pending=30)
    ev = run(config(), prefill=(1, 1), decode=(1, 1), p_obs=p)
    assert ev.prefill.desired == 5  # needs ceil(32 / 6) = 6, step-limited to +4
    assert ev.prefill.reason is ScaleReason.QUEUE_ABOVE_TARGET
    assert "router pending 30" in ev.prefill.message


def test_deferred_waiting_on_decoders_does_not_add_replicas() -> None:
    # NIXL pulls show up as waiting on decoders; they are deferred, not short of compute.
    pulls = obs("decode", 2, waiting=30, deferred=30, running=4)
    ev = run(config(), prefill=(1, 1), decode=(2, 2), d_obs=pulls, memory=settled())
    assert ev.decode.desired <= 2
    queued = obs("decode", 2, waiting=30, running=4)
    assert run(config(), prefill=(1, 1), decode=(2, 2), d_obs=queued).decode.desired == 6


def test_need_within_tolerance_keeps_replicas() -> None:
    # capacity 4 + target 4 = 8 per replica; 84 requests need 10.5 of the current 10.
    near = obs("prefill", 10, waiting=44, running=40)
    ev = run(config(), prefill=(10, 10), decode=(1, 1), p_obs=near)
    assert (ev.prefill.desired, ev.prefill.reason) == (10, ScaleReason.STABLE)
    far = obs("prefill", 10, waiting=56, running=40)
    assert run(config(), prefill=(10, 10), decode=(1, 1), p_obs=far).prefill.desired == 12


def test_batch_capacity_is_learnt_and_kept_in_memory() -> None:
    busy = run(config(), prefill=(2, 2), decode=(1, 1), p_obs=obs("prefill", 2, running=64))
    assert busy.memory.prefill.capacity == 32
    # Later 8 running need 8 / (32 + 4) of a replica, not 8 / (4 + 4).
    calm = run(
        config(),
        prefill=(2, 2),
        decode=(1, 1),
        p_obs=obs("prefill", 2, running=8),
        memory=busy.memory,
    )
    assert calm.prefill.recommended == 1
    assert calm.memory.prefill.capacity == 32


# --------------------------------------------------------------- replicas still starting


def test_starting_replicas_absorb_load_before_more_are_added() -> None:
    # 4 replicas, 2 ready: the 48 requests need 4, which the 2 starting ones will provide.
    p = obs("prefill", 2, waiting=32, running=16)
    ev = run(config(), prefill=(4, 2), decode=(1, 1), p_obs=p, memory=settled())
    assert (ev.prefill.desired, ev.prefill.reason) == (4, ScaleReason.COLD_START)
    # 72 requests need 6: add 2, not 4 on top of the starting ones.
    p = obs("prefill", 2, waiting=56, running=16)
    assert run(config(), prefill=(4, 2), decode=(1, 1), p_obs=p).prefill.desired == 6


def test_no_ready_replica_holds_as_cold_start() -> None:
    ev = run(config(), prefill=(3, 0), decode=(1, 1), p_obs=obs("prefill", 0), memory=settled())
    assert (ev.prefill.desired, ev.prefill.reason) == (3, ScaleReason.COLD_START)


def test_router_queue_wakes_both_pools_from_zero() -> None:
    cfg = config(prefill=pool(min_replicas=0), decode=pool(min_replicas=0))
    p = obs("prefill", 0, pending=3)
    ev = run(cfg, prefill=(0, 0), decode=(0, 0), p_obs=p, d_obs=obs("decode", 0))
    assert ev.prefill.desired == 1
    assert ev.decode.desired == 1  # the prefill:decode ratio needs a decoder
    assert ev.decode.reason is ScaleReason.RATIO_BOUND
    quiet = run(cfg, prefill=(0, 0), decode=(0, 0), p_obs=obs("prefill", 0), d_obs=obs("decode", 0))
    assert (quiet.prefill.desired, quiet.decode.desired) == (0, 0)


# ------------------------------------------------------------------------- scaling down


Load = Callable[[float, int], PoolObservation]


def drive(cfg: PolicyConfig, load: Load, replicas: int, seconds: int) -> list[Evaluation]:
    """Tick every 10 s from t=0; prefill replicas become ready at once; decode idle at 1."""
    memory, out = PolicyMemory(), []
    for t in range(0, seconds + 1, 10):
        ev = evaluate(
            cfg,
            {"prefill": PoolState(replicas, replicas), "decode": PoolState(1, 1)},
            {"prefill": load(float(t), replicas), "decode": idle("decode", 1, float(t))},
            memory,
            float(t),
        )
        memory, replicas = ev.memory, ev.prefill.desired
        out.append(ev)
    return out


def test_scale_down_waits_for_the_window_then_steps_one_replica() -> None:
    def load(t: float, n: int) -> PoolObservation:
        running = 4.0 * n if t < 100 else 1.0
        return obs("prefill", n, running=running, waiting=4.0 * n if t < 100 else 0.0, at=t)

    evs = drive(config(), load, 4, 700)
    desired = {i * 10: e.prefill.desired for i, e in enumerate(evs)}
    # The last busy recommendation (t=90) stays in the 300 s window through t=390.
    assert all(desired[t] == 4 for t in range(0, 391, 10))
    assert [desired[t] for t in (400, 410, 420)] == [3, 2, 1]
    assert evs[40].prefill.reason is ScaleReason.LOAD_BELOW_TARGET  # t=400, one request running
    assert evs[20].prefill.reason is ScaleReason.SCALE_DOWN_STABILIZING


def test_scale_down_takes_the_highest_recommendation_in_the_window() -> None:
    pol = pool()
    history = (Recommendation(NOW - 200, 5), Recommendation(NOW - 100, 3))
    mem = PolicyMemory(prefill=PoolMemory(history=history, observing_since=NOW - 1000))
    ev = run(config(prefill=pol), prefill=(6, 6), decode=(1, 1), memory=mem)
    assert ev.prefill.desired == 5  # max(5, 3, now 0): one step down from 6, never below 5


def test_no_scale_down_before_a_full_window_of_evidence_after_a_restart() -> None:
    ev = run(config(), prefill=(4, 4), decode=(1, 1), memory=PolicyMemory())
    assert (ev.prefill.desired, ev.prefill.reason) == (4, ScaleReason.SCALE_DOWN_STABILIZING)


def test_no_scale_down_within_the_window_after_this_pool_grew() -> None:
    mem = PoolMemory(observing_since=NOW - 10_000, last_scale_up=NOW - 100)
    ev = run(config(), prefill=(4, 4), decode=(1, 1), memory=PolicyMemory(prefill=mem))
    assert ev.prefill.desired == 4
    mem = PoolMemory(observing_since=NOW - 10_000, last_scale_up=NOW - 301)
    assert (
        run(
            config(), prefill=(4, 4), decode=(1, 1), memory=PolicyMemory(prefill=mem)
        ).prefill.desired
        == 3
    )


def test_scale_up_stabilization_takes_the_lowest_recommendation() -> None:
    cfg = config(prefill=pool(scale_up_stabilization_s=60))
    mem = PolicyMemory(prefill=PoolMemory(history=(Recommendation(NOW - 30, 2),)))
    p = obs("prefill", 2, waiting=56, running=8)
    ev = run(cfg, prefill=(2, 2), decode=(1, 1), p_obs=p, memory=mem)
    assert (ev.prefill.desired, ev.prefill.reason) == (2, ScaleReason.SCALE_UP_STABILIZING)


# ------------------------------------------------------------------------------ min/max


def test_at_max_replicas() -> None:
    cfg = config(prefill=pool(max_replicas=6))
    ev = run(cfg, prefill=(6, 6), decode=(1, 1), p_obs=obs("prefill", 6, waiting=200, running=24))
    assert (ev.prefill.desired, ev.prefill.reason) == (6, ScaleReason.AT_MAX)


def test_at_min_replicas_and_raised_to_a_new_min() -> None:
    ev = run(config(), prefill=(1, 1), decode=(1, 1), memory=settled())
    assert (ev.prefill.desired, ev.prefill.reason) == (1, ScaleReason.AT_MIN)
    raised = run(config(prefill=pool(min_replicas=3)), prefill=(1, 1), decode=(1, 1))
    assert (raised.prefill.desired, raised.prefill.reason) == (3, ScaleReason.AT_MIN)


# --------------------------------------------------------------------- missing metrics


def test_missing_metrics_hold_and_say_so() -> None:
    ev = run(config(), prefill=(4, 4), decode=(1, 1), p_obs=broken("prefill"), memory=settled())
    assert (ev.prefill.desired, ev.prefill.reason) == (4, ScaleReason.METRICS_MISSING)
    assert "connection refused" in ev.prefill.message


def test_no_pod_reporting_counts_as_missing() -> None:
    ev = run(config(), prefill=(4, 4), decode=(1, 1), p_obs=obs("prefill", 0), memory=settled())
    assert (ev.prefill.desired, ev.prefill.reason) == (4, ScaleReason.METRICS_MISSING)


def test_stale_metrics_hold() -> None:
    old = idle("prefill", 4, at=NOW - 31)
    ev = run(config(), prefill=(4, 4), decode=(1, 1), p_obs=old, memory=settled())
    assert (ev.prefill.desired, ev.prefill.reason) == (4, ScaleReason.METRICS_STALE)
    fresh = idle("prefill", 4, at=NOW - 29)
    assert (
        run(config(), prefill=(4, 4), decode=(1, 1), p_obs=fresh, memory=settled()).prefill.desired
        == 3
    )


def test_partial_metrics_never_scale_down_but_still_scale_up() -> None:
    half = idle("prefill", 2)
    ev = run(config(), prefill=(4, 4), decode=(1, 1), p_obs=half, memory=settled())
    assert (ev.prefill.desired, ev.prefill.reason) == (4, ScaleReason.METRICS_PARTIAL)
    hot = obs("prefill", 2, waiting=100, running=8)
    assert run(config(), prefill=(4, 4), decode=(1, 1), p_obs=hot).prefill.desired == 8


def test_a_hold_keeps_blocking_scale_down_for_a_window_after_metrics_return() -> None:
    mem = settled()
    held = run(config(), prefill=(4, 4), decode=(1, 1), p_obs=broken("prefill"), memory=mem)
    later = run(config(), prefill=(4, 4), decode=(1, 1), memory=held.memory, now=NOW + 100)
    assert later.prefill.desired == 4


def test_partial_readings_are_not_evidence_for_a_later_scale_down() -> None:
    # Two of four pods answered, idle: a lower bound, so it is recorded as "keep 4".
    half = run(config(), prefill=(4, 4), decode=(1, 1), p_obs=idle("prefill", 2), memory=settled())
    assert [r.replicas for r in half.memory.prefill.history] == [4]
    later = run(config(), prefill=(4, 4), decode=(1, 1), memory=half.memory, now=NOW + 100)
    assert later.prefill.desired == 4


# ------------------------------------------------------------------- ratio and budget

RATIO = {"ratio_min": 0.25, "ratio_max": 4.0}


def test_ratio_raises_the_pool_with_less_pressure() -> None:
    p = obs("prefill", 4, waiting=48, running=16)  # needs 8
    ev = run(config(**RATIO), prefill=(4, 4), decode=(1, 1), p_obs=p, memory=settled())
    assert (ev.prefill.desired, ev.decode.desired) == (8, 2)
    assert ev.prefill.reason is ScaleReason.QUEUE_ABOVE_TARGET
    assert ev.decode.reason is ScaleReason.RATIO_BOUND


def test_ratio_caps_the_pressured_pool_when_the_other_is_at_max() -> None:
    cfg = config(decode=pool(max_replicas=1), **RATIO)
    p = obs("prefill", 4, waiting=48, running=16)
    ev = run(cfg, prefill=(4, 4), decode=(1, 1), p_obs=p, memory=settled())
    assert (ev.prefill.desired, ev.prefill.reason) == (4, ScaleReason.RATIO_BOUND)


def test_ratio_min_raises_prefill_when_decode_grows() -> None:
    d = obs("decode", 4, running=40, kv=1.0)  # 4 x 1.0 / 0.5 = 8 replicas of KV
    cfg = config(decode=pool(target_kv_cache_usage=0.5), **RATIO)
    ev = run(cfg, prefill=(1, 1), decode=(4, 4), d_obs=d, memory=settled())
    assert ev.decode.desired == 8
    assert (ev.prefill.desired, ev.prefill.reason) == (2, ScaleReason.RATIO_BOUND)


def test_gpu_budget_counts_tensor_times_pipeline_and_shares_equally() -> None:
    cfg = config(prefill=pool(gpus_per_replica=2), decode=pool(gpus_per_replica=4), max_gpus=24)
    p = obs("prefill", 2, waiting=40, running=8)  # wants 6
    d = obs("decode", 2, waiting=40, running=8)  # wants 6
    ev = run(cfg, prefill=(2, 2), decode=(2, 2), p_obs=p, d_obs=d)
    assert (ev.prefill.desired, ev.decode.desired) == (4, 4)  # 8 + 16 = 24 GPUs
    assert ev.prefill.reason is ev.decode.reason is ScaleReason.GPU_BUDGET


def test_scarce_budget_goes_by_relative_pressure() -> None:
    cfg = config(prefill=pool(max_scale_up_step=10), decode=pool(max_scale_up_step=10), max_gpus=10)
    p = obs("prefill", 2, waiting=72, running=8)  # wants 10
    d = obs("decode", 2, waiting=24, running=8)  # wants 4
    ev = run(cfg, prefill=(2, 2), decode=(2, 2), p_obs=p, d_obs=d)
    assert (ev.prefill.desired, ev.decode.desired) == (7, 3)


def test_over_budget_pools_shrink_one_step_per_tick() -> None:
    cfg = config(max_gpus=8)
    load = obs("prefill", 5, waiting=20, running=20)  # exactly 5 replicas of load
    dload = obs("decode", 5, waiting=20, running=20)
    ev = run(cfg, prefill=(5, 5), decode=(5, 5), p_obs=load, d_obs=dload, memory=settled())
    assert (ev.prefill.desired, ev.decode.desired) == (4, 4)
    assert ev.prefill.reason is ScaleReason.GPU_BUDGET


def test_budget_never_shrinks_a_pool_with_missing_metrics() -> None:
    cfg = config(max_gpus=8)
    ev = run(
        cfg,
        prefill=(5, 5),
        decode=(5, 5),
        p_obs=broken("prefill"),
        d_obs=obs("decode", 5, waiting=20, running=20),
        memory=settled(),
    )
    assert ev.prefill.desired == 5
    assert ev.decode.desired == 4


def test_scale_down_only_to_a_count_that_keeps_headroom() -> None:
    # Decode batches of up to 119 were seen. 64 running on 2 replicas would be 64 on one:
    # above half a batch, so it stays; 50 fit into one at half a batch, so it may shrink.
    mem = PolicyMemory(decode=PoolMemory(observing_since=NOW - 10_000, capacity=119))
    busy = run(
        config(), prefill=(1, 1), decode=(2, 2), d_obs=obs("decode", 2, running=64), memory=mem
    )
    assert (busy.decode.desired, busy.decode.reason) == (2, ScaleReason.STABLE)
    calm = run(
        config(), prefill=(1, 1), decode=(2, 2), d_obs=obs("decode", 2, running=50), memory=mem
    )
    assert (calm.decode.desired, calm.decode.reason) == (1, ScaleReason.LOAD_BELOW_TARGET)


# ------------------------------------------------------------------ learnt arrival rates


def rates(*arrivals: float, service: float = 10.0) -> PolicyMemory:
    """A pool watched for long (batches of 8 seen), with these per-tick arrival estimates."""
    from tandem.autoscale.rates import RateMemory

    pts = tuple((NOW - 10 * (len(arrivals) - i), a) for i, a in enumerate(arrivals))
    learnt = RateMemory(arrivals=pts, service=service)
    m = PoolMemory(observing_since=NOW - 10_000, capacity=8, rates=learnt)
    return PolicyMemory(prefill=m)


def test_a_backlog_during_cold_start_asks_only_for_what_the_arrival_rate_needs() -> None:
    # 400 queued behind 2 ready of 4 replicas. By queue length alone that is 8 replicas; at
    # 30 req/s into replicas that serve 10/s each, 4 serve the arrivals and clear the excess
    # (400 - 4 x 4) in a minute: (30 + 384 / 60) / 10 = 3.6.
    p = obs("prefill", 2, waiting=400, running=8)
    blind = run(config(), prefill=(4, 2), decode=(1, 1), p_obs=p)
    assert blind.prefill.desired == 8
    ev = run(config(), prefill=(4, 2), decode=(1, 1), p_obs=p, memory=rates(30, 30))
    assert (ev.prefill.desired, ev.prefill.reason) == (4, ScaleReason.COLD_START)


def test_arrivals_that_saturate_the_pool_scale_it_before_a_queue_forms() -> None:
    p = obs("prefill", 2, running=4)
    ev = run(config(), prefill=(2, 2), decode=(1, 1), p_obs=p, memory=rates(30, 30))
    assert (ev.prefill.desired, ev.prefill.reason) == (3, ScaleReason.ARRIVALS_RISING)


def test_rising_arrivals_block_a_scale_down_that_calm_occupancy_allows() -> None:
    p = obs("prefill", 6, running=6)
    flat = run(config(), prefill=(6, 6), decode=(1, 1), p_obs=p, memory=rates(10, 10, 10, 10))
    assert flat.prefill.desired == 5  # 10/s fits 2 replicas at 80 %
    # 10 -> 30/s over the last minute: 54/s expected in a minute needs 7 at 80 %.
    up = run(config(), prefill=(6, 6), decode=(1, 1), p_obs=p, memory=rates(10, 14, 18, 22, 26, 30))
    assert up.prefill.desired == 6
