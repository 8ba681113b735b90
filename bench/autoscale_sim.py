"""Simulated InferenceService: Tandem's autoscaling policy against named baselines. Not a test.

    ~/.cache/tandem/venv/bin/python bench/autoscale_sim.py --quick    # < 90 s on 2 cores
    ~/.cache/tandem/venv/bin/python bench/autoscale_sim.py            # longer traces, full split search

A discrete-event model of one InferenceService (router, prefill pool, decode pool, KV hand-off,
engine cold start, a GPU-limited cluster) drives the real ``tandem.autoscale.policy.evaluate``
with the metrics a scrape would see (vllm:num_requests_waiting / _running / kv_cache_usage_perc,
the deferred share of waiting, the router's pending prefills) every ``interval``. It prints, per
trace, SLO attainment, goodput, GPU-seconds and scale events of Tandem as ratios against
HPA/KEDA on vllm:num_requests_waiting, the best static prefill:decode split and a rate oracle;
then P/D against an aggregated deployment of the same GPUs, with and without selective
disaggregation. Every parameter is in :class:`Hardware`, :class:`Model`, :class:`Slo` and
:class:`Timing`, with its source (bench/README-autoscale.md explains them). Deterministic per seed.

Engine model (per replica of ``gpus`` = TP x PP GPUs):
- a step processes one token of every running sequence plus, if prefill work is queued, a chunk
  of prompt tokens up to ``max_batched_tokens`` (vLLM chunked prefill);
- step time = overhead + max(compute, memory): compute = FLOPs / (peak x MFU), FLOPs = 2 x params
  x tokens + 2 x layers x d_model x (attention context) (performance.md section 2); memory =
  (weight bytes + KV bytes of every running context) / (HBM bandwidth x efficiency);
- decode-only stretches are integrated in closed form (the context, hence the step time, grows
  linearly) instead of step by step, which keeps a 30-minute trace at a few seconds;
- KV hand-off = setup + prompt tokens x KV bytes per token / link bandwidth; while it runs the
  request counts as *deferred waiting* on the decoder, as NIXL pulls do in vLLM 0.32;
- a removed replica drains (vLLM --shutdown-timeout): no new requests, in-flight ones finish.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from tandem.autoscale.config import PolicyConfig, PoolPolicy
from tandem.autoscale.drain import deletion_costs, victims
from tandem.autoscale.observation import PodSample, observe
from tandem.autoscale.policy import PolicyMemory, PoolState, evaluate

# ============================================================================ parameters


@dataclass(frozen=True)
class Hardware:
    """One NVIDIA H100 SXM (performance.md section 0 row 27, section 2)."""

    peak_flops: float = 989e12  # BF16 dense [perf #27]
    mfu: float = 0.5  # the model FLOPs utilisation performance.md's break-even table assumes
    hbm_bw: float = 3.35e12  # HBM3 [perf #27]
    hbm_eff: float = 0.8  # assumption; with the overhead below a 32 x 3k batch steps in ~12 ms,
    # inside the 10-15 ms measured for 7-8B on H100 [perf #28, llm-d-inference-sim]
    step_overhead: float = 1e-3  # assumption: scheduler, sampling, launch per step
    mem: float = 80e9
    mem_util: float = 0.9  # vLLM --gpu-memory-utilization default
    activation_reserve: float = 4e9  # assumption: activations, CUDA graphs
    kv_link_bw: float = 45e9  # one 400G NIC, effective [perf section 2 link table]
    kv_setup: float = 3e-3  # NIXL per-request launch overhead [perf #13]
    tp_efficiency: float = 0.9  # assumption for TP > 1 (all-reduce cost)


@dataclass(frozen=True)
class Model:
    """Llama-3.1-8B-Instruct in BF16 (config.json: 32 layers, 8 KV heads, head_dim 128)."""

    params: float = 8.03e9
    bytes_per_param: int = 2
    layers: int = 32
    d_model: int = 4096
    kv_bytes_per_token: int = 131_072  # 128 KiB [perf #8]

    def flops(self, start: int, tokens: int) -> float:
        """Prefill FLOPs of prompt tokens start..start+tokens: 2PT + 2Ld((s+T)^2 - s^2)."""
        end = start + tokens
        return 2 * self.params * tokens + 2 * self.layers * self.d_model * (
            end * end - start * start
        )


@dataclass(frozen=True)
class Slo:
    """Dynamo SLA planner's default targets `--ttft 500 --itl 50` (performance.md 3.1)."""

    ttft: float = 0.5
    itl: float = 0.05  # the request's mean inter-token latency (TPOT), as DistServe counts it


@dataclass(frozen=True)
class Timing:
    cold_start: float = 60.0  # ~59 s to first response in a k8s pod, 8B [perf #18, vllm#20264]
    tandem_interval: float = 10.0  # spec.autoscaling.interval default
    hpa_sync: float = 15.0  # HPA sync period; KEDA pollingInterval 15 (production-stack)
    prom_scrape: float = 15.0  # Prometheus scrape interval behind KEDA's query
    keda_threshold: float = 5.0  # vllm:num_requests_waiting > 5 (production-stack, dataplane 5)
    hpa_down_window: float = 300.0  # HPA default scaleDown.stabilizationWindowSeconds
    hpa_tolerance: float = 0.1  # HPA default tolerance
    oracle_interval: float = 10.0
    oracle_utilisation: float = 0.75  # headroom the oracle keeps for Poisson bursts


