"""Router benchmark: Tandem's P/D router vs calling the engines directly vs vllm-router 0.1.17.

Not a test. Everything runs on loopback against fake engines that answer instantly
(`tests/fake_engine.py --instant`), so the numbers measure proxy mechanics only: request
parsing, the two hops, body copying and streaming. Three systems see the same engines, the same
closed-loop load generator and the same requests, interleaved cell by cell:

- `direct`: the client itself runs the NIXL protocol (prefill call, then decode call with the
  prefill's `kv_transfer_params`) — the baseline for the router's added latency;
- `tandem`: `python -m tandem.router --connector nixl` in front of the engines;
- `vllm-router`: the Rust `vllm-router==0.1.17 --vllm-pd-disaggregation` (NIXL protocol only),
  installed on first use into ~/.cache/tandem/vllm-router-venv.

Cells: concurrency 1, 64, 256; short (~100 B) and 220 KB prompts; streaming and not.
Per cell: requests/s, latency p50/p99 (to the last byte), TTFT p50 for streams; then Tandem's
figures as ratios: throughput vs direct and vs vllm-router, added p50/p99 latency vs direct.

    python bench/router_bench.py --quick          # < 60 s
    python bench/router_bench.py --duration 5     # longer cells
    python bench/router_bench.py --json out.json  # also write the raw numbers

The load generator shares the machine with the router and engines: on a small machine the
absolute numbers are bounded by it, so compare ratios within one run only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

# The router's own prefill request, so the direct baseline asks the engines the same thing.
from tandem.router.protocols.nixl import PREFILL_KV_PARAMS as PREFILL_KV

REPO = Path(__file__).resolve().parents[1]
FAKE_ENGINE = REPO / "tests" / "fake_engine.py"
VLLM_ROUTER_VERSION = "0.1.17"
VLLM_ROUTER_VENV = Path.home() / ".cache" / "tandem" / "vllm-router-venv"
MODEL = "tiny"
MAX_TOKENS = 8
#: Fewer completions than this in a cell make its percentiles and ratios meaningless.
MIN_SAMPLES = 20


# --- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_vllm_router() -> Path:
    """The vllm-router binary, installing the pinned version into its own venv if missing."""
    binary = VLLM_ROUTER_VENV / "bin" / "vllm-router"
    if binary.exists():
        return binary
    print(f"installing vllm-router=={VLLM_ROUTER_VERSION} into {VLLM_ROUTER_VENV} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VLLM_ROUTER_VENV)], check=True)
    pip = VLLM_ROUTER_VENV / "bin" / "pip"
    subprocess.run([str(pip), "install", "-q", f"vllm-router=={VLLM_ROUTER_VERSION}"], check=True)
    return binary


@dataclass
class Procs:
    """Child processes started by this script (and only those are stopped)."""

    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    log_dir: Path | None = None

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> int:
        out: Any = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = (self.log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=out)
        self.started.append(proc)
        return proc.pid

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.started:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def wait_http(session: aiohttp.ClientSession, url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with session.get(url) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} not ready within {timeout}s")


# --- load generation ----------------------------------------------------------------------


@dataclass
class CellResult:
    system: str
    prompt: str
    stream: bool
    concurrency: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    ttft_p50_ms: float | None
    cpu_ms_per_req: float | None = None
    error_kinds: dict[str, int] = field(default_factory=dict)


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def request_body(prompt: str, stream: bool) -> dict[str, Any]:
    return {"model": MODEL, "prompt": prompt, "max_tokens": MAX_TOKENS, "stream": stream}


async def read_answer(resp: aiohttp.ClientResponse, stream: bool, t0: float) -> float | None:
    """Consume the answer; return the time to the first body byte for streams."""
    if resp.status != 200:
        await resp.read()
        raise RuntimeError(f"status {resp.status}")
    if not stream:
        await resp.read()
        return None
    first: float | None = None
    async for _chunk in resp.content.iter_any():
        if first is None:
            first = time.perf_counter() - t0
    return first


class Client:
    """Sends one request to one system; `direct` runs both legs itself."""

    def __init__(
        self, session: aiohttp.ClientSession, system: str, url: str, engines: tuple[str, str]
    ) -> None:
        self.session = session
        self.system = system
        self.url = url
        self.prefill_url, self.decode_url = engines
        self.headers = {"Content-Type": "application/json"}

    async def one(self, raw: bytes, prefill_raw: bytes, stream: bool, rid: int) -> float | None:
        t0 = time.perf_counter()
        headers = {**self.headers, "X-Request-Id": f"bench-{rid}"}
        if self.system != "direct":
            async with self.session.post(self.url, data=raw, headers=headers) as resp:
                return await read_answer(resp, stream, t0)
        async with self.session.post(
            self.prefill_url + "/v1/completions", data=prefill_raw, headers=headers
        ) as resp:
            kv = (await resp.json())["kv_transfer_params"]
        decode_raw = b'{"kv_transfer_params":' + json.dumps(kv).encode() + b"," + raw[1:]
        async with self.session.post(
            self.decode_url + "/v1/completions", data=decode_raw, headers=headers
        ) as resp:
            return await read_answer(resp, stream, t0)


@dataclass
class Sample:
    """Raw measurements of one system in one window."""

    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    window: float = 0.0
    cpu: float = 0.0

    def add(self, other: Sample) -> None:
        self.latencies += other.latencies
        self.ttfts += other.ttfts
        for kind, n in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + n
        self.window += other.window
        self.cpu += other.cpu


async def run_window(
    client: Client, raw: bytes, prefill_raw: bytes, stream: bool, concurrency: int,
    seconds: float, warmup: float, extend: float, pid: int | None,
) -> Sample:  # fmt: skip
    """Closed loop: `concurrency` workers send back-to-back requests for one window.

    Only requests that *complete* inside the window count (throughput = completions / window).
    The window opens after `warmup` and lasts `seconds`, extended (up to `extend` times that)
    until at least MIN_SAMPLES requests completed. Requests still running at the end are
    cancelled. With `pid`, the router process's CPU time over the window is recorded too.
    """
    sample = Sample()
    counter = 0
    window_start = time.perf_counter() + warmup
    window_end = float("inf")

    async def worker() -> None:
        nonlocal counter
        while True:
            counter += 1
            t0 = time.perf_counter()
            try:
                ttft = await client.one(raw, prefill_raw, stream, counter)
            except (aiohttp.ClientError, OSError, RuntimeError, KeyError, ValueError) as exc:
                if time.perf_counter() >= window_start:
                    kind = f"{type(exc).__name__}: {exc}"[:120]
                    sample.errors[kind] = sample.errors.get(kind, 0) + 1
                await asyncio.sleep(0.01)
                continue
            done = time.perf_counter()
            if window_start <= done <= window_end:
                sample.latencies.append(done - t0)
                if ttft is not None:
                    sample.ttfts.append(ttft)

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        await asyncio.sleep(warmup)
        cpu_start = cpu_seconds(pid) if pid else 0.0
        await asyncio.sleep(seconds)
        deadline = window_start + extend * seconds
        while len(sample.latencies) < MIN_SAMPLES and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        window_end = time.perf_counter()
        sample.cpu = (cpu_seconds(pid) - cpu_start) if pid else 0.0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    sample.window = window_end - window_start
    return sample


async def run_cell(
    clients: dict[str, Client], pids: dict[str, int | None], prompt_name: str, prompt: str,
    stream: bool, concurrency: int, args: argparse.Namespace, max_window: float,
) -> list[CellResult]:  # fmt: skip
    """All systems on one cell, interleaved over `args.rounds` rounds (rotating the order), so
    a burst of load from elsewhere on the machine hits every system alike. No window (warm-up
    included) runs longer than `max_window`, which is how `--budget` bounds the whole run."""
    body = request_body(prompt, stream)
    raw = json.dumps(body).encode()
    prefill = {**body, "max_tokens": 1, "stream": False, "kv_transfer_params": PREFILL_KV}
    prefill_raw = json.dumps(prefill).encode()
    systems = list(clients)
    samples = {system: Sample() for system in systems}
    budget = max_window / args.rounds
    warmup = min(args.warmup, budget / 4)
    seconds = max(0.05, min(args.duration / args.rounds, budget - warmup))
    extend = max(1.0, min(args.extend, (budget - warmup) / seconds))
    for round_ in range(args.rounds):
        order = systems[round_ % len(systems) :] + systems[: round_ % len(systems)]
        for system in order:
            sample = await run_window(
                clients[system], raw, prefill_raw, stream, concurrency, seconds, warmup,
                extend, pids[system],
            )  # fmt: skip
            samples[system].add(sample)
            await drain(clients[system], timeout=min(30.0, max(1.0, budget)))
    results = []
    for system, sample in samples.items():
        n = len(sample.latencies)
        results.append(
            CellResult(
                system=system,
                prompt=prompt_name,
                stream=stream,
                concurrency=concurrency,
                requests=n,
                errors=sum(sample.errors.values()),
                rps=n / sample.window if sample.window else 0.0,
                p50_ms=percentile(sample.latencies, 0.5) * 1000,
                p99_ms=percentile(sample.latencies, 0.99) * 1000,
                ttft_p50_ms=percentile(sample.ttfts, 0.5) * 1000 if sample.ttfts else None,
                cpu_ms_per_req=sample.cpu * 1000 / n if pids[system] and n else None,
                error_kinds=sample.errors,
            )
        )
    return results


async def drain(client: Client, timeout: float = 30.0) -> None:
    """Wait until the system answers a small request again (the cancelled backlog is gone)."""
    raw = json.dumps(request_body("drain", False)).encode()
    prefill = {**request_body("drain", False), "max_tokens": 1, "kv_transfer_params": PREFILL_KV}
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.one(raw, json.dumps(prefill).encode(), False, -1), timeout)


# --- report -------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0 or a != a or b != b:  # None, zero or NaN
        return "n/a"
    return f"{a / b:.2f}x"


def enough(*cells: CellResult | None) -> bool:
    return all(c is not None and c.requests >= MIN_SAMPLES for c in cells)


def field_of(cell: CellResult | None, name: str) -> float | None:
    value = getattr(cell, name) if cell is not None else None
    return float(value) if value is not None else None


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "n/a" if value is None or value != value else format(value, spec)


def report(results: list[CellResult]) -> str:
    """One row per cell; Tandem's figures as ratios against the two baselines."""
    index = {(r.system, r.prompt, r.stream, r.concurrency): r for r in results}
    keys = sorted(
        {(r.prompt, r.stream, r.concurrency) for r in results},
        key=lambda k: (k[0] != "short", k[1], k[2]),
    )
    columns = [
        ("prompt", 6), ("stream", 6), ("conc", 4),
        ("direct rps", 10), ("tandem rps", 10), ("vllm-router rps", 15),
        ("tandem/direct", 13), ("tandem/vllm-router", 18),
        ("tandem +p50 ms", 14), ("tandem +p99 ms", 14),
        ("cpu ms/req tandem", 17), ("vllm-router", 11), ("cpu ratio", 9),
    ]  # fmt: skip
    lines = [" ".join(f"{name:>{width}}" for name, width in columns)]
    lines.append("-" * len(lines[0]))
    for prompt, stream, conc in keys:
        direct = index.get(("direct", prompt, stream, conc))
        tandem = index.get(("tandem", prompt, stream, conc))
        vr = index.get(("vllm-router", prompt, stream, conc))

        def rps(cell: CellResult | None) -> str:
            if cell is None:
                return "-"
            marks = ("*" if cell.requests < MIN_SAMPLES else "") + ("!" if cell.errors else "")
            return fmt(cell.rps) + marks

        def vs(a: CellResult | None, b: CellResult | None, name: str) -> str:
            return ratio(field_of(a, name), field_of(b, name)) if enough(a, b) else "few"

        added_p50 = added_p99 = None
        if tandem and direct and enough(tandem, direct):
            added_p50 = tandem.p50_ms - direct.p50_ms
            added_p99 = tandem.p99_ms - direct.p99_ms
        cpu = {n: field_of(c, "cpu_ms_per_req") if enough(c) else None for n, c in
               (("tandem", tandem), ("vllm-router", vr))}  # fmt: skip
        row = [
            prompt, str(stream), str(conc),
            rps(direct), rps(tandem), rps(vr),
            vs(tandem, direct, "rps"), vs(tandem, vr, "rps"),
            fmt(added_p50, "+.2f"), fmt(added_p99, "+.2f"),
            fmt(cpu["tandem"], ".2f"), fmt(cpu["vllm-router"], ".2f"),
            vs(tandem, vr, "cpu_ms_per_req"),
        ]  # fmt: skip
        lines.append(" ".join(f"{v:>{w}}" for v, (_, w) in zip(row, columns, strict=True)))
    lines.append(
        f"* fewer than {MIN_SAMPLES} completions in the window (ratios shown as 'few'); "
        "! some requests failed"
    )
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------


