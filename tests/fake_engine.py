"""A fake vLLM 0.32 OpenAI server for router tests and benchmarks (no model, no GPU).

It speaks enough of vLLM for the router: `/health`, `/v1/models`, `/metrics` (real metric names
and labels), `/tokenize`, `/detokenize`, `/v1/completions` and `/v1/chat/completions` (streamed
and not), the NIXL prefill answer (`kv_transfer_params` shaped like a real 0.32 prefill), and
LMCache's PD mode (`ret_first_tok`, plus one ZMQ PUSH `ProxyNotif` per TP rank to the proxy).

Deterministic model: a token is one character (`/tokenize` returns code points, `/detokenize`
inverts it), and the token generated at absolute position p of a sequence is
`chr(ord("a") + p % 26)`. So a prompt of L tokens with max_tokens M yields the characters at
positions L..L+M-1, and a decoder that receives `prompt + [first token]` continues exactly
where the prefiller stopped: tests can check the stitched answer character by character.

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
    #: LMCache prefill: answer without `choices[0].text` (the router must /detokenize).
    omit_first_text: bool = False
    #: Status of GET /health.
    health_status: int = 200


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
        proxy: str | None = None,
        instant: bool = False,
        record: bool = True,
        max_model_len: int = 1 << 20,
    ) -> None:
        self.role = role
        self.protocol = protocol
        self.model = model
        self.host = host
        self.port = port
        self.tp_size = tp_size
        self.proxy = proxy
        self.instant = instant
        self.record = record and not instant
        self.max_model_len = max_model_len
        self.engine_id = str(uuid.uuid4())
        self.faults = Faults()
        self.metrics = EngineMetrics()
        self.requests: list[RecordedRequest] = []
        self.inflight = 0
        self.notifications_sent = 0
        self._runner: web.AppRunner | None = None
        self._zmq: zmq.asyncio.Context | None = None
        self._push: zmq.asyncio.Socket | None = None
        self._background: set[asyncio.Task[None]] = set()

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://{self.host}:{self.port}"

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application(client_max_size=256 * 1024 * 1024)
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

    async def _health(self, _: web.Request) -> web.Response:
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
        kv_in = body.get("kv_transfer_params")
        kv_out = self._kv_transfer(request, prompt_len, kv_in)
        generated = [token_at(prompt_len + i) for i in range(max_tokens)]
        request_id = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        rid = ("chatcmpl-" if is_chat else "cmpl-") + request_id
        if body.get("stream"):
            return await self._stream(request, body, rid, prompt_len, generated, is_chat)
        text: str | None = detokenize(generated)
        if self.protocol == "lmcache" and kv_out is not None and faults.omit_first_text:
            text = None
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": "length"}
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
        self, request: web.Request, prompt_len: int, kv_in: Any
    ) -> dict[str, Any] | None:
        """Account the prompt's source and build the prefill's `kv_transfer_params` answer."""
        by_source = self.metrics.prompt_tokens_by_source
        if not isinstance(kv_in, dict):
            by_source["local_compute"] += prompt_len
            return None
        if kv_in.get("do_remote_prefill"):  # NIXL decode: KV pulled from the prefiller
            by_source["external_kv_transfer"] += prompt_len
            return None
        by_source["local_compute"] += prompt_len
        if kv_in.get("do_remote_decode"):  # NIXL prefill
            if self.faults.omit_kv_params:
                return None
            return {
                "do_remote_prefill": True,
                "do_remote_decode": False,
                "remote_block_ids": [[1 + i for i in range(max(1, prompt_len // 16))]],
                "remote_engine_id": self.engine_id,
                "remote_request_id": f"cmpl-{request.headers.get('X-Request-Id', '')}-0",
                "remote_host": self.host,
                "remote_port": 5600,
                "tp_size": self.tp_size,
                "dcp_size": 1,
                "pp_size": 1,
                "remote_num_tokens": prompt_len,
                "remote_blocks_expiry_time": None,
                "transfer_mode": "pull",
                "remote_prefill_cached_tokens": 0,
            }
        spec = kv_in.get("disagg_spec")
        if isinstance(spec, dict):  # LMCache prefill
            self._notify(str(spec.get("req_id")), len(spec.get("receiver_init_port") or [1]))
            if kv_in.get("ret_first_tok"):
                return {"first_tok": token_at(prompt_len)}
        return None

    def _notify(self, req_id: str, ranks: int) -> None:
        if self.faults.drop_notifications or self.proxy is None:
            return
        if self._push is None:
            self._zmq = zmq.asyncio.Context()
            self._push = self._zmq.socket(zmq.PUSH)
            self._push.setsockopt(zmq.LINGER, 0)
            self._push.connect(f"tcp://{self.proxy}")
        push = self._push
        message = msgpack.packb({"type": "ProxyNotif", "req_id": req_id})

        async def send() -> None:
            if self.faults.notify_delay:
                await asyncio.sleep(self.faults.notify_delay)
            for _ in range(ranks):
                await push.send(message)
                self.notifications_sent += 1

        task = asyncio.create_task(send())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
        proxy=args.proxy,
        instant=args.instant,
    )
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
    parser.add_argument("--proxy", default=None, help="LMCache: host:port of the router's PULL")
    parser.add_argument("--instant", action="store_true", help="no recording, no fault checks")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
