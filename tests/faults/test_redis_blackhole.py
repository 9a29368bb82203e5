"""Redis blackholed: connections stay open but every byte vanishes (a silent network hang).

The app reaches Redis through an in-process TCP proxy. Expected behaviour: no silent
hang. `/readyz` answers promptly (its bus check is bounded by a timeout) and goes to
503 with `bus: false`; blocked reads and publishes hit their socket timeouts and the
consumers reconnect with backoff; once the path is restored `/readyz` is 200 again,
the work raised meanwhile flows, and every completed call has exactly one record and
one activity.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.faults.checks import assert_each_completed_call_once, wait_settled
from tests.faults.conftest import fault_settings, inject_calls, start_app, wait_for
from tests.faults.proxy import TcpProxy
from tests.servers import RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]


async def test_blackholed_redis_makes_readyz_false_then_work_resumes(
    redis_url: str, redis_srv: RedisServer, pg_url: str, tmp_path: Path
) -> None:
    proxy = TcpProxy("127.0.0.1", redis_srv.port)
    port = await proxy.start()
    settings = fault_settings(tmp_path, bus_url=f"redis://127.0.0.1:{port}/0", store_url=pg_url,
                              bus={"socket_timeout_s": 1.5, "block_ms": 500, "claim_idle_ms": 2000})
    app = await start_app(settings)
    client = TestClient(TestServer(app.web_app))
    await client.start_server()

    async def ready() -> tuple[int, dict, float]:
        t0 = time.monotonic()
        resp = await client.get("/readyz", timeout=10)
        return resp.status, await resp.json(), time.monotonic() - t0

    try:
        status, body, _ = await ready()
        assert status == 200, body
        inject_calls(app, 6)
        await wait_settled(app.db.engine, ended_at_least=6, timeout=20)

        proxy.blackhole(True)
        inject_calls(app, 6)  # raised while the bus is unreachable

        seen: list[tuple[int, dict, float]] = []

        async def not_ready() -> bool:
            seen.append(await ready())
            return seen[-1][0] == 503

        await wait_for(not_ready, 10, "/readyz to report the blackholed bus")
        status, body, took = seen[-1]
        assert body["checks"]["bus"] is False and body["ready"] is False
        assert all(s[2] < 5 for s in seen), f"/readyz hung: {[round(s[2], 2) for s in seen]}"
        await asyncio.sleep(3)  # longer than the socket timeout: blocked reads must give up

        proxy.blackhole(False)

        async def is_ready() -> bool:
            return (await ready())[0] == 200

        await wait_for(is_ready, 15, "/readyz to recover")
        inject_calls(app, 6)
        await wait_settled(app.db.engine, ended_at_least=18, timeout=30)
        settled = await assert_each_completed_call_once(app.db.engine)
        assert settled.ended == 18
        assert proxy.connections_made > 1  # the app reconnected through the proxy
    finally:
        await client.close()
        await app.stop()
        await proxy.close()


async def test_slow_redis_link_delays_but_completes_every_call(
    redis_url: str, redis_srv: RedisServer, pg_url: str, tmp_path: Path
) -> None:
    """Every byte to and from Redis delayed 30 ms (a congested link): slower, not broken.
    /readyz stays 200 (well within its timeout), nothing is dead-lettered, and every
    completed call has exactly one record and one activity."""
    from cti.bus import streams as S

    proxy = TcpProxy("127.0.0.1", redis_srv.port)
    port = await proxy.start()
    settings = fault_settings(tmp_path, bus_url=f"redis://127.0.0.1:{port}/0", store_url=pg_url)
    app = await start_app(settings)
    client = TestClient(TestServer(app.web_app))
    await client.start_server()
    try:
        proxy.slow(0.03)
        inject_calls(app, 9)
        resp = await client.get("/readyz", timeout=10)
        assert resp.status == 200, await resp.text()
        await wait_settled(app.db.engine, ended_at_least=9, timeout=30)
        settled = await assert_each_completed_call_once(app.db.engine)
        assert settled.ended == 9
        for stream in (S.EVENTS, S.CALLS):
            assert await app.bus.dead_letters(stream) == [], stream
    finally:
        proxy.slow(0)
        await client.close()
        await app.stop()
        await proxy.close()
