"""Browser WebSockets (DESIGN principle 6).

- Authenticated before the upgrade (token + Origin check); refused upgrades are
  plain HTTP 401/403, so nothing is half-open.
- One bounded outbound queue per connection, drained by a writer task that runs
  only while messages wait: a broadcast never awaits a socket, and a client that
  stops reading is dropped when its queue is full (others are unaffected).
- A `snapshot` is the first message of every connection, so a reconnecting
  panel never misses a pop.
- A revoked or expired token closes its open sockets (checked every second).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import WSCloseCode, web

from cti.web.auth import Principal

log = structlog.get_logger(__name__)

CLOSE_BAD_TOKEN = 4401
CLOSE_TOO_SLOW = 4408
# a dropped client gets this long for a clean close; one that does not read at all
# (its writer is stuck sending into full socket buffers) is then cut at the TCP level
DROP_ABORT_AFTER_S = 2.0

SnapshotFn = Callable[[Principal], Awaitable[dict[str, Any]]]


class Outbox:
    """A connection's bounded outbound queue: the part of `asyncio.Queue` the hub uses.

    asyncio.Queue holds three deques and an Event (~3 KB) for its whole life; this holds a
    deque only while messages wait (an idle agent's socket is most of the time, and memory
    per connected agent is a budget). Nothing waits on it: the hub starts a writer when it
    puts a message (`Hub._kick`).
    """

    __slots__ = ("_items", "_maxsize")

    def __init__(self, maxsize: int = 0) -> None:
        self._items: deque[str | None] | None = None
        self._maxsize = maxsize

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return 0 < self._maxsize <= self.qsize()

    def put_nowait(self, item: str | None) -> None:
        if self.full():
            raise asyncio.QueueFull
        if self._items is None:
            self._items = deque()
        self._items.append(item)

    def get_nowait(self) -> str | None:
        if not self._items:
            raise asyncio.QueueEmpty
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item


@dataclass(eq=False, slots=True)
class Connection:
    principal: Principal
    ws: web.WebSocketResponse
    queue: Outbox | asyncio.Queue[str | None]
    agent_team: str | None = None
    dropped: bool = False
    close_code: int = CLOSE_TOO_SLOW
    transport: Any = None  # the TCP transport, to cut a client that never reads
    # Served sockets get a writer task only while messages wait (`Hub._kick`): most connected
    # agents are idle most of the time, and a parked task per socket costs ~1 KB of the
    # per-agent memory budget. Connections built by hand (tests) drain their own queue.
    drain: bool = False
    writer: asyncio.Task[None] | None = None


def origin_allowed(origin: str | None, allowed: list[str], host: str | None) -> bool:
    """No Origin (non-browser client) is fine; a browser's must be ours or listed."""
    if not origin:
        return True
    if "*" in allowed or origin in allowed:
        return True
    parts = urlsplit(origin)
    return bool(host) and parts.netloc == host