HW, MODEL, SLO, TIMING = Hardware(), Model(), Slo(), Timing()


@dataclass(frozen=True)
class EngineConfig:
    gpus: int = 1  # tensor x pipeline
    max_num_seqs: int = 256  # vLLM default
    max_batched_tokens: int = 8192  # prefill pool; aggregated engines use 2048 for ITL

    def speed(self) -> float:
        return self.gpus * (HW.tp_efficiency if self.gpus > 1 else 1.0)

    def kv_capacity(self) -> int:
        free = self.gpus * HW.mem * HW.mem_util - MODEL.params * MODEL.bytes_per_param
        return int((free - self.gpus * HW.activation_reserve) / MODEL.kv_bytes_per_token)

    def mem_time(self) -> tuple[float, float]:
        """(a, b): a memory-bound step takes a + b x (sum of running contexts) seconds."""
        bw = HW.hbm_bw * HW.hbm_eff * self.speed()
        return HW.step_overhead + MODEL.params * MODEL.bytes_per_param / bw, (
            MODEL.kv_bytes_per_token / bw
        )

    def compute_time(self, flops: float) -> float:
        return flops / (HW.peak_flops * HW.mfu * self.speed())


def kv_transfer_time(tokens: int) -> float:
    return HW.kv_setup + tokens * MODEL.kv_bytes_per_token / HW.kv_link_bw


# ================================================================================ engine


class Sim:
    """A heap of timed callbacks."""

    def __init__(self) -> None:
        self.now = 0.0
        self._q: list[tuple[float, int, Callable[..., None], tuple[object, ...]]] = []
        self._n = 0

    def at(self, t: float, fn: Callable[..., None], *args: object) -> None:
        self._n += 1
        heapq.heappush(self._q, (t, self._n, fn, args))

    def run(self, until: float) -> None:
        q = self._q
        while q and q[0][0] <= until:
            t, _, fn, args = heapq.heappop(q)
            self.now = t
            fn(*args)
        self.now = until


@dataclass(eq=False)
class Req:
    id: int
    arrival: float
    isl: int
    osl: int
    prefilled: int = 0
    reserved: bool = False
    v_start: float = 0.0
    t_first: float | None = None
    t_done: float | None = None

    def ok(self) -> bool:
        if self.t_first is None or self.t_done is None:
            return False
        itl = (self.t_done - self.t_first) / max(self.osl - 1, 1)
        return self.t_first - self.arrival <= SLO.ttft and itl <= SLO.itl


