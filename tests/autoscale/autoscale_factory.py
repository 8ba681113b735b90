"""Small builders for autoscaler tests: pools, observations and one-call policy evaluation.

Kept apart from conftest so tests can import them by name (LWS-style wrappers).
"""

from __future__ import annotations

from dataclasses import replace

from tandem.api.vocabulary import Role
from tandem.autoscale.config import PolicyConfig, PoolPolicy
from tandem.autoscale.observation import PodSample, PoolObservation, missing, observe
from tandem.autoscale.policy import Evaluation, PolicyMemory, PoolState, evaluate

NOW = 1_000_000.0


def pool(**kw: object) -> PoolPolicy:
    """A pool policy with roomy defaults unless told otherwise."""
    base = PoolPolicy(min_replicas=1, max_replicas=16, scale_down_stabilization_s=300.0)
    return replace(base, **kw)  # type: ignore[arg-type]


def config(prefill: PoolPolicy | None = None, decode: PoolPolicy | None = None, **kw: object):
    """Ratio bounds wide open by default so single-pool tests are not coupled."""
    base = PolicyConfig(
        prefill=prefill or pool(),
        decode=decode or pool(),
        ratio_min=0.001,
        ratio_max=1000.0,
        max_gpus=None,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def obs(
    role: Role,
    pods: int,
    *,
    waiting: float = 0.0,
    running: float = 0.0,
    kv: float | None = None,
    deferred: float = 0.0,
    pending: float = 0.0,
    at: float = NOW,
    failures: tuple[str, ...] = (),
) -> PoolObservation:
    """``pods`` pods sharing the given totals evenly."""
    samples = [
        PodSample(
            pod=f"{role}-{i}",
            waiting=waiting / pods,
            running=running / pods,
            kv_usage=kv,
            deferred=deferred / pods,
        )
        for i in range(pods)
    ]
    return observe(role, samples, at, router_pending=pending, failures=failures)


def idle(role: Role, pods: int, at: float = NOW) -> PoolObservation:
    return obs(role, pods, at=at)


def broken(role: Role, error: str = "connection refused") -> PoolObservation:
    return missing(role, error)


def run(
    cfg: PolicyConfig,
    *,
    prefill: tuple[int, int],
    decode: tuple[int, int],
    p_obs: PoolObservation | None = None,
    d_obs: PoolObservation | None = None,
    memory: PolicyMemory | None = None,
    now: float = NOW,
) -> Evaluation:
    """Evaluate once; pools given as (replicas, ready)."""
    return evaluate(
        cfg,
        {"prefill": PoolState(*prefill), "decode": PoolState(*decode)},
        {
            "prefill": p_obs or idle("prefill", prefill[1], now),
            "decode": d_obs or idle("decode", decode[1], now),
        },
        memory or PolicyMemory(),
        now,
    )


def settled(seconds: float = 10_000.0) -> PolicyMemory:
    """Memory of an autoscaler that has watched for a long time and changed nothing lately."""
    from tandem.autoscale.policy import PoolMemory

    m = PoolMemory(observing_since=NOW - seconds)
    return PolicyMemory(prefill=m, decode=m)
