"""Real data plane: vLLM (CPU build) engines started from Tandem's builders, Tandem's router.

For a ``nixl`` InferenceService the builders produce the prefill and decode pods' command lines
and environment; this test runs exactly those on the CPU, changing only what a CPU and a
loopback need (documented in :func:`cpu_adapt`), starts ``tandem router`` with the builder's
router arguments (Kubernetes discovery swapped for static URLs), sends real completions through
it, and checks that the decode engine received the prompt's KV over the connector and that the
greedy output equals what a single engine produces without any hand-off.

The LMCache connector's generated configuration is validated with LMCache's own loader here;
its real PD hand-off (LMCache's sender, receiver and KV-ready notifications, on CPU through a
test-only connector shim) runs in test_lmcache_cpu.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.api.vocabulary import ROLES
from tandem.plan.kv import kv_strategy
from tandem.plan.kv.lmcache import LMCacheStrategy, config_key
from tandem.render import Owner, build_children
from tandem.render.router import router_args

pytestmark = pytest.mark.dataplane

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = Path(os.environ.get("TANDEM_CACHE", Path.home() / ".cache" / "tandem"))
HOST = "127.0.0.1"
PROMPT = (
    "The quick brown fox jumps over the lazy dog. "
    * 3
    + "Tandem splits prefill and decode across two pools of vLLM engines, and a router moves "
    "the KV cache between them using NIXL over UCX. " * 8
)
PROMPTS = [
    PROMPT,
    "def fibonacci(n):\n    if n < 2:\n        return n\n" * 12,
    "import os\nimport sys\nfrom pathlib import Path\n" * 15,
    "class Node:\n    def __init__(self, value):\n        self.value = value\n" * 10,
]
MAX_TOKENS = 24

SPEC = {
    "model": {
        "uri": "pvc://models/tiny-llama",
        "servedName": "tiny",
        "maxModelLen": 1024,
        "dtype": "bfloat16",
    },
    "engine": {"enforceEager": True},
    "prefill": {"replicas": 1, "parallelism": {"tensor": 1}},
    "decode": {"replicas": 1, "parallelism": {"tensor": 1}},
    "kvTransfer": {"connector": "nixl", "nixl": {"kvLoadFailurePolicy": "recompute"}},
    "router": {"replicas": 1},
}


def vllm_python() -> str:
    py = os.environ.get("TANDEM_VLLM_PYTHON")
    if not py:
        r = subprocess.run(
            ["bash", str(HERE / "setup_env.sh")], capture_output=True, text=True, timeout=3600
        )
        if r.returncode != 0:
            pytest.fail(f"data-plane environment setup failed:\n{r.stderr[-3000:]}")
        py = r.stdout.strip().splitlines()[-1]
    return py


@pytest.fixture(scope="session")
def vpy() -> str:
    return vllm_python()


@pytest.fixture(scope="session")
def model_dir(vpy: str) -> Path:
    out = CACHE / "models" / "tiny-llama"
    subprocess.run(
        [vpy, str(HERE / "tiny_model.py"), str(out)], check=True, capture_output=True, timeout=600
    )
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def builder_pods() -> dict[str, dict[str, Any]]:
    spec = InferenceServiceSpec.model_validate(SPEC)
    children = build_children(spec, Owner("tiny", "dp", "uid"))
    return {c["metadata"]["name"]: c for c in children if c["kind"] == "Deployment"}


def container(dep: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = dep["spec"]["template"]["spec"]["containers"][0]
    return c


def cpu_adapt(
    c: dict[str, Any], vpy: str, model: Path, port: int, side_port: int, scratch: Path
) -> tuple[list[str], dict[str, str]]:
    """The builder's container, runnable on this CPU. Every change is listed here.

    - the image's ``vllm`` is the data-plane venv's; the PVC path is the local model directory;
    - bind to 127.0.0.1 and a free port instead of 0.0.0.0:8000 (several engines share a host);
    - ``kv_buffer_device: cpu`` and one NIXL thread in ``--kv-transfer-config`` (no GPU);
    - the downward-API pod IP is 127.0.0.1, the side-channel port is unique per engine, caches
      go to a scratch directory;
    - CPU-only environment: KV cache size, UCX over TCP, one OpenMP thread, offline hub.
    """
    assert c["command"] == ["vllm", "serve"]
    args = list(c["args"])
    assert args[0] == "/mnt/models/models/tiny-llama"
    args[0] = str(model)
    args[args.index("--host") + 1] = HOST
    args[args.index("--port") + 1] = str(port)
    i = args.index("--kv-transfer-config") + 1
    kv = json.loads(args[i])
    kv["kv_buffer_device"] = "cpu"
    kv.setdefault("kv_connector_extra_config", {})["num_threads"] = 1
    args[i] = json.dumps(kv)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "LMCACHE_", "UCX_"))}
    for e in c["env"]:
        if "valueFrom" in e:
            assert e["name"] == "POD_IP", e
            env["POD_IP"] = HOST
            continue
        env[e["name"]] = e["value"].replace("$(POD_IP)", env.get("POD_IP", HOST))
    env["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(side_port)
    env["HF_HOME"] = str(scratch / "hf")
    env["VLLM_CACHE_ROOT"] = str(scratch / "vllm")
    env |= {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "UCX_TLS": "tcp,self,sm",
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    vllm = str(Path(vpy).parent / "vllm")
    return [vllm, "serve", *args], env


class Proc:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.log = name, log
        self.fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(
            cmd, env=env, stdout=self.fh, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, 15)
            try:
                self.p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, 9)
                self.p.wait(timeout=10)
        self.fh.close()

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


async def wait_healthy(url: str, procs: list[Proc], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            for p in procs:
                if p.p.poll() is not None:
                    raise RuntimeError(f"{p.name} exited with {p.p.returncode}:\n{p.tail()}")
            try:
                async with s.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(1)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


def wait_plane(urls: dict[str, str], procs: list[Proc], router_timeout: float, what: str) -> None:
    """Wait for both engines, then for the router (healthy once its canary hand-off verified
    the pair: a real KV transfer), and say how long it took."""

    async def up() -> None:
        await asyncio.gather(*(wait_healthy(urls[k], procs, 420) for k in ("prefill", "decode")))
        await wait_healthy(urls["router"], procs, router_timeout)

    started = time.monotonic()
    asyncio.run(up())
    print(f"\n{what} healthy in {time.monotonic() - started:.0f}s")


def router_proc(r_args: list[str], ports: dict[str, int], scratch: Path) -> Proc:
    """`tandem router` with the operator's rendered args, its Kubernetes discovery swapped for
    the local engines' URLs (and its own address for the pod IP it would advertise)."""
    args = list(r_args)
    for flag in ("--namespace", "--prefill-service", "--decode-service", "--engine-port"):
        j = args.index(flag)
        del args[j : j + 2]
    args[args.index("--host") + 1] = HOST
    args[args.index("--port") + 1] = str(ports["router"])
    if "--advertise-host" in args:
        args[args.index("--advertise-host") + 1] = HOST
    args += [
        "--prefill", f"http://{HOST}:{ports['prefill']}",
        "--decode", f"http://{HOST}:{ports['decode']}",
        "--health-interval", "2",
    ]  # fmt: skip
    command = [sys.executable, "-m", "tandem", "router", *args]
    return Proc("router", command, dict(os.environ), scratch / "router.log")