class Engine:
    """One vLLM replica. role: "prefill" (hands KV off) or "both" (prefills and decodes)."""

    def __init__(self, sim: Sim, svc: Service, role: str, cfg: EngineConfig, name: str) -> None:
        self.sim, self.svc, self.role, self.cfg, self.name = sim, svc, role, cfg, name
        self.a, self.b = cfg.mem_time()
        self.kv_cap = cfg.kv_capacity()
        self.ready = False
        self.draining = False
        self.started = sim.now
        self.ready_since = math.inf
        self.prefill_q: deque[Req] = deque()
        self.backlog = 0  # prompt tokens not yet prefilled here
        self.decode_wait: deque[Req] = deque()
        self.transfers_in = 0
        self.completed = 0  # vllm:request_success_total
        self.heap: list[tuple[float, int, Req]] = []
        self.batch = 0
        self.vstep = 0.0
        self.t0 = 0.0
        self.sum_isl = 0.0
        self.sum_vstart = 0.0
        self.kv_reserved = 0
        self.mode = "idle"  # idle | step | fluid
        self.version = 0
        self.plan: list[tuple[Req, int]] = []
        self.first_pending: list[Req] = []

    # ---- bookkeeping
    def ctx(self) -> float:
        return self.sum_isl + self.batch * self.vstep - self.sum_vstart

    def busy(self) -> bool:
        return bool(self.prefill_q or self.decode_wait or self.transfers_in or self.batch)

    def load(self) -> float:
        return self.batch + len(self.decode_wait) + self.transfers_in + len(self.prefill_q)

    def prefill_backlog(self) -> int:
        return self.backlog

    def enqueue(self, r: Req) -> None:
        self.prefill_q.append(r)
        self.backlog += r.isl - r.prefilled
        self.kick()

    def _advance(self, t: float) -> None:
        """Integrate a decode-only stretch up to t (closed form: context grows linearly)."""
        dt = t - self.t0
        self.t0 = t
        if self.batch == 0 or dt <= 0:
            return
        lin = self.a + self.b * self.ctx() - self.b * self.batch / 2
        quad = self.b * self.batch / 2
        k = (-lin + math.sqrt(lin * lin + 4 * quad * dt)) / (2 * quad)
        self.vstep += k

    def _time_for(self, k: float) -> float:
        return (self.a + self.b * self.ctx()) * k + self.b * self.batch * k * (k - 1) / 2

    # ---- work arrives
    def kick(self) -> None:
        if not self.ready:
            return
        if self.mode == "step":
            return  # picked up at the next step boundary, as in vLLM
        if self.mode == "fluid":
            self._advance(self.sim.now)
            self.version += 1
        self.mode = "idle"
        self._start()

    def kv_arrived(self, r: Req) -> None:
        self.transfers_in -= 1
        self.decode_wait.append(r)
        self.kick()

    # ---- scheduling
    def _fits(self, r: Req) -> bool:
        return self.kv_reserved + r.isl + r.osl <= self.kv_cap

    def _admit(self) -> list[Req]:
        new = []
        while self.decode_wait and self.batch < self.cfg.max_num_seqs:
            r = self.decode_wait[0]
            if not r.reserved and not self._fits(r):
                break
            self.decode_wait.popleft()
            if not r.reserved:
                self.kv_reserved += r.isl + r.osl
                r.reserved = True
            self._join(r, generated=0)
            new.append(r)
        return new

    def _join(self, r: Req, generated: int) -> None:
        r.v_start = self.vstep - generated
        self.batch += 1
        self.sum_isl += r.isl
        self.sum_vstart += r.v_start
        heapq.heappush(self.heap, (r.v_start + r.osl, r.id, r))

    def _start(self) -> None:
        now = self.sim.now
        self.t0 = now
        new = self._admit()
        plan: list[tuple[Req, int]] = []
        budget = self.cfg.max_batched_tokens - self.batch
        for r in self.prefill_q:
            if budget <= 0:
                break
            if self.role == "both" and not r.reserved:
                if not self._fits(r):
                    break
                self.kv_reserved += r.isl + r.osl
                r.reserved = True
            n = min(budget, r.isl - r.prefilled)
            plan.append((r, n))
            budget -= n
        if plan:
            flops = sum(MODEL.flops(r.prefilled, n) for r, n in plan)
            flops += 2 * MODEL.params * self.batch
            dt = max(HW.step_overhead + self.cfg.compute_time(flops), self.a + self.b * self.ctx())
            self.mode, self.plan, self.first_pending = "step", plan, new
            self.version += 1
            self.sim.at(now + dt, self._end_step, self.version)
        elif self.batch:
            for r in new:
                r.t_first = now + self._time_for(1)
            k = max(self.heap[0][0] - self.vstep, 1e-9)
            self.mode = "fluid"
            self.version += 1
            self.sim.at(now + self._time_for(k), self._end_fluid, self.version)
        else:
            self.mode = "idle"
            self.svc.engine_idle(self)

    def _end_step(self, version: int) -> None:
        if version != self.version:
            return
        now = self.sim.now
        self.vstep += 1
        for r in self.first_pending:
            r.t_first = now
        for r, n in self.plan:
            r.prefilled += n
            self.backlog -= n
        done = [r for r, _ in self.plan if r.prefilled >= r.isl]
        for r in done:
            self.prefill_q.remove(r)
            if self.role == "prefill":
                self.completed += 1
                self.svc.prefill_done(r)
            else:
                r.t_first = now  # the last prefill chunk samples the first token
                self._join(r, generated=1)
        self.plan, self.first_pending = [], []
        self._complete()
        self.mode = "idle"
        self._start()

    def _end_fluid(self, version: int) -> None:
        if version != self.version:
            return
        self._advance(self.sim.now)
        self.vstep = max(self.vstep, self.heap[0][0])  # absorb float error at the boundary
        self._complete()
        self.mode = "idle"
        self._start()

    def _complete(self) -> None:
        now = self.sim.now
        while self.heap and self.heap[0][0] <= self.vstep + 1e-6:
            _, _, r = heapq.heappop(self.heap)
            r.t_done = now
            self.batch -= 1
            self.sum_isl -= r.isl
            self.sum_vstart -= r.v_start
            self.kv_reserved -= r.isl + r.osl
            self.completed += 1
            self.svc.finished(r)
        if self.batch == 0:
            self.sum_isl = self.sum_vstart = 0.0

    # ---- what /metrics would say now
    def sample(self) -> PodSample:
        if self.mode == "fluid":
            self._advance(self.sim.now)
        in_step = {id(r) for r, _ in self.plan}
        waiting = len(self.prefill_q) - len(in_step) + len(self.decode_wait) + self.transfers_in
        used = self.ctx() + sum(r.prefilled for r in self.prefill_q if r.reserved)
        return PodSample(
            pod=self.name,
            waiting=float(waiting),
            running=float(self.batch + len(in_step)),
            kv_usage=min(1.0, used / self.kv_cap),
            deferred=float(self.transfers_in),
            completed=float(self.completed),
        )


# ======================================================================= service, pools


@dataclass
class Pod:
    engine: Engine | None  # None while Pending (no free GPUs)
    pool: Pool


class Cluster:
    """Nodes with a fixed number of GPUs; pods beyond it stay Pending, first come first served."""

    def __init__(self, gpus: int) -> None:
        self.free = gpus
        self.pending: deque[Pod] = deque()
        self.gpu_seconds = 0.0


