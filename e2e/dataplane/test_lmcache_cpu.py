"""Real data plane, LMCache connector: LMCache's own PD sender/receiver on vLLM CPU engines.

For an ``lmcache`` InferenceService (PD buffers on the CPU) the builders produce the prefill and
decode pods and the LMCache ConfigMap; this test runs those engines on the CPU with the same
adaptations as the NIXL test (:func:`test_dataplane.cpu_adapt`) plus the few LMCache needs (see
:func:`lmcache_adapt`), starts ``tandem router --connector lmcache`` with the builder's router
arguments (static URLs instead of Kubernetes discovery), and checks that a completion through
the router is a real hand-off: the prefill engine's LMCache sender pushes the prompt's KV over
NIXL (UCX over loopback) into the decode engine's receive buffer, sends its ZMQ "KV ready"
notification to the router, the decoder loads the prompt from LMCache
(``vllm:prompt_tokens_by_source_total{source="external_kv_transfer"}``: every prompt token but
the last, which vLLM recomputes to sample the first token itself, ``skip_last_n_tokens: 0``),
and the output equals what the decode engine computes alone: greedy text, a JSON-schema
``response_format``, logprobs, and a prompt whose first generated token is a byte-fallback
token (README "LMCache PD on CPU", gotcha 2, which the router's old first-token stitching
turned into an echo of the whole prompt).

LMCache 0.5.6 has no CPU GPU-connector: the engines get ``lmcache_cpu_shim/`` on their
``PYTHONPATH``, a test-only ``sitecustomize`` that supplies the paged-cache <-> buffer copy for
vLLM's CPU KV layout (its docstring lists exactly what it changes). Everything else is
LMCache's and vLLM's installed code.

The plain reference is the decode engine itself, asked *before* the hand-off of the same prompt
(its external-KV counter must not move then): an LMCache PD sender cannot serve a request that
has no ``disagg_spec``: ``pd_backend_async.py:1068`` raises ``AttributeError: 'NoneType' object
has no attribute 'receiver_init_port'`` and the prefill EngineCore dies.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_dataplane import (  # the NIXL tier's fixtures and helpers (e2e/dataplane on sys.path)
    HOST,
    MAX_TOKENS,
    PROMPT,
    PROMPTS,
    SPEC,
    Proc,
    completion,
    container,
    cpu_adapt,
    external_tokens,
    free_port,
    metrics,
    model_dir,
    post,
    router_proc,
    vpy,
    wait_plane,
)

from tandem.api.v1alpha1 import InferenceServiceSpec
from tandem.api.vocabulary import Role
from tandem.plan.kv.lmcache import config_key
from tandem.render import Owner, build_children
from tandem.render.router import router_args

pytestmark = pytest.mark.dataplane

__all__ = ["model_dir", "vpy"]  # session fixtures, re-exported so pytest finds them here

HERE = Path(__file__).resolve().parent
SHIM = HERE / "lmcache_cpu_shim"
OWNER = Owner("tiny", "dp", "uid")


def lmcache_spec(ports: dict[str, int]) -> InferenceServiceSpec:
    """The NIXL test's service with the ``lmcache`` connector, PD buffers in CPU memory (small:
    the tiny model's 465-token prompt is 0.5 MB of KV) and free loopback ports."""
    kv = {
        "connector": "lmcache",
        "lmcache": {
            "bufferDevice": "cpu",
            "prefillBufferSize": "64Mi",
            "decodeBufferSize": "128Mi",
            "initPort": ports["init"],
            "allocPort": ports["alloc"],
            "proxyPort": ports["kv_ready"],
        },
    }
    return InferenceServiceSpec.model_validate({**SPEC, "kvTransfer": kv})


