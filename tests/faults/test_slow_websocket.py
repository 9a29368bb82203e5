"""A browser that stops reading its WebSocket.

A supervisor's socket is opened (real TCP, a small receive buffer) and then never read
again while messages for it keep coming. Expected behaviour: the server fills the
kernel buffers, then the connection's bounded queue (`server.ws_queue_max`); at the cap
the connection is dropped: removed from the hub, its socket cut shortly after, without
waiting for the client to read (it never will), counted in `cti_ws_dropped`. Meanwhile another agent's pops keep
arriving as fast as before the flood (its latency does not depend on the stuck
socket), and calls keep completing with exactly one record and one activity each.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import statistics
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from cti.bus import streams as S
from cti.web.ws import DROP_ABORT_AFTER_S
from tests.faults.checks import assert_each_completed_call_once, wait_settled
from tests.faults.conftest import fault_settings, inject_calls, start_app, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

QUEUE_MAX = 16
SUPERVISOR = "sam"  # demo head supervisor (token demo-supervisor)
AGENT = "alice"
PAD = "x" * 32_000


def open_stuck_socket(port: int, token: str) -> socket.socket:
    """A WebSocket handshake by hand, then never read: a browser tab frozen in the background."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        assert chunk, "server closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def ended_by_server(s: socket.socket) -> bool:
    """True when the server has ended the connection (reset or FIN) although we never
    read: our side's TCP state is no longer ESTABLISHED (Linux TCP_INFO, first byte)."""
    tcp_established = 1
    return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] != tcp_established


async def test_stuck_websocket_is_dropped_at_queue_cap_and_others_are_unaffected(
    redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    settings = fault_settings(tmp_path, bus_url=redis_url, store_url=pg_url, server={"ws_queue_max": QUEUE_MAX})
    app = await start_app(settings)
    server = TestServer(app.web_app)
    await server.start_server()
    tenant = settings.site.tenant
    stuck = None
    try:
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"http://127.0.0.1:{server.port}/ws?token=demo-agent-{AGENT}")
            assert (await ws.receive_json(timeout=10))["type"] == "snapshot"  # registered in the hub now
            latencies: dict[str, float] = {}

            async def reader() -> None:
                async for msg in ws:
                    d = msg.json()
                    if d.get("type") == "screen_pop" and "probe" in d:
                        latencies[d["probe"]] = time.monotonic() - d["sent"]

            read_task = asyncio.create_task(reader())

            async def probe(name: str) -> float:
                await app.bus.publish(S.POPS, {"type": "screen_pop", "agent": AGENT, "tenant": tenant,
                                               "probe": name, "sent": time.monotonic()})
                await wait_for(lambda: name in latencies, 10, f"pop {name} to reach {AGENT}", every=0.01)
                return latencies[name]

            before = [await probe(f"before-{i}") for i in range(5)]

            stuck = await asyncio.to_thread(open_stuck_socket, server.port, "demo-supervisor")
            await wait_for(lambda: app.hub.connections == 2, 5, "both sockets registered")
            inject_calls(app, 6)
            during: list[float] = []
            for i in range(200):  # ~6 MB for the stuck socket, far more than the kernel buffers
                await app.bus.publish(S.POPS, {"type": "screen_pop", "agent": SUPERVISOR, "tenant": tenant,
                                               "pad": PAD, "i": i})
                if i % 20 == 0:
                    during.append(await probe(f"during-{i}"))
                if app.hub.connections == 1:
                    break
            await wait_for(lambda: app.hub.connections == 1, 10, "the stuck socket to be dropped")
            after = [await probe(f"after-{i}") for i in range(3)]
            assert app.metrics.ws_dropped._value.get() >= 1
            # still without reading: the server does not wait for this client to drain
            await asyncio.sleep(DROP_ABORT_AFTER_S + 1.0)
            assert ended_by_server(stuck), "the stuck socket was left open"

            # the reading agent was never held back by the stuck one (loose bound: a shared CI box)
            assert max(during + after) < max(1.0, 20 * statistics.median(before)), (before, during, after)
            assert not ws.closed
            read_task.cancel()
            await ws.close()

        await wait_settled(app.db.engine, ended_at_least=6, timeout=20)
        await assert_each_completed_call_once(app.db.engine)
    finally:
        if stuck is not None:
            stuck.close()
        await server.close()
        await app.stop()