class Pool:
    """A Deployment of engines: replicas, cold start, scale-down with drain."""

    def __init__(self, svc: Service, role: str, cfg: EngineConfig) -> None:
        self.svc, self.role, self.cfg = svc, role, cfg
        self.pods: list[Pod] = []
        self.events = 0
        self.serial = 0

    @property
    def replicas(self) -> int:
        return len(self.pods)

    def ready_engines(self) -> list[Engine]:
        return [p.engine for p in self.pods if p.engine is not None and p.engine.ready]

    def scale(self, n: int, *, cost_aware: bool) -> None:
        if n == self.replicas:
            return
        self.events += 1
        while self.replicas < n:
            pod = Pod(None, self)
            self.pods.append(pod)
            self.svc.cluster.pending.append(pod)
        if self.replicas > n:
            self._shrink(self.replicas - n, cost_aware)
        self.svc.schedule_pending()

    def _shrink(self, k: int, cost_aware: bool) -> None:
        # ReplicaSet ranking: pending first, then not ready, then (ready) lowest deletion cost,
        # then the most recently ready (the controller's default without costs).
        def rank(p: Pod) -> tuple[int, float]:
            if p.engine is None:
                return (0, 0.0)
            if not p.engine.ready:
                return (1, -p.engine.started)
            return (2, -p.engine.ready_since)

        order = sorted(self.pods, key=rank)
        if cost_aware:
            ready = [p for p in order if p.engine is not None and p.engine.ready]
            others = [p for p in order if p not in ready]
            names = {p.engine.name: p for p in ready if p.engine}
            costs = deletion_costs(list(names), [p.engine.sample() for p in ready if p.engine])
            order = others + [names[n] for n in victims(costs, len(costs))]
        for pod in order[:k]:
            self.pods.remove(pod)
            if pod.engine is None:
                self.svc.cluster.pending.remove(pod)
            else:
                self.svc.drain(pod.engine)

    def start(self, pod: Pod) -> None:
        self.serial += 1
        eng = Engine(
            self.svc.sim,
            self.svc,
            "prefill" if self.role == "prefill" else "both",
            self.cfg,
            f"{self.role}-{self.serial}",
        )
        pod.engine = eng
        self.svc.sim.at(self.svc.sim.now + self.svc.cold_start, self.svc.engine_ready, eng)


class Service:
    """Router + pools + cluster of one InferenceService."""

    def __init__(
        self,
        sim: Sim,
        *,
        gpus: int,
        prefill: EngineConfig | None,
        decode: EngineConfig,
        selective_below: int = 0,
        cold_start: float = TIMING.cold_start,
    ) -> None:
        self.sim, self.cluster, self.cold_start = sim, Cluster(gpus), cold_start
        self.prefill = Pool(self, "prefill", prefill) if prefill else None
        self.decode = Pool(self, "decode", decode)
        self.selective_below = selective_below
        self.pending_prefill: deque[Req] = deque()
        self.pending_decode: deque[Req] = deque()
        self.done: list[Req] = []
        self.draining: set[Engine] = set()
        self.account_until = math.inf

    def _charge(self, eng: Engine) -> None:
        end, start = min(self.sim.now, self.account_until), min(eng.started, self.account_until)
        self.cluster.gpu_seconds += (end - start) * eng.cfg.gpus

    # ---- pods
    def warm(self, pool: Pool, n: int) -> None:
        """Start n replicas that are ready at once (the static deployments and t=0)."""
        for _ in range(n):
            pod = Pod(None, pool)
            pool.pods.append(pod)
            self.cluster.free -= pool.cfg.gpus
            pool.start(pod)
            assert pod.engine is not None
            self.engine_ready(pod.engine)

    def schedule_pending(self) -> None:
        c = self.cluster
        while c.pending and c.free >= c.pending[0].pool.cfg.gpus:
            pod = c.pending.popleft()
            c.free -= pod.pool.cfg.gpus
            pod.pool.start(pod)

    def engine_ready(self, eng: Engine) -> None:
        if eng.draining:
            return
        eng.ready, eng.ready_since, eng.t0 = True, self.sim.now, self.sim.now
        while self.pending_prefill and self.prefill and self.prefill.ready_engines():
            self.arrive(self.pending_prefill.popleft())
        while self.pending_decode and self.decode.ready_engines():
            self.prefill_done(self.pending_decode.popleft())

    def drain(self, eng: Engine) -> None:
        eng.draining = True
        if not eng.ready:
            self.release(eng)
        else:
            self.draining.add(eng)
            self.engine_idle(eng)

    def engine_idle(self, eng: Engine) -> None:
        if eng.draining and eng in self.draining and not eng.busy() and eng.mode == "idle":
            self.draining.discard(eng)
            self.release(eng)

    def release(self, eng: Engine) -> None:
        eng.ready = False
        self.cluster.free += eng.cfg.gpus
        self._charge(eng)
        self.schedule_pending()

    def finish_accounting(self) -> None:
        pools = [self.decode] + ([self.prefill] if self.prefill else [])
        engines = [p.engine for pool in pools for p in pool.pods if p.engine]
        for e in [*engines, *self.draining]:
            self._charge(e)

    # ---- routing (least outstanding work; NOT a model of any particular router's tie-breaks)
    def _serving(self, pool: Pool) -> list[Engine]:
        return [e for e in pool.ready_engines() if not e.draining]

    def arrive(self, r: Req) -> None:
        local = self.prefill is None or r.isl < self.selective_below
        if local:
            engines = self._serving(self.decode)
            if not engines:
                self.pending_decode.append(r)
                return
            min(engines, key=Engine.load).enqueue(r)
            return
        assert self.prefill is not None
        engines = self._serving(self.prefill)
        if not engines:
            self.pending_prefill.append(r)
            return
        min(engines, key=Engine.prefill_backlog).enqueue(r)

    def prefill_done(self, r: Req) -> None:
        if r.prefilled < r.isl:  # parked before prefill (no decode engine for a local prefill)
            self.arrive(r)
            return
        engines = self._serving(self.decode)
        if not engines:
            self.pending_decode.append(r)
            return
        eng = min(engines, key=Engine.load)
        eng.transfers_in += 1
        self.sim.at(self.sim.now + kv_transfer_time(r.isl), eng.kv_arrived, r)

    def finished(self, r: Req) -> None:
        self.done.append(r)

    # ---- what the autoscaler sees
    def observe_pool(self, pool: Pool) -> tuple[PoolState, list[PodSample]]:
        ready = self._serving(pool)
        return PoolState(pool.replicas, len(ready)), [e.sample() for e in ready]