@pytest.fixture(scope="module")
def plane(
    vpy: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    scratch = tmp_path_factory.mktemp("dataplane")
    deps = builder_pods()
    ports = {
        "prefill": free_port(),
        "decode": free_port(),
        "router": free_port(),
    }
    procs: list[Proc] = []
    try:
        p_cmd, p_env = cpu_adapt(
            container(deps["tiny-prefill"]), vpy, model_dir, ports["prefill"], free_port(), scratch
        )
        d_cmd, d_env = cpu_adapt(
            container(deps["tiny-decode"]), vpy, model_dir, ports["decode"], free_port(), scratch
        )
        procs.append(Proc("prefill", p_cmd, p_env, scratch / "prefill.log"))
        procs.append(Proc("decode", d_cmd, d_env, scratch / "decode.log"))
        r_args = router_args(InferenceServiceSpec.model_validate(SPEC), Owner("tiny", "dp", "uid"))
        procs.append(router_proc(r_args, ports, scratch))
        urls = {k: f"http://{HOST}:{v}" for k, v in ports.items()}
        # The reference is a single engine serving the whole request (prompt and output) with
        # no hand-off: the prefill engine called directly, without kv_transfer_params. Same
        # weights and flags, and a third engine would not fit the 2-core budget of this tier.
        urls["plain"] = urls["prefill"]

        wait_plane(urls, procs, router_timeout=60, what="engines and router")
        yield urls
    finally:
        for p in reversed(procs):
            p.stop()


def post(url: str, body: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as s,
            s.post(url, json=body, timeout=aiohttp.ClientTimeout(total=timeout)) as r,
        ):
            text = await r.text()
            assert r.status == 200, f"{url}: {r.status} {text[:500]}"
            return dict(json.loads(text))

    return asyncio.run(go())


def metrics(base: str) -> dict[str, float]:
    async def go() -> str:
        async with aiohttp.ClientSession() as s, s.get(f"{base}/metrics") as r:
            return await r.text()

    out: dict[str, float] = {}
    for line in asyncio.run(go()).splitlines():
        if line.startswith("vllm:") and " " in line:
            key, value = line.rsplit(" ", 1)
            out[key] = out.get(key, 0.0) + float(value)
    return out


def external_tokens(ms: dict[str, float]) -> float:
    return sum(
        v
        for k, v in ms.items()
        if k.startswith("vllm:prompt_tokens_by_source_total")
        and 'source="external_kv_transfer"' in k
    )


def completion(prompt: str, **extra: Any) -> dict[str, Any]:
    return {"model": "tiny", "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, **extra}


def plain_text(urls: dict[str, str], prompt: str) -> str:
    return str(post(f"{urls['plain']}/v1/completions", completion(prompt))["choices"][0]["text"])


def warm_up(urls: dict[str, str]) -> None:
    """The first P->D pair does the NIXL handshake (a fixed 5 s budget in vLLM that a loaded
    2-core machine can miss); decoders fall back to recompute, so this always answers."""
    post(f"{urls['router']}/v1/completions", completion("warm up " * 40), timeout=240)


def test_disaggregated_completion_moves_kv_and_matches_plain(plane: dict[str, str]) -> None:
    warm_up(plane)
    before = external_tokens(metrics(plane["decode"]))
    got = post(f"{plane['router']}/v1/completions", completion(PROMPT))
    after = external_tokens(metrics(plane["decode"]))
    want = plain_text(plane, PROMPT)
    assert got["choices"][0]["text"] == want
    prompt_tokens = got["usage"]["prompt_tokens"]
    assert after - before >= prompt_tokens * 0.9, (before, after, prompt_tokens)


def test_streaming_matches_plain(plane: dict[str, str]) -> None:
    async def stream() -> str:
        text = ""
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{plane['router']}/v1/completions", json=completion(PROMPTS[1], stream=True)
            ) as r,
        ):
            assert r.status == 200, await r.text()
            async for raw in r.content:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                text += json.loads(line[6:])["choices"][0].get("text", "")
        return text

    before = external_tokens(metrics(plane["decode"]))
    assert asyncio.run(stream()) == plain_text(plane, PROMPTS[1])
    assert external_tokens(metrics(plane["decode"])) > before


