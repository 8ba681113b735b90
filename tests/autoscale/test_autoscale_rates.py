"""Arrival and service rates learnt from vLLM's request counter between ticks."""

from __future__ import annotations

import pytest
from autoscale_factory import NOW, config, run

from tandem.autoscale.observation import PodSample, observe
from tandem.autoscale.policy import PolicyMemory, PoolMemory
from tandem.autoscale.rates import MAX_GAP_S, RateMemory, update

T0 = 1_000.0


def tick(
    mem: RateMemory, at: float, counters: dict[str, float], demand: float, waiting: float = 0.0
) -> RateMemory:
    pods = [PodSample(p, waiting, 0.0, completed=c) for p, c in counters.items()]
    return update(mem, observe("prefill", pods, at), demand, at, saturated_at=4)


def test_arrivals_are_completions_plus_queue_growth() -> None:
    m = tick(RateMemory(), T0, {"a": 100, "b": 200}, demand=10)
    assert m.arrival() is None  # one tick makes no rate
    m = tick(m, T0 + 10, {"a": 150, "b": 250}, demand=30)
    assert m.arrival() == pytest.approx(100 / 10 + 20 / 10)


def test_a_restarted_engine_is_left_out_and_a_new_one_assumed_alike() -> None:
    m = tick(RateMemory(), T0, {"a": 100, "b": 500}, demand=0)
    # b restarted (counter went down), c is new: only a's 50 completions are measured,
    # and the three pods are assumed to have served alike.
    m = tick(m, T0 + 10, {"a": 150, "b": 3, "c": 7}, demand=0)
    assert m.arrival() == pytest.approx(5.0 * 3)


def test_service_rate_is_learnt_only_from_saturated_pods() -> None:
    m = tick(RateMemory(), T0, {"a": 0}, demand=0, waiting=1)
    m = tick(m, T0 + 10, {"a": 60}, demand=0, waiting=1)
    assert m.service is None  # a queue of 1 is below the target of 4: not saturated
    m = tick(m, T0 + 20, {"a": 150}, demand=0, waiting=6)
    assert m.service == pytest.approx(9.0)
    m = tick(m, T0 + 30, {"a": 260}, demand=0, waiting=6)
    assert m.service == pytest.approx(9.0 + 0.5 * (11.0 - 9.0))  # exponential average


def test_trend_extrapolates_only_upwards() -> None:
    rising = RateMemory(arrivals=tuple((T0 + 10 * i, 10.0 + 2.0 * i) for i in range(6)))
    assert rising.arrival() == pytest.approx(20.0)
    assert rising.trend() == pytest.approx(0.2)
    assert rising.forecast(60) == pytest.approx(20.0 + 12.0)
    falling = RateMemory(arrivals=tuple((T0 + 10 * i, 20.0 - 2.0 * i) for i in range(6)))
    assert falling.forecast(60) == pytest.approx(falling.arrival())


def test_old_estimates_leave_the_window_and_gaps_make_no_rate() -> None:
    m = tick(RateMemory(), T0, {"a": 0}, demand=0)
    m = tick(m, T0 + 10, {"a": 100}, demand=0)
    m = tick(m, T0 + 10 + MAX_GAP_S + 1, {"a": 5000}, demand=0)
    assert [v for _, v in m.arrivals] == []  # the 10/s estimate aged out; the gap made none
    assert m.arrival() is None


def test_partial_readings_teach_no_rates() -> None:
    learnt = RateMemory(at=NOW - 10, completed=(("prefill-0", 5.0),), service=10.0)
    mem = PolicyMemory(prefill=PoolMemory(rates=learnt))
    # One of two ready pods answered: its counter moved by 495, which is not a rate.
    half = observe("prefill", [PodSample("prefill-0", 0, 2, completed=500)], NOW)
    ev = run(config(), prefill=(2, 2), decode=(1, 1), p_obs=half, memory=mem)
    assert ev.memory.prefill.rates.at is None  # the next tick starts a fresh difference
    assert ev.memory.prefill.rates.arrivals == ()
    assert ev.memory.prefill.rates.service == 10.0