# =============================================================================== traces


@dataclass(frozen=True)
class Trace:
    name: str
    duration: float
    rate: Callable[[float], float]
    peak: float
    isl: tuple[int, int] = (2000, 4000)  # Dynamo planner test: ISL/OSL 3000/300 [perf #14]
    osl: tuple[int, int] = (150, 450)


def step_trace(duration: float) -> Trace:
    # 8 -> 18 req/s (Dynamo planner e2e test step, performance.md 3.1 / 3.3)
    return Trace("step 8->18", duration, lambda t: 8.0 if t < duration / 3 else 18.0, 18.0)


def sine_trace(duration: float, period: float) -> Trace:
    # 5 -> 45 req/s sinusoid (Dynamo sin_synth, performance.md 0 row 14)
    def rate(t: float) -> float:
        return 25.0 - 20.0 * math.cos(2 * math.pi * t / period)

    return Trace(f"sine 5->45/{period:.0f}s", duration, rate, 45.0)


def bursty_trace(duration: float, seed: int) -> Trace:
    # 8 req/s with 30 s bursts to 35 req/s at Poisson times (mean gap 150 s): a BurstGPT-like
    # on/off shape, scaled to the same GPUs.
    rng = random.Random(seed * 7919 + 1)
    bursts, t = [], rng.expovariate(1 / 150)
    while t < duration:
        bursts.append(t)
        t += 30 + rng.expovariate(1 / 150)

    def rate(t: float) -> float:
        return 35.0 if any(b <= t < b + 30 for b in bursts) else 8.0

    return Trace("bursty 8/35", duration, rate, 35.0)


def arrivals(trace: Trace, seed: int) -> list[Req]:
    """Non-homogeneous Poisson arrivals by thinning; prompt/output lengths uniform."""
    rng = random.Random(seed)
    out, t, i = [], 0.0, 0
    while True:
        t += rng.expovariate(trace.peak)
        if t >= trace.duration:
            return out
        if rng.random() * trace.peak <= trace.rate(t):
            out.append(Req(i, t, rng.randint(*trace.isl), rng.randint(*trace.osl)))
            i += 1


# ========================================================================= controllers

MAX_GPUS = 16
POOL_MAX = 12


def tandem_config(max_gpus: int = MAX_GPUS) -> PolicyConfig:
    """The spec a user would write: defaults plus bounds (api/v1alpha1.py defaults)."""
    return PolicyConfig(
        prefill=PoolPolicy(min_replicas=1, max_replicas=POOL_MAX),
        decode=PoolPolicy(min_replicas=1, max_replicas=POOL_MAX, target_kv_cache_usage=0.8),
        ratio_min=0.25,
        ratio_max=4.0,
        max_gpus=max_gpus,
        stale_after_s=30,
    )


class Tandem:
    name = "tandem"
    cost_aware = True

    def __init__(self, svc: Service, cfg: PolicyConfig) -> None:
        self.svc, self.cfg, self.memory = svc, cfg, PolicyMemory()

    def start(self) -> None:
        self.svc.sim.at(TIMING.tandem_interval, self.tick)

    def tick(self) -> None:
        svc, now = self.svc, self.svc.sim.now
        assert svc.prefill is not None
        (ps, psamples), (ds, dsamples) = svc.observe_pool(svc.prefill), svc.observe_pool(svc.decode)
        obs = {
            "prefill": observe("prefill", psamples, now, router_pending=len(svc.pending_prefill)),
            "decode": observe("decode", dsamples, now),
        }
        ev = evaluate(self.cfg, {"prefill": ps, "decode": ds}, obs, self.memory, now)
        self.memory = ev.memory
        svc.prefill.scale(ev.prefill.desired, cost_aware=True)
        svc.decode.scale(ev.decode.desired, cost_aware=True)
        svc.sim.at(now + TIMING.tandem_interval, self.tick)