def lmcache_adapt(
    c: dict[str, Any],
    role: Role,
    config_text: str,
    vpy: str,
    model: Path,
    port: int,
    scratch: Path,
) -> tuple[list[str], dict[str, str]]:
    """The builder's LMCache container, runnable on this CPU: :func:`cpu_adapt`, and

    - the ConfigMap key is written verbatim to a file (the pod mounts it at /etc/lmcache);
    - ``LMCACHE_PD_PROXY_HOST=127.0.0.1``: the sender notifies the router Service's DNS name,
      which does not resolve here (LMCache applies ``LMCACHE_<KEY>`` over the file);
    - ``PYTHONPATH`` starts with the test-only CPU connector shim.

    ``cpu_adapt`` also adds ``kv_buffer_device: cpu`` (vLLM's default on a CPU anyway) and the
    NixlConnector's ``num_threads`` (ignored by LMCache) to ``--kv-transfer-config``; the
    downward-API pod IP it substitutes is what ``LMCACHE_PD_PEER_HOST`` carries.
    """
    cmd, env = cpu_adapt(c, vpy, model, port, free_port(), scratch)
    f = scratch / config_key(role)
    f.write_text(config_text)
    assert env["LMCACHE_CONFIG_FILE"] == f"/etc/lmcache/{config_key(role)}"
    env["LMCACHE_CONFIG_FILE"] = str(f)
    if role is Role.PREFILL:
        env["LMCACHE_PD_PROXY_HOST"] = HOST
    else:
        assert env["LMCACHE_PD_PEER_HOST"] == HOST
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SHIM), env.get("PYTHONPATH")]))
    env["LMCACHE_DISABLE_BANNER"] = "1"
    return cmd, env


@pytest.fixture(scope="module")
def lmc(
    vpy: str, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    scratch = tmp_path_factory.mktemp("lmcache")
    ports = {k: free_port() for k in ("prefill", "decode", "router", "init", "alloc", "kv_ready")}
    spec = lmcache_spec(ports)
    children = build_children(spec, OWNER)
    deps = {c["metadata"]["name"]: c for c in children if c["kind"] == "Deployment"}
    (cm,) = (
        c for c in children if c["kind"] == "ConfigMap" and c["metadata"]["name"] == "tiny-lmcache"
    )
    procs: list[Proc] = []
    try:
        for role in (Role.PREFILL, Role.DECODE):
            cmd, env = lmcache_adapt(
                container(deps[f"tiny-{role}"]),
                role,
                cm["data"][config_key(role)],
                vpy,
                model_dir,
                ports[str(role)],
                scratch,
            )
            procs.append(Proc(str(role), cmd, env, scratch / f"{role}.log"))
        r_args = router_args(spec, OWNER)
        assert r_args[r_args.index("--advertise-host") + 1] == "$(POD_IP)"
        assert r_args[r_args.index("--kv-ready-port") + 1] == str(ports["kv_ready"])
        procs.append(router_proc(r_args, ports, scratch))
        urls = {k: f"http://{HOST}:{ports[k]}" for k in ("prefill", "decode", "router")}

        # The router is healthy once its canary hand-off verified the pair (a real push).
        wait_plane(urls, procs, router_timeout=120, what="LMCache engines and router")
        yield urls
    finally:
        for p in reversed(procs):
            p.stop()


def router_metric(urls: dict[str, str], name: str, labels: str) -> float:
    async def go() -> str:
        async with aiohttp.ClientSession() as s, s.get(f"{urls['router']}/metrics") as r:
            return await r.text()

    for line in asyncio.run(go()).splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def delivered(urls: dict[str, str]) -> float:
    return router_metric(urls, "tandem_router_kv_ready_notifications_total", 'outcome="delivered"')


def reference(urls: dict[str, str], body: dict[str, Any], path: str = "/v1/completions") -> Any:
    """The decode engine alone (no hand-off), before any hand-off of this prompt: it must not
    load anything from LMCache, so its external-KV counter stays put."""
    before = external_tokens(metrics(urls["decode"]))
    answer = post(f"{urls['decode']}{path}", body)
    assert external_tokens(metrics(urls["decode"])) == before, "reference used transferred KV"
    return answer


def test_lmcache_handoff_moves_kv_and_matches_plain(lmc: dict[str, str]) -> None:
    want = reference(lmc, completion(PROMPT))["choices"][0]["text"]
    kv_before, ready_before = external_tokens(metrics(lmc["decode"])), delivered(lmc)
    got = post(f"{lmc['router']}/v1/completions", completion(PROMPT))
    kv_after, ready_after = external_tokens(metrics(lmc["decode"])), delivered(lmc)
    assert got["choices"][0]["text"] == want
    prompt_tokens = got["usage"]["prompt_tokens"]
    assert kv_after - kv_before >= prompt_tokens * 0.9, (kv_before, kv_after, prompt_tokens)
    assert ready_after - ready_before >= 1, (ready_before, ready_after)


def test_lmcache_streaming_matches_plain(lmc: dict[str, str]) -> None:
    prompt = PROMPTS[1]
    want = reference(lmc, completion(prompt))["choices"][0]["text"]

    async def stream() -> str:
        text = ""
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{lmc['router']}/v1/completions", json=completion(prompt, stream=True)) as r,
        ):
            assert r.status == 200, await r.text()
            async for raw in r.content:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                text += json.loads(line[6:])["choices"][0].get("text", "")
        return text

    before = external_tokens(metrics(lmc["decode"]))
    assert asyncio.run(stream()) == want
    assert external_tokens(metrics(lmc["decode"])) > before