class Hub:
    """Routes messages to the sockets that may see them."""

    def __init__(
        self,
        *,
        queue_max: int = 256,
        team_of: Callable[[str | None], str | None] = lambda _agent: None,
        metrics: Any = None,
    ) -> None:
        self.queue_max = queue_max
        self.team_of = team_of
        self.metrics = metrics
        self._by_agent: dict[str, set[Connection]] = {}
        self._watchers: set[Connection] = set()  # supervisors and admins
        self._all: set[Connection] = set()

    # ---- registration -------------------------------------------------------
    def add(self, conn: Connection) -> None:
        self._all.add(conn)
        self._by_agent.setdefault(conn.principal.user, set()).add(conn)
        if conn.principal.can_monitor():
            self._watchers.add(conn)
        if self.metrics:
            self.metrics.ws_clients.set(len(self._all))

    def remove(self, conn: Connection) -> None:
        self._all.discard(conn)
        self._watchers.discard(conn)
        peers = self._by_agent.get(conn.principal.user)
        if peers is not None:
            peers.discard(conn)
            if not peers:
                del self._by_agent[conn.principal.user]
        if self.metrics:
            self.metrics.ws_clients.set(len(self._all))

    def has_watchers(self) -> bool:
        return bool(self._watchers)

    @property
    def connections(self) -> int:
        return len(self._all)

    # ---- delivery -----------------------------------------------------------
    def _kick(self, conn: Connection) -> None:
        """Start the connection's writer if messages wait and none runs (one at a time: order)."""
        if conn.drain and (conn.writer is None or conn.writer.done()):
            conn.writer = asyncio.get_running_loop().create_task(self._writer(conn))

    def _offer(self, conn: Connection, text: str) -> None:
        if conn.dropped:
            return
        try:
            conn.queue.put_nowait(text)
            self._kick(conn)
        except asyncio.QueueFull:
            conn.dropped = True
            if self.metrics:
                self.metrics.ws_dropped.inc()
            log.warning("ws_client_dropped", user=conn.principal.user, reason="queue_full")
            # the writer closes the socket; make room for the sentinel
            with contextlib.suppress(asyncio.QueueEmpty):
                conn.queue.get_nowait()
            conn.queue.put_nowait(None)
            self._kick(conn)
            # a full queue usually means the writer is blocked sending to a client that
            # stopped reading: it would never reach the sentinel, so cut the connection
            # if it is still open shortly (the reader loop then ends and unregisters it)
            self.remove(conn)
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().call_later(DROP_ABORT_AFTER_S, self._abort_if_open, conn)

    @staticmethod
    def _abort_if_open(conn: Connection) -> None:
        if conn.transport is not None and not conn.transport.is_closing():
            log.warning("ws_client_aborted", user=conn.principal.user, reason="not_reading")
            # linger 0: a reset now, not a FIN queued behind megabytes the client never reads
            sock = conn.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.transport.abort()

    def to_agent(self, tenant: str, agent: str, message: dict[str, Any], *, watchers: bool = False) -> int:
        """Send to an agent's sockets (and, if asked, to supervisors who may see that agent)."""
        text = json.dumps(message, default=str)
        n = 0
        # copies: a connection dropped by _offer leaves these sets during the loop
        for conn in tuple(self._by_agent.get(agent, ())):
            if conn.principal.tenant == tenant:
                self._offer(conn, text)
                n += 1
        if watchers:
            team = self.team_of(agent)
            for conn in tuple(self._watchers):
                if conn.principal.user != agent and conn.principal.can_see_agent(agent, team, tenant):
                    self._offer(conn, text)
                    n += 1
        return n

    def to_watchers(self, tenant: str, message: dict[str, Any], *, agent: str | None = None) -> int:
        """Send to supervisors/admins of the tenant (only those who may see `agent`, if given)."""
        text = json.dumps(message, default=str)
        team = self.team_of(agent) if agent else None
        n = 0
        for conn in tuple(self._watchers):
            p = conn.principal
            if p.tenant != tenant:
                continue
            if agent is not None and not p.can_see_agent(agent, team, tenant):
                continue
            self._offer(conn, text)
            n += 1
        return n

    def to_user(self, tenant: str, user: str, message: dict[str, Any]) -> int:
        return self.to_agent(tenant, user, message)

    def close_revoked(self, is_valid: Callable[[str], bool]) -> int:
        n = 0
        for conn in list(self._all):
            if not is_valid(conn.principal.token_hash) and not conn.dropped:
                conn.dropped = True
                conn.close_code = CLOSE_BAD_TOKEN
                conn.queue.put_nowait(None)
                self._kick(conn)
                n += 1
        return n

    async def close_all(self, code: int = WSCloseCode.GOING_AWAY, message: bytes = b"server shutdown",
                        grace_s: float = 3.0) -> None:
        """Close every socket at once (1001); a client that does not answer the close frame
        within `grace_s` is cut, so shutdown never waits on a stuck browser."""
        conns = list(self._all)
        if not conns:
            return

        async def close(conn: Connection) -> None:
            with contextlib.suppress(Exception):
                await conn.ws.close(code=code, message=message)

        tasks = [asyncio.create_task(close(c)) for c in conns]
        _done, pending = await asyncio.wait(tasks, timeout=grace_s)
        for t in pending:
            t.cancel()

    # ---- one connection's life ---------------------------------------------
    async def serve(self, request: web.Request, principal: Principal, snapshot: SnapshotFn) -> web.WebSocketResponse:
        # no permessage-deflate: browsers always offer it, and each accepting socket keeps a
        # zlib window of ~256 KB (13x the memory budget of a connected agent) for messages of a few KB
        ws = web.WebSocketResponse(heartbeat=30, max_msg_size=64 * 1024, compress=False)
        await ws.prepare(request)
        conn = Connection(principal, ws, Outbox(self.queue_max), transport=request.transport, drain=True)
        try:
            first = await snapshot(principal)
        except Exception:
            log.exception("ws_snapshot_failed", user=principal.user)
            first = {"type": "snapshot", "error": "snapshot unavailable"}
        # register before the snapshot is queued: nothing published meanwhile is lost
        self.add(conn)
        conn.queue.put_nowait(json.dumps(first, default=str))
        del first  # this frame lives as long as the socket: keep no copy of the snapshot
        self._kick(conn)
        try:
            async for msg in ws:
                # clients only send pings/acks; anything else is ignored
                if msg.type == web.WSMsgType.TEXT and msg.data == "ping":
                    self._offer(conn, '{"type":"pong"}')
        finally:
            self.remove(conn)
            conn.drain = False  # nothing starts a writer any more
            writer = conn.writer
            if writer is not None:
                if conn.dropped and not writer.done():
                    # the writer is closing the socket (our close code); cancelling it now
                    # would turn a clean 4401/4408 into an abnormal closure
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.shield(writer), 5)
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await writer
        return ws

    async def _writer(self, conn: Connection) -> None:
        """Send what waits, then end (the next message starts a new writer)."""
        ws = conn.ws
        try:
            while not conn.queue.empty():
                text = conn.queue.get_nowait()
                if text is None:
                    await ws.close(code=conn.close_code, message=b"closed by server")
                    return
                await ws.send_str(text)
        except (ConnectionResetError, RuntimeError):
            return
        finally:
            if conn.writer is asyncio.current_task():
                conn.writer = None  # a finished task kept per idle socket is memory for nothing