class Hpa:
    """KEDA ScaledObject per pool on vllm:num_requests_waiting (threshold 5), HPA defaults.

    KEDA exposes the Prometheus query as an External metric with AverageValue 5, so the HPA
    wants ceil(sum(waiting) / 5) replicas; Prometheus scrapes every 15 s and the HPA syncs every
    15 s (half a period of lag on average); 10% tolerance; scale-up max(+100%, +4 pods) per
    15 s, no up window; scale-down takes the highest recommendation of the last 300 s. It does
    not know the GPU budget (pods beyond it stay Pending) nor the prefill:decode ratio.
    """

    name = "hpa-keda"

    def __init__(self, svc: Service, lo: int = 1, hi: int = POOL_MAX) -> None:
        self.svc, self.lo, self.hi = svc, lo, hi
        self.scraped: dict[str, float] = {"prefill": 0.0, "decode": 0.0}
        self.history: dict[str, list[tuple[float, int]]] = {"prefill": [], "decode": []}

    def start(self) -> None:
        self.svc.sim.at(TIMING.prom_scrape / 2, self.scrape)
        self.svc.sim.at(TIMING.hpa_sync, self.sync)

    def _pools(self) -> dict[str, Pool]:
        assert self.svc.prefill is not None
        return {"prefill": self.svc.prefill, "decode": self.svc.decode}

    def scrape(self) -> None:
        for role, pool in self._pools().items():
            self.scraped[role] = sum(s.waiting for s in self.svc.observe_pool(pool)[1])
        self.svc.sim.at(self.svc.sim.now + TIMING.prom_scrape, self.scrape)

    def sync(self) -> None:
        now = self.svc.sim.now
        for role, pool in self._pools().items():
            cur = pool.replicas
            total = self.scraped[role]
            # External metric, AverageValue: usage ratio against the spec's replicas.
            ratio = (total / max(cur, 1)) / TIMING.keda_threshold
            if abs(ratio - 1) <= TIMING.hpa_tolerance:
                rec = cur
            else:
                rec = math.ceil(total / TIMING.keda_threshold)
            rec = min(max(rec, self.lo), self.hi)
            hist = [(t, r) for t, r in self.history[role] if now - t < TIMING.hpa_down_window]
            hist.append((now, rec))
            self.history[role] = hist
            if rec > cur:  # no up window; at most max(+100 %, +4 pods) per period
                desired = min(rec, max(2 * cur, cur + 4))
            else:  # the highest recommendation of the window; 100 % may go at once
                desired = min(cur, max(r for _, r in hist))
            pool.scale(desired, cost_aware=False)
        self.svc.sim.at(now + TIMING.hpa_sync, self.sync)


@dataclass(frozen=True)
class Capacity:
    """Analytic per-replica capacity from the same parameters (oracle and static split guess)."""

    prefill_rps: float
    decode_rps: float

    @staticmethod
    def of(trace: Trace, p: EngineConfig, d: EngineConfig) -> Capacity:
        isl = sum(trace.isl) / 2
        osl = sum(trace.osl) / 2
        t_prefill = HW.step_overhead + p.compute_time(MODEL.flops(0, int(isl)))
        a, b = d.mem_time()
        best = 0.0
        for c in range(1, d.max_num_seqs + 1):
            step = a + b * c * (isl + osl / 2)
            if step > SLO.itl * 0.8 or c * (isl + osl) > d.kv_capacity():
                break
            best = c / (osl * step)
        return Capacity(1 / t_prefill, best)

    def need(self, rate: float, util: float) -> tuple[int, int]:
        return (
            max(1, math.ceil(rate / (self.prefill_rps * util))),
            max(1, math.ceil(rate / (self.decode_rps * util))),
        )


class Oracle:
    """Knows the trace's rate: keeps, at every moment, capacity for the peak rate between now
    and one cold start (plus a tick and a margin) ahead, at the same utilisation target as the
    static split guess. Perfect foresight of the rate, not of the Poisson arrivals."""

    name = "oracle"

    def __init__(self, svc: Service, trace: Trace, cap: Capacity, max_gpus: int) -> None:
        self.svc, self.trace, self.cap, self.max_gpus = svc, trace, cap, max_gpus

    def start(self) -> None:
        self.tick()

    def tick(self) -> None:
        now = self.svc.sim.now
        ahead = TIMING.cold_start + TIMING.oracle_interval + 20
        horizon = [now + s for s in range(0, int(ahead) + 1, 5)]
        rate = max(self.trace.rate(t) for t in horizon)
        p, d = self.cap.need(rate, TIMING.oracle_utilisation)
        while p + d > self.max_gpus:  # share a short budget in proportion to need
            p, d = (p - 1, d) if p / max(d, 1) >= 1 else (p, d - 1)
        assert self.svc.prefill is not None
        self.svc.prefill.scale(min(p, POOL_MAX), cost_aware=True)
        self.svc.decode.scale(min(d, POOL_MAX), cost_aware=True)
        self.svc.sim.at(now + TIMING.oracle_interval, self.tick)


# ================================================================================= runs


@dataclass
class Result:
    label: str
    total: int
    ok: int
    duration: float
    gpu_seconds: float
    events: int
    ttft_p95: float = 0.0
    itl_p95: float = 0.0
    total_after: int = 0
    ok_after: int = 0

    @property
    def attainment(self) -> float:
        return self.ok / self.total if self.total else 1.0

    @property
    def attainment_after(self) -> float:
        """Attainment of requests that arrived after the warm-up (the policy has learnt)."""
        return self.ok_after / self.total_after if self.total_after else 1.0

    @property
    def goodput(self) -> float:
        return self.ok / self.duration

    @property
    def mean_gpus(self) -> float:
        return self.gpu_seconds / self.duration


def _p95(xs: list[float]) -> float:
    if not xs:
        return math.inf
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(0.95 * len(xs)))]