def test_lmcache_chat_completion_matches_plain(lmc: dict[str, str]) -> None:
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": PROMPTS[2]}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    }
    want = reference(lmc, body, "/v1/chat/completions")["choices"][0]["message"]["content"]
    got = handed_off(lmc, body, "/v1/chat/completions")
    assert got["choices"][0]["message"]["content"] == want


def handed_off(urls: dict[str, str], body: dict[str, Any], path: str = "/v1/completions") -> Any:
    """`body` through the router, checked to be a hand-off that loaded >= 90% of the prompt."""
    kv_before = external_tokens(metrics(urls["decode"]))
    got = post(f"{urls['router']}{path}", body)
    kv_after = external_tokens(metrics(urls["decode"]))
    prompt_tokens = got["usage"]["prompt_tokens"]
    print(f"\n{path}: prompt {prompt_tokens} tokens, external_kv_transfer +{kv_after - kv_before}")
    assert kv_after - kv_before >= prompt_tokens * 0.9, (kv_before, kv_after, prompt_tokens)
    return got


#: README gotcha 2: greedy, the tiny model's first token after this prompt is 190, a
#: byte-fallback token (a partial UTF-8 character). The old decode leg's prompt ended with it, and
#: vLLM 0.32 then put the whole prompt text in front of the decoder's answer.
BYTE_FALLBACK_PROMPT = (
    "LMCache pushes the prompt's KV cache from the prefill engine into the decode engine's "
    "buffer and tells the router when it is ready. " * 6
)


def test_lmcache_byte_fallback_first_token_is_not_an_echo(lmc: dict[str, str]) -> None:
    body = completion(BYTE_FALLBACK_PROMPT, return_token_ids=True)
    plain = reference(lmc, body)["choices"][0]
    assert plain["token_ids"][0] == 190, "the tiny model no longer starts with the byte token"
    got = handed_off(lmc, body)["choices"][0]
    assert got["text"] == plain["text"], (got["text"][:200], plain["text"])
    assert got["token_ids"] == plain["token_ids"]
    assert BYTE_FALLBACK_PROMPT[:40] not in got["text"]


def test_lmcache_json_schema_answers_as_one_engine(lmc: dict[str, str]) -> None:
    """Structured output splits now (the decoder's grammar sees every token): the router's
    answer is the decode engine's own answer to the same request."""
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "count": {"type": "integer"}},
        "required": ["name", "count"],
    }
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": PROMPTS[3] + "Answer in JSON."}],
        "max_tokens": 48,
        "temperature": 0,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "thing", "schema": schema},
        },
    }
    want = reference(lmc, body, "/v1/chat/completions")["choices"][0]["message"]["content"]
    got = handed_off(lmc, body, "/v1/chat/completions")["choices"][0]["message"]["content"]
    print(f"json_schema answer: {got!r}")
    assert got == want
    assert got.lstrip().startswith("{")  # the grammar held from the first token on


def test_lmcache_logprobs_come_from_the_decoder(lmc: dict[str, str]) -> None:
    prompt = "import json\nimport asyncio\nfrom typing import Any\n" * 12
    body = completion(prompt, logprobs=2)
    plain = reference(lmc, body)["choices"][0]
    got = handed_off(lmc, body)["choices"][0]
    assert got["text"] == plain["text"]
    assert got["logprobs"]["tokens"] == plain["logprobs"]["tokens"]
    assert len(got["logprobs"]["token_logprobs"]) == MAX_TOKENS  # the first token's included
    pairs = zip(got["logprobs"]["token_logprobs"], plain["logprobs"]["token_logprobs"], strict=True)
    assert all(abs(a - b) < 0.05 for a, b in pairs), (got["logprobs"], plain["logprobs"])