def prompts(big_kb: int) -> Iterator[tuple[str, str]]:
    yield "short", "Explain disaggregated prefill in one sentence, please. " * 2
    sentence = "The quick brown fox jumps over the lazy dog and keeps running. "
    big = (sentence * (big_kb * 1024 // len(sentence) + 1))[: big_kb * 1024]
    yield f"{big_kb}KB", big


async def bench(args: argparse.Namespace, started: float) -> list[CellResult]:
    python = sys.executable
    procs = Procs(log_dir=args.log_dir)
    ports = {name: free_port() for name in ("prefill", "decode", "tandem", "vr", "vr_prom")}
    engines = (f"http://127.0.0.1:{ports['prefill']}", f"http://127.0.0.1:{ports['decode']}")
    wanted = args.systems.split(",")
    systems = [s for s in ("direct", "tandem") if s in wanted]
    try:
        for role in ("prefill", "decode"):
            procs.spawn(
                role,
                [python, str(FAKE_ENGINE), "--port", str(ports[role]), "--role", role,
                 "--protocol", "nixl", "--model", MODEL, "--instant"]
            )  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
        pids: dict[str, int | None] = {"direct": None}
        pids["tandem"] = procs.spawn(
            "tandem",
            [python, "-m", "tandem.router", "--host", "127.0.0.1", "--port", str(ports["tandem"]),
             "--model", MODEL, "--connector", "nixl", "--prefill", engines[0],
             "--decode", engines[1], "--log-level", "warning"],
            env=env,
        )  # fmt: skip
        if "vllm-router" in wanted:
            binary = ensure_vllm_router()
            pids["vllm-router"] = procs.spawn(
                "vllm-router",
                [str(binary), "--host", "127.0.0.1", "--port", str(ports["vr"]),
                 "--vllm-pd-disaggregation", "--prefill", engines[0], "--decode", engines[1],
                 "--policy", "round_robin", "--prometheus-host", "127.0.0.1",
                 "--prometheus-port", str(ports["vr_prom"]), "--worker-startup-check-interval",
                 "1", "--log-level", "warning"]
            )  # fmt: skip
            systems.append("vllm-router")
        urls = {
            "direct": "",
            "tandem": f"http://127.0.0.1:{ports['tandem']}/v1/completions",
            "vllm-router": f"http://127.0.0.1:{ports['vr']}/v1/completions",
        }
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            for url in engines:
                await wait_http(session, url + "/health")
            await wait_http(session, f"http://127.0.0.1:{ports['tandem']}/health")
            if "vllm-router" in systems:
                await wait_http(session, f"http://127.0.0.1:{ports['vr']}/health")
            clients = {s: Client(session, s, urls[s], engines) for s in systems}
            for client in clients.values():  # smoke: every system answers correctly
                raw = json.dumps(request_body("hello", False)).encode()
                prefill_raw = json.dumps(
                    {
                        **request_body("hello", False),
                        "max_tokens": 1,
                        "kv_transfer_params": PREFILL_KV,
                    }
                ).encode()
                await client.one(raw, prefill_raw, False, 0)
            results = []
            streams = [v == "true" for v in args.streams.split(",")]
            plan = [
                (name, prompt, stream, conc)
                for name, prompt in prompts(args.big_kb)
                if ("short" if name == "short" else "big") in args.prompts
                for stream in streams
                for conc in args.concurrency
            ]
            deadline = started + args.budget if args.budget else None
            for done, (prompt_name, prompt, stream, conc) in enumerate(plan):
                max_window = float("inf")
                if deadline is not None:  # share what is left of the budget among the rest
                    left = deadline - time.monotonic() - 2.0  # 2 s for shutdown
                    max_window = max(0.2, left / ((len(plan) - done) * len(clients)) - 0.05)
                cells = await run_cell(
                    clients, pids, prompt_name, prompt, stream, conc, args, max_window
                )
                results += cells
                for cell in cells:
                    cpu = cell.cpu_ms_per_req
                    print(
                        f"  {cell.system:>11} {prompt_name:>6} stream={stream!s:<5} "
                        f"c={conc:<3} {cell.rps:8.0f} rps  p50 {cell.p50_ms:7.2f} ms  "
                        f"p99 {cell.p99_ms:7.2f} ms  n={cell.requests} errors={cell.errors}"
                        + (f"  cpu {cpu:.2f} ms/req" if cpu is not None else ""),
                        flush=True,
                    )
                    for kind, n in cell.error_kinds.items():
                        print(f"      {n} x {kind}", flush=True)
            return results
    finally:
        procs.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short cells (whole run < 60 s)")
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per cell")
    parser.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 64, 256]
    )
    parser.add_argument("--big-kb", type=int, default=220, help="size of the large prompt")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds per cell (duration is split)"
    )
    parser.add_argument(
        "--extend", type=float, default=3.0, help="max window stretch while < 20 completions"
    )
    parser.add_argument(
        "--budget", type=float, default=0.0, help="wall-clock budget in seconds (0 = none)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write raw results here")
    parser.add_argument("--log-dir", type=Path, default=None, help="keep child process logs")
    parser.add_argument(
        "--systems", default="direct,tandem,vllm-router", help="comma-separated subset"
    )
    parser.add_argument("--prompts", default="short,big", help="short,big or a subset")
    parser.add_argument("--streams", default="false,true", help="false,true or a subset")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup, args.rounds, args.extend = 0.5, 0.15, 1, 2.0
        args.budget = args.budget or 50.0
    started = time.monotonic()
    print(
        f"router bench: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
        f"{args.duration}s per cell, max_tokens {MAX_TOKENS}",
        flush=True,
    )
    results = asyncio.run(bench(args, started))
    print()
    print(report(results))
    print(f"\nfinished in {time.monotonic() - started:.0f}s")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