def simulate(
    label: str,
    trace: Trace,
    seed: int,
    *,
    controller: str,
    split: tuple[int, int] = (1, 1),
    gpus: int = MAX_GPUS,
    prefill_cfg: EngineConfig | None = EngineConfig(),
    decode_cfg: EngineConfig = EngineConfig(),
    selective_below: int = 0,
    requests: list[Req] | None = None,
    tail: float = 120.0,
    warmup: float = 300.0,
) -> Result:
    """Run one deployment over one trace. controller: static | tandem | hpa | oracle.

    GPU-seconds count until the end of the trace; the tail only lets requests finish.
    """
    sim = Sim()
    svc = Service(
        sim, gpus=gpus, prefill=prefill_cfg, decode=decode_cfg, selective_below=selective_below
    )
    svc.account_until = trace.duration
    if svc.prefill is not None:
        svc.warm(svc.prefill, split[0])
    svc.warm(svc.decode, split[1])
    reqs = requests if requests is not None else arrivals(trace, seed)
    for r in reqs:
        sim.at(r.arrival, svc.arrive, r)
    ctrl: Tandem | Hpa | Oracle | None = None
    if controller == "tandem":
        ctrl = Tandem(svc, tandem_config(gpus))
    elif controller == "hpa":
        ctrl = Hpa(svc)
    elif controller == "oracle":
        assert prefill_cfg is not None
        ctrl = Oracle(svc, trace, Capacity.of(trace, prefill_cfg, decode_cfg), gpus)
    if ctrl is not None:
        ctrl.start()
    sim.run(trace.duration + tail)
    svc.finish_accounting()
    events = svc.decode.events + (svc.prefill.events if svc.prefill else 0)
    done = svc.done
    ttfts = [r.t_first - r.arrival for r in done if r.t_first is not None]
    itls = [
        (r.t_done - r.t_first) / max(r.osl - 1, 1)
        for r in done
        if r.t_first is not None and r.t_done is not None
    ]
    return Result(
        label,
        total=len(reqs),
        ok=sum(r.ok() for r in done),
        duration=trace.duration,
        gpu_seconds=svc.cluster.gpu_seconds,
        events=events,
        ttft_p95=_p95(ttfts),
        itl_p95=_p95(itls),
        total_after=sum(r.arrival >= warmup for r in reqs),
        ok_after=sum(r.ok() for r in reqs if r.arrival >= warmup),
    )


def best_static(trace: Trace, seed: int, gpus: int, quick: bool, spread: int = 1) -> Result:
    """Search prefill:decode splits of ``gpus`` single-GPU replicas; best goodput wins.

    Quick mode tries the analytic guess (split in proportion to per-request work) and its
    ``spread`` neighbours on each side; the full run tries every split.
    """
    cap = Capacity.of(trace, EngineConfig(), EngineConfig())
    w_p, w_d = 1 / cap.prefill_rps, 1 / cap.decode_rps
    guess = min(gpus - 1, max(1, round(gpus * w_p / (w_p + w_d))))
    candidates = (
        sorted({min(gpus - 1, max(1, guess + k)) for k in range(-spread, spread + 1)})
        if quick
        else list(range(1, gpus))
    )
    results = [
        simulate(
            f"static {p}P{gpus - p}D",
            trace,
            seed,
            controller="static",
            split=(p, gpus - p),
            gpus=gpus,
        )
        for p in candidates
    ]
    return max(results, key=lambda r: (r.goodput, -r.gpu_seconds))


def initial_split(trace: Trace) -> tuple[int, int]:
    cap = Capacity.of(trace, EngineConfig(), EngineConfig())
    return cap.need(trace.rate(0.0), TIMING.oracle_utilisation)


# ============================================================================ reporting


def _ratio(a: float, b: float) -> str:
    if b == 0:
        return "  inf" if a else "    -"
    return f"{a / b:5.2f}"


def autoscaler_table(traces: list[Trace], seed: int, quick: bool) -> None:
    print(
        f"== Autoscaling one InferenceService: Llama-3.1-8B BF16, H100, TP1 replicas, "
        f"maxGPUs {MAX_GPUS}, SLO TTFT {SLO.ttft * 1000:.0f} ms + TPOT {SLO.itl * 1000:.0f} ms, "
        f"cold start {TIMING.cold_start:.0f} s, seed {seed}"
    )
    print(
        f"{'trace':<17} {'deployment':<22} {'SLO att':>7} {'>300s':>6} {'goodput':>7} "
        f"{'GPUs':>5} {'GPU-s':>6} {'events':>6} {'TTFT p95':>9} {'TPOT p95':>8}"
    )
    ratios: list[str] = []
    for trace in traces:
        init = initial_split(trace)
        runs = [
            simulate("tandem", trace, seed, controller="tandem", split=init),
            simulate("hpa/keda waiting>5", trace, seed, controller="hpa", split=init),
            simulate("oracle (knows rate)", trace, seed, controller="oracle", split=init),
        ]
        # The whole budget all the time: any sane split meets the SLO, so quick mode tries one.
        budget = best_static(trace, seed, MAX_GPUS, quick, spread=0)
        budget.label = f"best {budget.label}"
        same = best_static(trace, seed, max(2, round(runs[0].mean_gpus)), quick)
        same.label = f"best {same.label}"
        runs += [budget, same]
        for r in runs:
            print(
                f"{trace.name:<17} {r.label:<22} {r.attainment:7.1%} {r.attainment_after:6.1%} "
                f"{r.goodput:7.2f} {r.mean_gpus:5.1f} {r.gpu_seconds:6.0f} {r.events:6d} "
                f"{r.ttft_p95:8.2f}s {r.itl_p95 * 1000:6.1f}ms"
            )
        t = runs[0]
        for b in runs[1:]:
            ratios.append(
                f"{trace.name:<17} vs {b.label:<22} "
                f"{_ratio(t.attainment, b.attainment)} {_ratio(t.attainment_after, b.attainment_after)} "
                f"{_ratio(t.goodput, b.goodput)} "
                f"{_ratio(t.goodput / t.mean_gpus, b.goodput / b.mean_gpus)} "
                f"{_ratio(t.gpu_seconds, b.gpu_seconds)} {_ratio(t.events, b.events)}"
            )
    print(
        f"\nTandem / baseline     {'':<22} {'att':>5} {'>300s':>5} {'gput':>5} "
        f"{'g/GPU':>5} {'GPU-s':>5} {'evnts':>5}"
    )
    for line in ratios:
        print(line)


