"""A queued caller leaves a callback request and keeps their place; when it is their turn an agent
is reserved and the call is originated; the request is stored (requested, then done) for the stats."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from cti.model import AgentState, make_call_id
from cti.store import tables as t
from tests.integration.conftest import make_app

CAMILLE = "+33612345678"


async def test_callback_request_is_originated_in_turn_and_stored(tmp_path) -> None:
    # simulated people pick up: the agent's phone, then the customer
    app = await make_app(tmp_path, auto_answer=True, customer_answer_probability=1.0,
                         customer_busy_probability=0.0, answer_delay_s=[0.1, 0.2],
                         customer_answer_delay_s=[0.1, 0.2])
    try:
        await _scenario(app)
    finally:
        await app.stop()


async def _scenario(app) -> None:
    sim = app.adapters["sim"]
    for a in app.settings.agents:
        await app.router.set_agent_state(a.id, AgentState.OFFLINE, None)
    pcid = sim.inject_call(from_number=CAMILLE, queue="support", patience_s=float("inf"))
    call_id = make_call_id(app.settings.site.tenant, "sim", pcid)
    for _ in range(100):
        if call_id in app.router.engine.items:
            break
        await asyncio.sleep(0.05)
    cb = await app.router.request_callback(call_id)
    assert cb is not None and cb.number == CAMILLE

    async def rows() -> list:
        async with app.db.engine.connect() as conn:
            return (await conn.execute(sa.select(t.callbacks))).all()

    for _ in range(60):
        if await rows():
            break
        await asyncio.sleep(0.1)
    (row,) = await rows()
    assert (row.queue, row.number, row.call_id, row.state) == ("support", CAMILLE, call_id, "waiting")

    await app.router.set_agent_state("alice", AgentState.AVAILABLE, None)
    for _ in range(200):
        (row,) = await rows()
        if row.state == "done":
            break
        await asyncio.sleep(0.1)
    assert row.state == "done" and row.agent == "alice" and row.done_call_id
