"""LMCache "KV ready" notifications: the router's ZMQ PULL socket and the relay between replicas.

In LMCache's PD mode every prefiller pushes, once per TP rank, a msgpack map
`{"type": "ProxyNotif", "req_id": <disagg_spec.req_id>}` to the single address in its
configuration (`pd_proxy_host:pd_proxy_port`). Tandem points that address at the router
*Service*, so with several router replicas a notification lands on an arbitrary replica, not
necessarily the one waiting for it (dataplane.md §4.2).

The fix is to make the request id say who owns it: `make_req_id()` encodes the issuing replica's
`--advertise-host` and `--kv-ready-port` (`tandem-<host>-<port>-<hex>`). A replica that receives a
notification for another owner forwards it over a ZMQ PUSH socket to that owner's PULL port,
marking it as forwarded so a misconfigured pair of replicas cannot bounce it forever.
If a KV transfer fails LMCache never notifies at all, so waiters always carry a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack
import zmq
import zmq.asyncio

log = logging.getLogger(__name__)

REQ_ID_PREFIX: Final = "tandem"
NOTIF_TYPE: Final = "ProxyNotif"
#: Marks a notification relayed by another replica (never relayed twice).
FORWARDED_KEY: Final = "tandem_forwarded"
#: Upper bound on cached PUSH sockets to other replicas (one per peer address).
MAX_PEERS: Final = 64


def make_req_id(host: str, port: int, unique: str) -> str:
    """A `disagg_spec.req_id` that names its owning replica: `tandem-<host>-<port>-<unique>`."""
    return f"{REQ_ID_PREFIX}-{host}-{port}-{unique}"


def owner_of(req_id: str) -> tuple[str, int] | None:
    """The (host, port) encoded by `make_req_id`, or None for an id in another format.

    The host may itself contain dashes (DNS names) or colons (IPv6); the port and the unique
    suffix never contain dashes, so splitting from the right is unambiguous.
    """
    if not req_id.startswith(REQ_ID_PREFIX + "-"):
        return None
    parts = req_id[len(REQ_ID_PREFIX) + 1 :].rsplit("-", 2)
    if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2]:
        return None
    return parts[0], int(parts[1])


def decode_notification(raw: bytes) -> tuple[str, bool] | None:
    """(req_id, forwarded) of a ProxyNotif message, or None for anything else."""
    try:
        msg = msgpack.unpackb(raw, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None
    if not isinstance(msg, dict) or msg.get("type") != NOTIF_TYPE:
        return None
    req_id = msg.get("req_id")
    if not isinstance(req_id, str):
        return None
    return req_id, bool(msg.get(FORWARDED_KEY, False))


def encode_notification(req_id: str, *, forwarded: bool = False) -> bytes:
    """The wire form LMCache's `ProxyNotif` uses (msgspec tagged struct = msgpack map)."""
    msg: dict[str, Any] = {"type": NOTIF_TYPE, "req_id": req_id}
    if forwarded:
        msg[FORWARDED_KEY] = True
    return bytes(msgpack.packb(msg))


