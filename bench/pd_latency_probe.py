"""P/D latency and NIXL lease probe on real vLLM CPU engines (tiny model), as a new user would.

Starts the same plane as ``e2e/dataplane/test_dataplane.py`` (the operator's rendered prefill and
decode command lines, adapted for a CPU by ``cpu_adapt``; ``tandem router --connector nixl`` with
static URLs), then drives it with the ``openai`` SDK's streaming chat/completions API:

- N requests at each concurrency in ``--levels`` through the router (P/D hand-off),
- N requests at ``--baseline-concurrency`` straight to the decode engine (no P/D), for TTFT.

Per level it prints client TTFT p50/p99, errors, the deltas of the prefill engine's
``vllm:nixl_num_kv_expired_reqs_total`` / ``vllm:nixl_num_notifications_after_expiry_total``, the
decoder's ``vllm:nixl_num_failed_transfers_total`` / ``vllm:prompt_tokens_by_source_total``, the
router's ``tandem_router_handoff_seconds`` and ``tandem_router_handoffs_total{outcome}``, the
prefill log's "Potentially invalid KV blocks" / "expired" lines, and a TTFT breakdown from the
engines' own histograms. Everything it starts is stopped on exit.

    TANDEM_VLLM_PYTHON=$(e2e/dataplane/setup_env.sh | tail -n1) \\
    ~/.cache/tandem/venv/bin/python -m pip install --target /tmp/oa openai   # once, not in the project
    TANDEM_VLLM_PYTHON=... ~/.cache/tandem/venv/bin/python bench/pd_latency_probe.py --openai-path /tmp/oa
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from e2e.dataplane.test_dataplane import (  # noqa: E402
    CACHE,
    HERE,
    HOST,
    SPEC,
    Proc,
    builder_pods,
    container,
    cpu_adapt,
    free_port,
    router_proc,
    wait_healthy,
)

from tandem.api.v1alpha1 import InferenceServiceSpec  # noqa: E402
from tandem.render import Owner  # noqa: E402
from tandem.render.router import router_args  # noqa: E402

WORDS = [
    "prefill",
    "decode",
    "router",
    "lease",
    "block",
    "cache",
    "tensor",
    "engine",
    "request",
    "token",
    "stream",
    "latency",
    "queue",
    "transfer",
    "socket",
    "kernel",
    "memory",
    "scheduler",
    "batch",
    "prompt",
    "model",
    "weight",
    "layer",
    "attention",
    "head",
    "vector",
    "matrix",
    "cluster",
    "node",
    "pod",
    "service",
    "replica",
    "metric",
    "counter",
    "histogram",
    "bucket",
    "window",
]

# --------------------------------------------------------------------------- metrics scraping

LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


async def scrape(session: Any, base: str) -> dict[tuple[str, str], float]:
    async with session.get(f"{base}/metrics") as r:
        text = await r.text()
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if m and not line.startswith("#"):
            with contextlib.suppress(ValueError):
                out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def total(ms: dict[tuple[str, str], float], name: str, label: str = "") -> float:
    return sum(v for (n, labels), v in ms.items() if n == name and label in labels)


def by_label(ms: dict[tuple[str, str], float], name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for (n, labels), v in ms.items():
        if n == name:
            m = re.search(label + r'="([^"]*)"', labels)
            key = m.group(1) if m else "?"
            out[key] = out.get(key, 0.0) + v
    return out


def delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {
        k: b.get(k, 0.0) - a.get(k, 0.0) for k in set(a) | set(b) if b.get(k, 0.0) != a.get(k, 0.0)
    }


def hist_mean(before: dict, after: dict, name: str) -> float | None:
    n = total(after, name + "_count") - total(before, name + "_count")
    s = total(after, name + "_sum") - total(before, name + "_sum")
    return s / n if n > 0 else None


# --------------------------------------------------------------------------- load generation


def make_prompt(rng: random.Random, i: int, words: int) -> str:
    return f"Request {i}-{rng.randrange(10**9)}. " + " ".join(
        rng.choice(WORDS) for _ in range(words)
    )


async def run_level(
    base_url: str, n: int, conc: int, max_tokens: int, words: int, seed: int, timeout: float
) -> dict[str, Any]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="none", timeout=timeout, max_retries=0)
    rng = random.Random(seed)
    prompts = [make_prompt(rng, i, words) for i in range(n)]
    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in prompts:
        queue.put_nowait(p)
    ttfts: list[float] = []
    e2es: list[float] = []
    errors: list[str] = []
    prompt_tokens: list[int] = []

    async def one(prompt: str) -> None:
        t0 = time.monotonic()
        first: float | None = None
        try:
            stream = await client.chat.completions.create(
                model="tiny",
                messages=[{"role": "user", "content": prompt}],
                max_tokens=max_tokens,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            async for chunk in stream:
                if first is None and chunk.choices:
                    first = time.monotonic() - t0
                if chunk.usage is not None:
                    prompt_tokens.append(chunk.usage.prompt_tokens)
            if first is None:
                errors.append("no token")
            else:
                ttfts.append(first)
                e2es.append(time.monotonic() - t0)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {str(exc)[:120]}")

    async def worker() -> None:
        while not queue.empty():
            await one(queue.get_nowait())

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(conc)))
    wall = time.monotonic() - t0
    await client.close()
    return {
        "ttft": ttfts,
        "e2e": e2es,
        "errors": errors,
        "wall": wall,
        "prompt_tokens": prompt_tokens,
    }


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]  # nearest rank


def error_kinds(errors: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in errors:
        if "no healthy decode" in e:
            k = "503 no healthy decode"
        elif "canary" in e or "no_verified_pair" in e:
            k = "503 no verified pair"
        else:
            k = e.split(" - ")[0][:40]
        out[k] = out.get(k, 0) + 1
    return out


def grep_counts(log: Path, offset: int) -> tuple[dict[str, int], int]:
    data = log.read_bytes()
    text = data[offset:].decode(errors="replace")
    return {
        "invalid_kv": text.count("Potentially invalid KV blocks"),
        # vLLM's "Releasing expired KV blocks ... before lease expired" (not the periodic
        # "KV Transfer metrics: ... Num KV expired reqs=0" summary lines)
        "expired": text.count("Releasing expired KV blocks"),
    }, len(data)


# --------------------------------------------------------------------------- plane


def vllm_python() -> str:
    py = os.environ.get("TANDEM_VLLM_PYTHON")
    if py:
        return py
    r = subprocess.run(
        ["bash", str(HERE / "setup_env.sh")],
        capture_output=True,
        text=True,
        timeout=3600,
        check=True,
    )
    return r.stdout.strip().splitlines()[-1]


def start_plane(scratch: Path, vpy: str) -> tuple[list[Proc], dict[str, str]]:
    model = CACHE / "models" / "tiny-llama"
    subprocess.run(
        [vpy, str(HERE / "tiny_model.py"), str(model)], check=True, capture_output=True, timeout=600
    )
    deps = builder_pods()
    ports = {"prefill": free_port(), "decode": free_port(), "router": free_port()}
    procs: list[Proc] = []
    p_cmd, p_env = cpu_adapt(
        container(deps["tiny-prefill"]), vpy, model, ports["prefill"], free_port(), scratch
    )
    d_cmd, d_env = cpu_adapt(
        container(deps["tiny-decode"]), vpy, model, ports["decode"], free_port(), scratch
    )
    procs.append(Proc("prefill", p_cmd, p_env, scratch / "prefill.log"))
    procs.append(Proc("decode", d_cmd, d_env, scratch / "decode.log"))
    r_args = router_args(InferenceServiceSpec.model_validate(SPEC), Owner("tiny", "dp", "uid"))
    procs.append(router_proc(r_args, ports, scratch))
    return procs, {k: f"http://{HOST}:{v}" for k, v in ports.items()}


# --------------------------------------------------------------------------- main

ENGINE_HISTS = {
    "P e2e": ("prefill", "vllm:e2e_request_latency_seconds"),
    "P queue": ("prefill", "vllm:request_queue_time_seconds"),
    "D queue": ("decode", "vllm:request_queue_time_seconds"),
    "D ttft": ("decode", "vllm:time_to_first_token_seconds"),
    "D xfer": ("decode", "vllm:nixl_xfer_time_seconds"),
}


async def measure(
    args: argparse.Namespace, urls: dict[str, str], logs: dict[str, Path]
) -> list[dict]:
    import aiohttp

    rows: list[dict] = []
    offsets = {k: p.stat().st_size for k, p in logs.items()}
    plan = [("router", c) for c in args.levels] + (
        [("decode-only", args.baseline_concurrency)] if args.baseline_concurrency else []
    )
    async with aiohttp.ClientSession() as s:
        for idx, (target, conc) in enumerate(plan):
            before = {k: await scrape(s, urls[k]) for k in ("prefill", "decode", "router")}
            res = await run_level(
                urls["router" if target == "router" else "decode"],
                args.n,
                conc,
                args.max_tokens,
                args.prompt_words,
                args.seed + idx,
                args.timeout,
            )
            await asyncio.sleep(args.settle)  # let the engines log/count lease expiries
            after = {k: await scrape(s, urls[k]) for k in ("prefill", "decode", "router")}
            grep = {}
            for k in ("prefill", "decode"):
                grep[k], offsets[k] = grep_counts(logs[k], offsets[k])

            def d(
                role: str, name: str, label: str = "", b: dict = before, a: dict = after
            ) -> float:
                return total(a[role], name, label) - total(b[role], name, label)

            row = {
                "path": target,
                "c": conc,
                "n": args.n,
                "ok": len(res["ttft"]),
                "errors": len(res["errors"]),
                "error_samples": res["errors"][:3],
                "error_kinds": error_kinds(res["errors"]),
                "prompt_tokens_mean": (
                    sum(res["prompt_tokens"]) / len(res["prompt_tokens"])
                    if res["prompt_tokens"]
                    else None
                ),
                "ttft_p50": pct(res["ttft"], 50),
                "ttft_p99": pct(res["ttft"], 99),
                "ttft_max": max(res["ttft"], default=None),
                "ttft_mean": sum(res["ttft"]) / len(res["ttft"]) if res["ttft"] else None,
                "e2e_p50": pct(res["e2e"], 50),
                "wall_s": res["wall"],
                "P_expired": d("prefill", "vllm:nixl_num_kv_expired_reqs_total"),
                "P_notif_after_expiry": d(
                    "prefill", "vllm:nixl_num_notifications_after_expiry_total"
                ),
                "D_failed_xfers": d("decode", "vllm:nixl_num_failed_transfers_total"),
                "D_tokens_by_source": delta(
                    by_label(before["decode"], "vllm:prompt_tokens_by_source_total", "source"),
                    by_label(after["decode"], "vllm:prompt_tokens_by_source_total", "source"),
                ),
                "R_handoff_count": d("router", "tandem_router_handoff_seconds_count"),
                "R_handoff_sum": d("router", "tandem_router_handoff_seconds_sum"),
                "R_handoffs": delta(
                    by_label(before["router"], "tandem_router_handoffs_total", "outcome"),
                    by_label(after["router"], "tandem_router_handoffs_total", "outcome"),
                ),
                "R_ttft_mean": hist_mean(
                    before["router"], after["router"], "tandem_router_ttft_seconds"
                ),
                "P_log": grep["prefill"],
                "D_log": grep["decode"],
                "breakdown_mean_s": {
                    k: hist_mean(before[role], after[role], name)
                    for k, (role, name) in ENGINE_HISTS.items()
                },
            }
            rows.append(row)
            print(
                f"[probe] {target} c={conc}: ok={row['ok']} err={row['errors']} "
                f"ttft p50={row['ttft_p50']} p99={row['ttft_p99']} wall={res['wall']:.1f}s",
                flush=True,
            )
    return rows


def f(x: Any, nd: int = 2) -> str:
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def table(rows: list[dict]) -> str:
    head = (
        "| path | c | ok/err | TTFT p50 s | TTFT p99 s | P expired | P notif-after-expiry | "
        "P log invalid/expired | D failed xfers | D prompt tokens by source | "
        "R handoff n / mean s | R handoffs by outcome |"
    )
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        src = ", ".join(f"{k}={int(v)}" for k, v in sorted(r["D_tokens_by_source"].items())) or "-"
        oc = ", ".join(f"{k}={int(v)}" for k, v in sorted(r["R_handoffs"].items())) or "-"
        hn = int(r["R_handoff_count"])
        hm = r["R_handoff_sum"] / hn if hn else None
        out.append(
            f"| {r['path']} | {r['c']} | {r['ok']}/{r['errors']} | {f(r['ttft_p50'])} | "
            f"{f(r['ttft_p99'])} | {int(r['P_expired'])} | {int(r['P_notif_after_expiry'])} | "
            f"{r['P_log']['invalid_kv']}/{r['P_log']['expired']} | {int(r['D_failed_xfers'])} | "
            f"{src} | {hn} / {f(hm)} | {oc} |"
        )
    out.append("")
    for r in rows:
        if r["error_kinds"]:
            out.append(
                f"errors {r['path']} c={r['c']}: "
                + ", ".join(f"{k}: {v}" for k, v in sorted(r["error_kinds"].items()))
            )
    out.append("")
    head2 = (
        "| path | c | client TTFT mean s | router TTFT mean s | router hand-off mean s | "
        "P e2e mean s | P queue mean s | D queue mean s | D engine TTFT mean s | D NIXL xfer mean s |"
    )
    out += [head2, "|" + "---|" * (head2.count("|") - 1)]
    for r in rows:
        b = r["breakdown_mean_s"]
        hn = int(r["R_handoff_count"])
        cm = r["ttft_mean"]
        out.append(
            f"| {r['path']} | {r['c']} | {f(cm)} | {f(r['R_ttft_mean'])} | "
            f"{f(r['R_handoff_sum'] / hn if hn else None)} | {f(b['P e2e'])} | {f(b['P queue'])} | "
            f"{f(b['D queue'])} | {f(b['D ttft'])} | {f(b['D xfer'], 4)} |"
        )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=40, help="requests per level")
    ap.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16])
    ap.add_argument(
        "--baseline-concurrency",
        type=int,
        default=16,
        help="concurrency of the decode-engine-only baseline (0: skip)",
    )
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--prompt-words", type=int, default=280, help="~1.1 tokens a word")
    ap.add_argument("--timeout", type=float, default=300.0, help="per-request client timeout")
    ap.add_argument(
        "--settle", type=float, default=2.0, help="seconds after a level before scraping"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--openai-path", default=None, help="extra sys.path entry holding the openai SDK"
    )
    ap.add_argument("--log-dir", default=None, help="keep engine/router logs here")
    ap.add_argument("--json", default=None, help="write the raw rows here")
    args = ap.parse_args()
    if args.openai_path:
        sys.path.insert(0, args.openai_path)
    import openai  # noqa: F401 - fail early, before starting engines

    scratch = Path(args.log_dir or tempfile.mkdtemp(prefix="pd-probe-"))
    scratch.mkdir(parents=True, exist_ok=True)
    vpy = vllm_python()
    procs, urls = start_plane(scratch, vpy)
    try:
        t0 = time.monotonic()

        async def up() -> None:
            await asyncio.gather(
                *(wait_healthy(urls[k], procs, 420) for k in ("prefill", "decode"))
            )
            await wait_healthy(urls["router"], procs, 60)
            # warm-up: the first pair does the NIXL handshake and the router's canary verifies it
            import aiohttp

            async with aiohttp.ClientSession() as s:
                for _ in range(3):
                    body = {"model": "tiny", "prompt": "warm up " * 40, "max_tokens": 4}
                    async with s.post(
                        f"{urls['router']}/v1/completions",
                        json=body,
                        timeout=aiohttp.ClientTimeout(total=240),
                    ) as r:
                        await r.read()
                for _ in range(60):
                    ms = await scrape(s, urls["router"])
                    if total(ms, "tandem_router_pairs", 'state="verified"') >= 1:
                        break
                    await asyncio.sleep(1)

        asyncio.run(up())
        print(
            f"[probe] plane up and warm in {time.monotonic() - t0:.0f}s; logs in {scratch}",
            flush=True,
        )
        rows = asyncio.run(
            measure(
                args, urls, {"prefill": scratch / "prefill.log", "decode": scratch / "decode.log"}
            )
        )
    finally:
        for p in reversed(procs):
            p.stop()
    print()
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