def mixed_requests(rate: float, duration: float, seed: int, long_share: float) -> list[Req]:
    """Poisson arrivals; a share of long prompts (6-10k tokens), the rest short (100-500)."""
    rng = random.Random(seed)
    out, t = [], 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= duration:
            return out
        isl = rng.randint(6000, 10000) if rng.random() < long_share else rng.randint(100, 500)
        out.append(Req(len(out), t, isl, rng.randint(100, 300)))


def pd_table(seed: int, quick: bool) -> None:
    """Goodput capacity (DistServe's metric: the highest rate served with >= 90 % SLO
    attainment) of P/D, P/D with selective disaggregation and aggregated serving."""
    gpus = 8
    duration = 90.0 if quick else 240.0
    iters = 4 if quick else 7
    agg_cfg = EngineConfig(max_batched_tokens=2048)  # ITL-friendly chunk for mixed batches
    # Share of long prompts (6-10k tokens, ISL:OSL >= 10:1, RAG-like); the rest are chat turns.
    mixes = {"long-prompt mix": 0.8, "short-prompt mix": 0.2}
    print(
        f"\n== P/D vs aggregated on the same {gpus} H100s (TP1 engines), Poisson arrivals, "
        f"{duration:.0f} s per point, OSL 100-300, selective: prompts < 1024 tokens skip prefill"
    )
    print(
        f"{'mix':<17} {'deployment':<26} {'capacity':>8}   at the aggregated capacity: "
        f"{'SLO att':>7} {'TTFT p95':>8} {'TPOT p95':>8}"
    )
    for mix, share in mixes.items():

        def run(rate: float, label: str, share: float = share, **kw: object) -> Result:
            trace = Trace(label, duration, lambda t: rate, rate)
            reqs = mixed_requests(rate, duration, seed, share)
            return simulate(
                label,
                trace,
                seed,
                controller="static",
                gpus=gpus,
                requests=reqs,
                decode_cfg=agg_cfg,
                warmup=0.0,
                **kw,  # type: ignore[arg-type]
            )

        def capacity(label: str, **kw: object) -> float:
            lo, hi = 0.0, 1.0
            while run(hi, label, **kw).attainment >= 0.9 and hi < 256:
                lo, hi = hi, hi * 2
            for _ in range(iters):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if run(mid, label, **kw).attainment >= 0.9 else (lo, mid)
            return lo

        configs: dict[str, dict[str, object]] = {
            f"aggregated {gpus}x": {"prefill_cfg": None, "split": (0, gpus)}
        }
        ref = capacity("aggregated", **configs[f"aggregated {gpus}x"])
        splits = range(1, gpus)
        for name, sel in (("P/D", 0), ("P/D+selective", 1024)):
            at_ref = {p: run(ref, name, split=(p, gpus - p), selective_below=sel) for p in splits}
            p = max(at_ref, key=lambda k: (at_ref[k].attainment, at_ref[k].goodput))
            configs[f"{name} {p}P{gpus - p}D"] = {"split": (p, gpus - p), "selective_below": sel}
        rows = []
        for label, kw in configs.items():
            cap = ref if label.startswith("aggregated") else capacity(label, **kw)
            r = run(ref, label, **kw)
            rows.append((label, cap, r))
            print(
                f"{mix:<17} {label:<26} {cap:6.2f}/s   {'':<27}{r.attainment:7.1%} "
                f"{r.ttft_p95:7.2f}s {r.itl_p95 * 1000:6.1f}ms"
            )
        base_cap, base = rows[0][1], rows[0][2]
        for label, cap, r in rows[1:]:
            print(
                f"{mix:<17}   {label} / aggregated: capacity x{_ratio(cap, base_cap)}, "
                f"TPOT p95 x{_ratio(r.itl_p95, base.itl_p95)}, "
                f"TTFT p95 x{_ratio(r.ttft_p95, base.ttft_p95)}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter traces, local split search")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    started = time.perf_counter()
    if args.quick:
        traces = [step_trace(900.0), sine_trace(1200.0, 600.0), bursty_trace(900.0, args.seed)]
    else:
        traces = [step_trace(1800.0), sine_trace(1800.0, 600.0), bursty_trace(1800.0, args.seed)]
    autoscaler_table(traces, args.seed, args.quick)
    print(f"(autoscaling part: {time.perf_counter() - started:.0f} s)", flush=True)
    pd_table(args.seed, args.quick)
    print(f"\n(simulated in {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
