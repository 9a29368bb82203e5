"""Provider connection cut mid-call, and provider restart, at the app level (Asterisk ARI fake behind the TCP proxy).

The adapter's own cut/restart behaviour is tested in test_adapter_reconnect_*.py; this
checks what the whole app makes of it. Calls come in from the PBX, are routed to the
demo agents (their PBX endpoints answer) and are talking when the link is cut and
refused. While the link is down one caller hangs up and a new call arrives (both
events are lost, as with a real Asterisk). Expected behaviour: `/readyz`-style
readiness reports the provider down, the adapter reconnects and resyncs (the call
that ended meanwhile is ended, the new one appears), and after the remaining calls
end every completed call has exactly one record and one activity.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from tests.adapters.asterisk.fake_ari import Behaviour, FakeARI
from tests.faults.checks import assert_each_completed_call_once, counts, wait_settled
from tests.faults.conftest import start_app, wait_for
from tests.faults.proxy import TcpProxy

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

SUPPORT = "100"  # the demo support queue's short number


def _answering(fake: FakeARI, settings: Any) -> FakeARI:
    """Every demo agent's PBX endpoint answers after 50 ms."""
    for a in settings.agents:
        fake.endpoints[f"PJSIP/{a.id}"] = Behaviour("answer", 0.05)
    return fake


async def _ari_behind_proxy(tmp_path: Path, redis_url: str, pg_url: str) -> tuple[FakeARI, TcpProxy, Any]:
    """A fake Asterisk (agents answering) reached through the TCP proxy, and the demo
    world's settings with that PBX as provider `pbx`."""
    from cti.config import Settings
    from tests.faults.conftest import fault_settings

    fake = FakeARI()
    await fake.start()
    proxy = TcpProxy("127.0.0.1", fake.port)
    port = await proxy.start()
    d = fault_settings(tmp_path, bus_url=redis_url, store_url=pg_url).model_dump()
    d["providers"].append({"name": "pbx", "type": "asterisk", "url": f"http://127.0.0.1:{port}",
                           "username": "cti", "password": "secret", "app": "cti",
                           "backoff_initial_s": 0.05, "backoff_max_s": 0.3})
    for a in d["agents"]:
        a["endpoints"]["pbx"] = f"PJSIP/{a['id']}"
    settings = Settings.model_validate(d)
    return _answering(fake, settings), proxy, settings


async def test_provider_cut_mid_call_then_back_each_completed_call_once(
    redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    fake, proxy, settings = await _ari_behind_proxy(tmp_path, redis_url, pg_url)
    app = await start_app(settings)
    try:
        await wait_for(lambda: app.adapters["pbx"].ready, 10, "the ARI adapter to connect")
        ch_a = fake.incoming("0612345678", SUPPORT)
        ch_b = fake.incoming("0698765432", SUPPORT)

        async def both_talking() -> bool:
            return sum(1 for c in app.active_calls.values() if c.get("state") == "answered") >= 2

        await wait_for(both_talking, 15, "both PBX calls to be answered")

        proxy.refuse(True)
        proxy.cut()
        await wait_for(lambda: not app.adapters["pbx"].ready, 5, "the adapter to notice the cut")
        assert (await app.readiness())["provider:pbx"] is False
        fake.hangup(ch_a)                      # lost while away
        ch_c = fake.incoming("0611111111", SUPPORT)  # lost while away
        await asyncio.sleep(0.3)
        proxy.refuse(False)

        await wait_for(lambda: app.adapters["pbx"].ready, 10, "the adapter to reconnect")
        await wait_for(lambda: _ended_at_least(app, 1), 10, "the call that ended during the cut")
        await wait_for(lambda: len(app.active_calls) >= 2, 10, "the call that arrived during the cut")
        fake.hangup(ch_b)
        fake.hangup(ch_c)

        await wait_settled(app.db.engine, ended_at_least=3, timeout=20)
        settled = await assert_each_completed_call_once(app.db.engine)
        assert settled.calls == settled.ended == 3
    finally:
        await app.stop()
        await proxy.close()
        await fake.close()


async def _ended_at_least(app, n: int) -> bool:  # type: ignore[no-untyped-def]
    return (await counts(app.db.engine))[1] >= n


async def test_provider_restart_ends_the_calls_it_lost_each_once(
    redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    """The PBX restarts (a new Asterisk, no channels): after the reconnect the resync finds
    none of the calls in progress, so each is ended once, with one record and one activity;
    calls made on the new PBX flow normally."""
    fake, proxy, settings = await _ari_behind_proxy(tmp_path, redis_url, pg_url)
    fakes = [fake]
    app = await start_app(settings)
    try:
        await wait_for(lambda: app.adapters["pbx"].ready, 10, "the ARI adapter to connect")
        fake.incoming("0612345678", SUPPORT)
        fake.incoming("0698765432", SUPPORT)

        async def talking(n: int) -> bool:
            return sum(1 for c in app.active_calls.values() if c.get("state") == "answered") >= n

        await wait_for(lambda: talking(2), 15, "both PBX calls to be answered")

        await fake.close()                      # the PBX goes down ...
        proxy.cut()
        fake2 = _answering(FakeARI(), settings)  # ... and comes back empty
        fake2._ids = itertools.count(1000)      # a real Asterisk's new uniqueids differ from the old ones
        fakes.append(fake2)
        await fake2.start()
        proxy.upstream_port = fake2.port
        await wait_for(lambda: _ended_at_least(app, 2), 15, "the lost calls to be ended by the resync")

        ch = fake2.incoming("0611111111", SUPPORT)
        await wait_for(lambda: talking(1), 15, "a call on the restarted PBX to be answered")
        fake2.hangup(ch)
        await wait_settled(app.db.engine, ended_at_least=3, timeout=20)
        settled = await assert_each_completed_call_once(app.db.engine)
        assert settled.calls == settled.ended == 3
    finally:
        await app.stop()
        await proxy.close()
        for f in fakes:
            await f.close()
