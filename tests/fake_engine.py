"""A fake vLLM 0.32 OpenAI server for router tests and benchmarks (no model, no GPU).

It speaks enough of vLLM for the router: `/health`, `/v1/models`, `/metrics` (real metric names
and labels), `/tokenize`, `/detokenize`, `/v1/completions` and `/v1/chat/completions` (streamed
and not), the NIXL prefill answer (`kv_transfer_params` shaped like a real 0.32 prefill), and
LMCache's PD mode (`disagg_spec`, plus one ZMQ PUSH `ProxyNotif` per TP rank to the proxy).

Deterministic model: a token is one character (`/tokenize` returns code points, `/detokenize`
inverts it), and the token generated at absolute position p of a sequence is
`chr(ord("a") + p % 26)`. So a prompt of L tokens with max_tokens M yields the characters at
positions L..L+M-1, whichever engine computes it: tests can check a disaggregated answer
character by character against `expected_text`.

KV bookkeeping: engines of one test cluster can share a `KvFabric`. A NIXL prefill then holds
its blocks there until a decoder pulls them (`do_remote_prefill`), and an LMCache prefill pushes
its prompt's token ids into it until a decoder retrieves them by looking up its whole prompt
(`skip_last_n_tokens: 0`: token ids, a string prompt or chat messages, tokenized), exactly as
LMCache frees a receiver's buffer only on retrieval. Decoders count what they got from the
fabric as `external_kv_transfer` prompt tokens and recompute (`local_compute`) what is missing:
on a full LMCache hit that is the last prompt token (LMCache's `recalc_last`). Without a
fabric, a decoder trusts the protocol for token-id prompts.

`faults.degraded` models an engine whose KV connector failed at start (LMCache's "degraded
mode (recompute)"): it serves and answers `/health` 200, but a prefiller never pushes or
notifies and a decoder never loads external KV.

Requests whose `X-Request-Id` starts with `tandem-canary-` (the router's canary hand-offs) or
`tandem-drain-` (its drains of abandoned LMCache pushes) are recorded in `canary_requests` and
`drain_requests`, not in `requests`, and canary notifications are not in `notifications_sent`.

Use in-process (`async with FakeEngine(role="prefill") as engine: engine.url`) with injectable
faults (`engine.faults`), recorded requests (`engine.requests`) and settable metrics, or run it:

    python tests/fake_engine.py --port 8100 --role prefill --protocol nixl --instant
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import msgpack
import zmq
import zmq.asyncio
from aiohttp import web
from multidict import CIMultiDict

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
CANARY_ID_PREFIX = "tandem-canary-"
DRAIN_ID_PREFIX = "tandem-drain-"


def tokenize(text: str) -> list[int]:
    """One token per character."""
    return [ord(c) for c in text]


def detokenize(tokens: list[int]) -> str:
    """Inverse of `tokenize`."""
    return "".join(chr(t) for t in tokens)


def chat_template(messages: list[dict[str, Any]]) -> str:
    """A tiny, fixed chat template."""
    parts = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(f"<|{m.get('role', 'user')}|>{content or ''}\n")
    return "".join(parts) + "<|assistant|>"


def token_at(position: int) -> int:
    """The token the fake model generates at an absolute sequence position."""
    return ord("a") + position % 26


def expected_text(prompt_len: int, max_tokens: int) -> str:
    """What a full (non-disaggregated) generation returns for a prompt of `prompt_len` tokens."""
    return "".join(chr(token_at(prompt_len + i)) for i in range(max_tokens))


def structured_text(prompt_len: int, max_tokens: int) -> str:
    """What the fake model writes under a JSON `response_format`: a JSON object (deterministic)."""
    return json.dumps({"text": expected_text(prompt_len, max_tokens)})


@dataclass
class KvFabric:
    """KV in transit between the fake engines of one cluster (see the module docstring)."""

    #: NIXL: remote_request_id → prompt tokens a prefiller holds for a decoder to pull.
    nixl: dict[str, int] = field(default_factory=dict)
    #: LMCache: pushed prompt token ids → pushes not yet retrieved by a decoder.
    lmcache: dict[tuple[int, ...], int] = field(default_factory=dict)

    def push(self, tokens: list[int]) -> None:
        key = tuple(tokens)
        self.lmcache[key] = self.lmcache.get(key, 0) + 1

    def retrieve(self, tokens: list[int]) -> bool:
        """Take one push of `tokens` out of the buffer; False when there is none."""
        key = tuple(tokens)
        left = self.lmcache.get(key, 0)
        if not left:
            return False
        if left == 1:
            del self.lmcache[key]
        else:
            self.lmcache[key] = left - 1
        return True


@dataclass
class Faults:
    """Failures to inject; tests set the fields they need."""

    #: Answer completions with this status (and an OpenAI error body).
    status: int | None = None
    #: Seconds to wait before answering completions.
    delay: float = 0.0
    #: Never answer completions (until the client goes away).
    hang: bool = False
    #: Seconds between streamed tokens.
    token_delay: float = 0.0
    #: Close the connection after this many streamed chunks (a broken stream).
    break_after_chunks: int | None = None
    #: NIXL prefill: answer without `kv_transfer_params`.
    omit_kv_params: bool = False
    #: LMCache prefill: never send the ZMQ notifications.
    drop_notifications: bool = False
    #: LMCache prefill: send the notifications this many seconds after answering.
    notify_delay: float = 0.0
    #: LMCache prefill: seconds between the notifications of successive sender ranks.
    rank_delay: float = 0.0
    #: Every answer ends with finish_reason "stop" (an EOS).
    stop: bool = False
    #: Status of GET /health.
    health_status: int = 200
    #: Seconds before GET /health answers (a busy engine).
    health_delay: float = 0.0
    #: The KV connector failed at start: serve normally, never push, notify or load KV.
    degraded: bool = False
    #: Close this many connections that carry a completion request on a *reused* keep-alive
    #: connection, without answering (the engine closed an idle connection as it was reused).
    drop_reused: int = 0


@dataclass
class RecordedRequest:
    """A request the engine received."""

    path: str
    headers: CIMultiDict[str]
    body: dict[str, Any]
    cancelled: bool = False
    finished: bool = False


@dataclass
class EngineMetrics:
    """Values served on /metrics; None means "use the live count"."""

    waiting: float | None = None
    running: float | None = None
    kv_cache_usage: float = 0.0
    prompt_tokens_by_source: dict[str, float] = field(
        default_factory=lambda: {
            "local_compute": 0.0,
            "local_cache_hit": 0.0,
            "external_kv_transfer": 0.0,
        }
    )


def gauge_lines(waiting: float, running: float, kv_usage: float, model: str) -> list[str]:
    """vLLM 0.32's scheduler gauges in the exposition format, as a real engine writes them."""
    labels = f'engine="0",model_name="{model}"'
    return [
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge",
        f"vllm:num_requests_running{{{labels}}} {running}",
        "# HELP vllm:num_requests_waiting Number of requests waiting to be processed.",
        "# TYPE vllm:num_requests_waiting gauge",
        f"vllm:num_requests_waiting{{{labels}}} {waiting}",
        "# HELP vllm:num_requests_waiting_by_reason Waiting requests by reason.",
        "# TYPE vllm:num_requests_waiting_by_reason gauge",
        f'vllm:num_requests_waiting_by_reason{{{labels},reason="capacity"}} {waiting}',
        f'vllm:num_requests_waiting_by_reason{{{labels},reason="deferred"}} 0.0',
        "# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.",
        "# TYPE vllm:kv_cache_usage_perc gauge",
        f"vllm:kv_cache_usage_perc{{{labels}}} {kv_usage}",
    ]