def test_concurrent_requests(plane: dict[str, str]) -> None:
    async def one(s: aiohttp.ClientSession, prompt: str) -> str:
        async with s.post(
            f"{plane['router']}/v1/completions",
            json=completion(prompt),
            timeout=aiohttp.ClientTimeout(total=240),
        ) as r:
            body = await r.json()
            assert r.status == 200, body
            return str(body["choices"][0]["text"])

    async def all_of() -> list[str]:
        async with aiohttp.ClientSession() as s:
            return await asyncio.gather(*(one(s, p) for p in PROMPTS))

    got = asyncio.run(all_of())
    assert got == [plain_text(plane, p) for p in PROMPTS]


def test_chat_completion(plane: dict[str, str]) -> None:
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": PROMPTS[2]}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    }
    got = post(f"{plane['router']}/v1/chat/completions", body)
    want = post(f"{plane['plain']}/v1/chat/completions", body)
    assert got["choices"][0]["message"]["content"] == want["choices"][0]["message"]["content"]


def test_router_metrics_report_handoffs(plane: dict[str, str]) -> None:
    async def go() -> str:
        async with aiohttp.ClientSession() as s, s.get(f"{plane['router']}/metrics") as r:
            return await r.text()

    text = asyncio.run(go())
    assert "tandem_router_requests_total" in text
    assert "tandem_router_handoff_seconds_count" in text