def zmq_address(host: str, port: int) -> str:
    """A tcp:// address, bracketing IPv6 literals."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


@dataclass(eq=False)
class KvWaiter:
    """Counts the notifications of one request until `expected` have arrived."""

    expected: int
    received: int = 0
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def notify(self) -> None:
        """One more TP rank reported its KV as delivered."""
        self.received += 1
        if self.received >= self.expected:
            self.event.set()

    async def wait(self) -> None:
        """Return once every expected notification arrived (bound it with a timeout)."""
        await self.event.wait()


class KvReadyHub:
    """The PULL socket, the table of waiting requests, and PUSH sockets to peer replicas."""

    def __init__(
        self,
        bind_host: str,
        port: int,
        advertise_host: str,
        *,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        self._bind_host = bind_host
        self._port = port
        self.advertise_host = advertise_host
        self._on_outcome = on_outcome or (lambda _outcome: None)
        self._waiters: dict[str, KvWaiter] = {}
        # Relays use plain (synchronous) sockets: a non-blocking send either queues at once or
        # raises zmq.Again, with no future to await.
        self._peers: OrderedDict[tuple[str, int], zmq.Socket[bytes]] = OrderedDict()
        self._push_ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._ctx: zmq.asyncio.Context | None = None
        self._pull: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound PULL port (resolved if 0 was requested)."""
        return self._port

    @property
    def owner(self) -> tuple[str, int]:
        """The (host, port) this replica writes into its request ids."""
        return self.advertise_host, self._port

    def new_req_id(self, unique: str) -> str:
        """A request id owned by this replica."""
        return make_req_id(self.advertise_host, self._port, unique)

    async def start(self) -> None:
        """Bind the PULL socket and start receiving."""
        self._ctx = zmq.asyncio.Context()
        self._push_ctx = zmq.Context()
        pull = self._ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.LINGER, 0)
        wildcard = self._bind_host in ("0.0.0.0", "::", "*", "")
        if wildcard or ":" in self._bind_host:
            pull.setsockopt(zmq.IPV6, 1)
        if wildcard:
            base = "tcp://*"
        else:
            base = (
                f"tcp://[{self._bind_host}]"
                if ":" in self._bind_host
                else f"tcp://{self._bind_host}"
            )
        if self._port == 0:
            self._port = pull.bind_to_random_port(base)
        else:
            pull.bind(f"{base}:{self._port}")
        self._pull = pull
        self._task = asyncio.create_task(self._receive_loop(), name="kv-ready-pull")
        log.info("Started KV-ready receiver", extra={"port": self._port})

    async def stop(self) -> None:
        """Stop receiving and close every socket."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for sock in self._peers.values():
            sock.close(linger=0)
        self._peers.clear()
        if self._pull is not None:
            self._pull.close(linger=0)
        if self._ctx is not None:
            self._ctx.term()
        if self._push_ctx is not None:
            self._push_ctx.term()

    def register(self, req_id: str, count: int) -> KvWaiter:
        """Register interest in `count` notifications for `req_id` (before sending the prefill,
        since notifications may beat the prefill's HTTP answer); `forget` it when done."""
        waiter = KvWaiter(expected=count)
        if count <= 0:
            waiter.event.set()
        self._waiters[req_id] = waiter
        return waiter

    def forget(self, req_id: str) -> None:
        """Stop counting notifications for `req_id` (later ones count as unknown)."""
        self._waiters.pop(req_id, None)

    @contextlib.contextmanager
    def expect(self, req_id: str, count: int) -> Iterator[KvWaiter]:
        """`register` for the duration of a block."""
        waiter = self.register(req_id, count)
        try:
            yield waiter
        finally:
            self.forget(req_id)

    async def _receive_loop(self) -> None:
        assert self._pull is not None
        while True:
            raw = await self._pull.recv()
            try:
                self.handle(raw)
            except Exception:  # a bad message must not stop the receiver
                log.exception("Failed handling KV-ready message")

    def handle(self, raw: bytes) -> None:
        """Deliver a notification locally, relay it to its owner, or drop it."""
        decoded = decode_notification(raw)
        if decoded is None:
            self._on_outcome("malformed")
            return
        req_id, forwarded = decoded
        owner = owner_of(req_id)
        if owner is None or owner == self.owner or req_id in self._waiters:
            waiter = self._waiters.get(req_id)
            if waiter is None:
                self._on_outcome("unknown")
                log.debug("Dropped KV-ready for unknown request", extra={"req_id": req_id})
                return
            waiter.notify()
            self._on_outcome("delivered")
            return
        if forwarded:
            self._on_outcome("dropped")
            log.warning(
                "Dropped KV-ready relayed to the wrong replica",
                extra={"req_id": req_id, "owner": f"{owner[0]}:{owner[1]}"},
            )
            return
        self._forward(owner, req_id)

    def _forward(self, owner: tuple[str, int], req_id: str) -> None:
        sock = self._peer(owner)
        try:
            sock.send(encode_notification(req_id, forwarded=True), flags=zmq.NOBLOCK)
        except zmq.Again:
            self._on_outcome("dropped")
            log.warning("Dropped KV-ready relay, peer queue full", extra={"req_id": req_id})
            return
        self._on_outcome("forwarded")

    def _peer(self, owner: tuple[str, int]) -> zmq.Socket[bytes]:
        sock = self._peers.get(owner)
        if sock is not None:
            self._peers.move_to_end(owner)
            return sock
        assert self._push_ctx is not None
        sock = self._push_ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        if ":" in owner[0]:
            sock.setsockopt(zmq.IPV6, 1)
        sock.connect(zmq_address(*owner))
        self._peers[owner] = sock
        if len(self._peers) > MAX_PEERS:
            _, oldest = self._peers.popitem(last=False)
            oldest.close(linger=0)
        return sock