class FakeEngine:
    """One fake engine server."""

    def __init__(
        self,
        *,
        role: str = "decode",
        protocol: str = "nixl",
        model: str = "tiny",
        host: str = "127.0.0.1",
        port: int = 0,
        tp_size: int = 1,
        pp_size: int = 1,
        proxy: str | None = None,
        instant: bool = False,
        record: bool = True,
        max_model_len: int = 1 << 20,
        kv: KvFabric | None = None,
    ) -> None:
        self.role = role
        self.protocol = protocol
        self.model = model
        self.host = host
        self.port = port
        self.tp_size = tp_size
        self.pp_size = pp_size
        self.proxy = proxy
        self.instant = instant
        self.record = record and not instant
        self.max_model_len = max_model_len
        self.engine_id = str(uuid.uuid4())
        self.kv = kv
        self.faults = Faults()
        self.metrics = EngineMetrics()
        self.requests: list[RecordedRequest] = []
        self.canary_requests: list[RecordedRequest] = []
        self.drain_requests: list[RecordedRequest] = []
        self.inflight = 0
        self.notifications_sent = 0
        self.connections_dropped = 0
        self._connections: weakref.WeakSet[object] = weakref.WeakSet()
        self._runner: web.AppRunner | None = None
        self._zmq: zmq.asyncio.Context | None = None
        self._push: zmq.asyncio.Socket | None = None
        self._push_target: str | None = None
        self._background: set[asyncio.Task[None]] = set()

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://{self.host}:{self.port}"

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=256 * 1024 * 1024, middlewares=[self._track])
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/version", self._version)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_post("/detokenize", self._detokenize)
        app.router.add_post(COMPLETIONS_PATH, self._completions)
        app.router.add_post(CHAT_PATH, self._completions)
        return app

    async def start(self) -> None:
        """Listen (port 0 picks a free port)."""
        self._runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        server = site._server
        if server is not None and server.sockets:  # type: ignore[attr-defined]
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Stop listening and close sockets."""
        for task in list(self._background):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._push is not None:
            self._push.close(linger=0)
        if self._zmq is not None:
            self._zmq.term()

    async def __aenter__(self) -> FakeEngine:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- helpers for tests ---------------------------------------------------------------

    def completion_requests(self) -> list[RecordedRequest]:
        """Recorded /v1/completions and /v1/chat/completions calls."""
        return [r for r in self.requests if r.path in (COMPLETIONS_PATH, CHAT_PATH)]

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        """Poll until `predicate()` is true."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met")
            await asyncio.sleep(0.01)

    # --- simple endpoints ----------------------------------------------------------------

    @web.middleware
    async def _track(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Remember connections; drop a reused one as `faults.drop_reused` says."""
        transport = request.transport
        reused = transport in self._connections
        if transport is not None:
            self._connections.add(transport)
        if reused and self.faults.drop_reused > 0 and request.path != "/health":
            self.faults.drop_reused -= 1
            self.connections_dropped += 1
            assert transport is not None
            transport.close()
            raise web.HTTPServiceUnavailable()  # never sent: the connection is gone
        return await handler(request)

    async def _health(self, _: web.Request) -> web.Response:
        if self.faults.health_delay:
            await asyncio.sleep(self.faults.health_delay)
        return web.Response(status=self.faults.health_status)

    async def _version(self, _: web.Request) -> web.Response:
        return web.json_response({"version": "0.32.0"})

    async def _models(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.model,
                        "object": "model",
                        "created": int(time.time()),
                        "owned_by": "vllm",
                        "root": self.model,
                        "max_model_len": self.max_model_len,
                    }
                ],
            }
        )

    async def _metrics(self, _: web.Request) -> web.Response:
        m = self.metrics
        waiting = m.waiting if m.waiting is not None else 0.0
        running = m.running if m.running is not None else float(self.inflight)
        labels = f'engine="0",model_name="{self.model}"'
        lines = [
            *gauge_lines(waiting, running, m.kv_cache_usage, self.model),
            "# HELP vllm:prompt_tokens_by_source_total Prompt tokens by source.",
            "# TYPE vllm:prompt_tokens_by_source_total counter",
        ]
        for source, value in m.prompt_tokens_by_source.items():
            lines.append(
                f'vllm:prompt_tokens_by_source_total{{{labels},source="{source}"}} {value}'
            )
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request, body)
        if "messages" in body:
            text = chat_template(body["messages"])
        elif isinstance(body.get("prompt"), str):
            text = body["prompt"]
        else:
            return _error(400, "prompt or messages required")
        tokens = tokenize(text)
        return web.json_response(
            {
                "count": len(tokens),
                "max_model_len": self.max_model_len,
                "tokens": tokens,
                "token_strs": None,
            }
        )

    async def _detokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request, body)
        return web.json_response({"prompt": detokenize(body.get("tokens") or [])})

    def _record(self, request: web.Request, body: dict[str, Any]) -> RecordedRequest:
        rec = RecordedRequest(path=request.path, headers=CIMultiDict(request.headers), body=body)
        if self.record:
            rid = request.headers.get("X-Request-Id", "")
            if rid.startswith(CANARY_ID_PREFIX):
                self.canary_requests.append(rec)
            elif rid.startswith(DRAIN_ID_PREFIX):
                self.drain_requests.append(rec)
            else:
                self.requests.append(rec)
        return rec

    # --- completions ---------------------------------------------------------------------

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        rec = self._record(request, body)
        self.inflight += 1
        try:
            return await self._complete(request, body)
        except asyncio.CancelledError:
            rec.cancelled = True
            raise
        finally:
            self.inflight -= 1
            rec.finished = True

    def _prompt_length(self, path: str, body: dict[str, Any]) -> int | None:
        """Prompt tokens (one per character); computed without building the token list, so
        a 220 KB prompt costs the fake engine almost nothing beyond parsing the JSON."""
        if path == CHAT_PATH:
            return len(chat_template(body.get("messages") or []))
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if isinstance(prompt, str):
            return len(prompt)
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
            return len(prompt)
        return None

    async def _complete(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        faults = self.faults
        if not self.instant:
            if faults.hang:
                await asyncio.Event().wait()
            if faults.delay:
                await asyncio.sleep(faults.delay)
            if faults.status is not None:
                return _error(faults.status, f"injected failure {faults.status}")
        is_chat = request.path == CHAT_PATH
        prompt_len = self._prompt_length(request.path, body)
        if prompt_len is None:
            return _error(400, "unsupported prompt")
        if body.get("model") not in (None, self.model):
            return _error(404, f"The model `{body.get('model')}` does not exist.")
        limit = body.get("max_completion_tokens") if is_chat else None
        max_tokens = limit or body.get("max_tokens") or 16
        # Two validations of vLLM's that a careless prefill leg would trip over.
        if body.get("stream_options") is not None and not body.get("stream"):
            return _error(400, "Stream options can only be defined when `stream=True`.")
        if (body.get("min_tokens") or 0) > max_tokens:
            return _error(400, "min_tokens must be less than or equal to max_tokens")
        kv_out = self._kv_transfer(request, body, prompt_len)
        generated = generate(body, prompt_len, max_tokens)
        request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        rid = ("chatcmpl-" if is_chat else "cmpl-") + request_id
        if body.get("stream"):
            return await self._stream(request, body, rid, prompt_len, generated, is_chat)
        text = detokenize(generated)
        finish = "stop" if faults.stop else "length"
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish}
        if is_chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
            choice["stop_reason"] = None
        answer: dict[str, Any] = {
            "id": rid,
            "object": "chat.completion" if is_chat else "text_completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_len,
                "completion_tokens": len(generated),
                "total_tokens": prompt_len + len(generated),
            },
        }
        if kv_out is not None:
            answer["kv_transfer_params"] = kv_out
        return web.json_response(answer)

    def _kv_transfer(
        self, request: web.Request, body: dict[str, Any], prompt_len: int
    ) -> dict[str, Any] | None:
        """Account the prompt's source and build the prefill's `kv_transfer_params` answer."""
        kv_in = body.get("kv_transfer_params")
        if isinstance(kv_in, dict) and kv_in.get("do_remote_prefill"):  # NIXL decode: pull
            self._account(prompt_len, self._pulled(kv_in, prompt_len))
            return None
        if not isinstance(kv_in, dict):  # plain, or an LMCache decode leg
            self._account(prompt_len, self._retrieved(request.path, body))
            return None
        self._account(prompt_len, 0)
        if kv_in.get("do_remote_decode"):  # NIXL prefill
            return None if self.faults.omit_kv_params else self._nixl_params(request, prompt_len)
        spec = kv_in.get("disagg_spec")
        if not isinstance(spec, dict):
            return None
        if not self.faults.degraded:  # LMCache prefill: push, and notify once per sender rank
            prompt = body.get("prompt")
            tokens = prompt if isinstance(prompt, list) else None
            self._push_kv(str(spec.get("req_id")), tokens, _canary(request))
        return {"first_tok": token_at(prompt_len)} if kv_in.get("ret_first_tok") else None

    def _account(self, prompt_len: int, external: int) -> None:
        by_source = self.metrics.prompt_tokens_by_source
        by_source["external_kv_transfer"] += external
        by_source["local_compute"] += prompt_len - external

    def _pulled(self, kv_in: dict[str, Any], prompt_len: int) -> int:
        """Prompt tokens a NIXL decoder pulled (0: it recomputes, as `recompute` policy does)."""
        if self.faults.degraded:
            return 0
        if self.kv is None:
            return prompt_len
        return min(prompt_len, self.kv.nixl.pop(str(kv_in.get("remote_request_id")), 0))

    def _retrieved(self, path: str, body: dict[str, Any]) -> int:
        """Prompt tokens an LMCache decoder loaded from its buffer: it looks up its whole
        prompt, and on a hit loads all of it but recomputes the last token (`recalc_last`)."""
        if self.protocol != "lmcache" or self.role != "decode" or self.faults.degraded:
            return 0
        if self.kv is not None and not self.kv.lmcache:  # nothing pushed: skip tokenizing
            return 0
        prompt = body.get("prompt")
        ids = prompt if isinstance(prompt, list) and prompt else None
        if ids is not None and not all(isinstance(t, int) for t in ids):
            return 0
        if self.kv is None:
            return len(ids) - 1 if ids is not None else 0
        if ids is None:
            if path == CHAT_PATH:
                ids = tokenize(chat_template(body.get("messages") or []))
            elif isinstance(prompt, str):
                ids = tokenize(prompt)
            else:
                return 0
        return len(ids) - 1 if ids and self.kv.retrieve(ids) else 0

    def _nixl_params(self, request: web.Request, prompt_len: int) -> dict[str, Any]:
        remote_request_id = f"cmpl-{request.headers.get('X-Request-Id', '')}-0"
        if self.kv is not None and not self.faults.degraded:
            self.kv.nixl[remote_request_id] = prompt_len
        return {
            "do_remote_prefill": True,
            "do_remote_decode": False,
            "remote_block_ids": [[1 + i for i in range(max(1, prompt_len // 16))]],
            "remote_engine_id": self.engine_id,
            "remote_request_id": remote_request_id,
            "remote_host": self.host,
            "remote_port": 5600,
            "tp_size": self.tp_size,
            "dcp_size": 1,
            "pp_size": self.pp_size,
            "remote_num_tokens": prompt_len,
            "remote_blocks_expiry_time": None,
            "transfer_mode": "pull",
            "remote_prefill_cached_tokens": 0,
        }

    def _push_kv(self, req_id: str, tokens: list[int] | None, canary: bool) -> None:
        """Push the prompt's KV to the decoder and notify the proxy once per sender rank
        (TP x PP); the KV is complete when the last rank notifies."""
        faults = self.faults
        ranks = self.tp_size * self.pp_size
        socket = None if faults.drop_notifications else self._proxy_socket()
        message = msgpack.packb({"type": "ProxyNotif", "req_id": req_id})

        async def send() -> None:
            for rank in range(ranks):
                await asyncio.sleep(faults.notify_delay if rank == 0 else faults.rank_delay)
                if rank == ranks - 1 and self.kv is not None and tokens is not None:
                    self.kv.push(tokens)
                if socket is not None:
                    await socket.send(message)
                    if not canary:
                        self.notifications_sent += 1

        task = asyncio.create_task(send())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _proxy_socket(self) -> zmq.asyncio.Socket | None:
        """The PUSH socket to the proxy (reconnected when `proxy` changes)."""
        if self.proxy is None:
            return None
        if self._zmq is None:
            self._zmq = zmq.asyncio.Context()
        if self._push is None or self._push_target != self.proxy:
            if self._push is not None:
                self._push.close(linger=0)
            self._push = self._zmq.socket(zmq.PUSH)
            self._push.setsockopt(zmq.LINGER, 0)
            self._push.connect(f"tcp://{self.proxy}")
            self._push_target = self.proxy
        return self._push

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        rid: str,
        prompt_len: int,
        generated: list[int],
        is_chat: bool,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=200)
        resp.content_type = "text/event-stream"
        await resp.prepare(request)
        created = int(time.time())
        obj = "chat.completion.chunk" if is_chat else "text_completion"
        faults = self.faults
        for i, tok in enumerate(generated):
            last = i == len(generated) - 1
            choice: dict[str, Any] = {
                "index": 0,
                "logprobs": None,
                "finish_reason": "length" if last else None,
            }
            if is_chat:
                delta: dict[str, Any] = {"content": chr(tok)}
                if i == 0:
                    delta["role"] = "assistant"
                choice["delta"] = delta
            else:
                choice["text"] = chr(tok)
                choice["stop_reason"] = None
            chunk = {"id": rid, "object": obj, "created": created, "model": self.model}
            chunk["choices"] = [choice]
            if not self.instant:
                if faults.break_after_chunks is not None and i >= faults.break_after_chunks:
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                if faults.token_delay:
                    await asyncio.sleep(faults.token_delay)
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        options = body.get("stream_options") or {}
        if options.get("include_usage"):
            usage = {
                "prompt_tokens": prompt_len,
                "completion_tokens": len(generated),
                "total_tokens": prompt_len + len(generated),
            }
            chunk = {"id": rid, "object": obj, "created": created, "model": self.model}
            chunk.update(choices=[], usage=usage)
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _canary(request: web.Request) -> bool:
    return request.headers.get("X-Request-Id", "").startswith(CANARY_ID_PREFIX)


def generate(body: dict[str, Any], prompt_len: int, max_tokens: int) -> list[int]:
    """The fake model's output tokens: positional letters, or a JSON object when asked for."""
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        return tokenize(structured_text(prompt_len, max_tokens))
    return [token_at(prompt_len + i) for i in range(max_tokens)]


def _error(status: int, message: str) -> web.Response:
    kind = "BadRequestError" if status < 500 else "InternalServerError"
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": status}},
        status=status,
    )


async def _serve(args: argparse.Namespace) -> None:
    engine = FakeEngine(
        role=args.role,
        protocol=args.protocol,
        model=args.model,
        host=args.host,
        port=args.port,
        tp_size=args.tp_size,
        pp_size=args.pp_size,
        proxy=args.proxy,
        instant=args.instant,
    )
    engine.faults.degraded = args.degraded
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with engine:
        print(f"fake engine {args.role}/{args.protocol} on {engine.url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Run one fake engine until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--role", choices=["prefill", "decode"], default="decode")
    parser.add_argument("--protocol", choices=["nixl", "lmcache"], default="nixl")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--tp-size", type=int, default=1)
    parser.add_argument("--pp-size", type=int, default=1, help="LMCache: notifications x TP")
    parser.add_argument(
        "--degraded", action="store_true", help="KV connector failed: never push or load KV"
    )
    parser.add_argument("--proxy", default=None, help="LMCache: host:port of the router's PULL")
    parser.add_argument("--instant", action="store_true", help="no recording, no fault checks")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