# ----------------------------------------------------------------- the real libraries' parsers


def all_specs() -> list[tuple[str, InferenceServiceSpec]]:
    out = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        out.append((doc["metadata"]["name"], InferenceServiceSpec.model_validate(doc["spec"])))
    out.append(("tiny", InferenceServiceSpec.model_validate(SPEC)))
    return out


def test_kv_transfer_configs_parse_with_vllm(vpy: str) -> None:
    configs = []
    for _, spec in all_specs():
        for connector in ("lmcache", "nixl"):
            s = spec.model_copy(
                update={
                    "kv_transfer": spec.kv_transfer.model_copy(
                        update={"connector": connector, "lmcache": None, "nixl": None}
                    )
                }
            )
            kv = kv_strategy(s, Owner("svc", "ml", "uid"))
            configs += [json.dumps(kv.kv_transfer_config(role)) for role in ROLES]
    r = subprocess.run(
        [vpy, str(HERE / "kv_config_validate.py"), *configs],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_engine_args_parse_with_vllm(vpy: str, tmp_path: Path) -> None:
    batch = {}
    for name, spec in all_specs():
        for dep in build_children(spec, Owner(name, "ns", "uid")):
            if dep["kind"] == "Deployment" and not dep["metadata"]["name"].endswith("-router"):
                batch[dep["metadata"]["name"]] = container(dep)["args"]
    f = tmp_path / "args.json"
    f.write_text(json.dumps(batch))
    r = subprocess.run(
        [vpy, str(HERE / "vllm_args_check.py"), "--batch", str(f)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    results = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert {x["name"] for x in results if x["ok"]} == set(batch), results


def test_lmcache_configs_load_with_lmcache(vpy: str, tmp_path: Path) -> None:
    files = []
    for name, spec in all_specs():
        if spec.kv_transfer.connector != "lmcache":
            spec = spec.model_copy(
                update={
                    "kv_transfer": spec.kv_transfer.model_copy(
                        update={"connector": "lmcache", "nixl": None}
                    )
                }
            )
        data = LMCacheStrategy(spec, Owner(name, "ns", "uid")).config_files()[0].data
        for role in ROLES:
            f = tmp_path / f"{name}-{role}.yaml"
            f.write_text(data[config_key(role)])
            files.append(str(f))
    r = subprocess.run(
        [vpy, str(HERE / "lmcache_validate.py"), *files],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    parsed = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(parsed) == len(files) and all(p.get("ok") for p in parsed), parsed
    bad = subprocess.run(
        [vpy, str(HERE / "lmcache_validate.py"), str(HERE / "testdata" / "lmcache-bad.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode != 0, "the validator must reject a bad file"


def test_engine_check_runs_against_the_real_packages(vpy: str) -> None:
    """images/engine_check.py (the engine image's build check) against real vLLM/LMCache/NIXL.

    Without ``--cuda`` every check passes on CPU; the CUDA checks run in the image build.
    """
    script = HERE.parents[1] / "images" / "engine_check.py"
    r = subprocess.run([vpy, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [line.split()[1] for line in r.stdout.splitlines() if line.startswith("ok")] == [
        "versions:", "vllm:", "connectors:", "nixl-ucx:",
    ]  # fmt: skip
