"""The simulator reproduces every conformance scenario, on a ManualClock (milliseconds)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

import pytest

from cti.adapters.base import (
    Answer,
    BlindTransfer,
    Connect,
    Hangup,
    Hold,
    Monitor,
    Originate,
    Record,
    Unhold,
)
from tests.adapters.simulator.harness import QUIET, SimHarness
from tests.conformance.scenarios import AGENT, CUSTOMER, EXPECTED, QUEUE_NUMBER, check

ALICE = ((AGENT, "sim/alice"),)


async def _answered(h: SimHarness) -> str:
    pcid = h.sim.inject_call(from_number=CUSTOMER, to_number=QUEUE_NUMBER, patience_s=math.inf)
    await h.run(Connect(pcid, ALICE, timeout_s=15))
    await h.advance(3)
    await h.run(Answer(pcid, AGENT))
    await h.advance(30)
    return pcid


async def inbound_answered(h: SimHarness) -> str:
    pcid = await _answered(h)
    await h.run(Hangup(pcid))
    return pcid


async def inbound_not_answered(h: SimHarness) -> str:
    pcid = h.sim.inject_call(from_number=CUSTOMER, to_number=QUEUE_NUMBER, patience_s=30)
    await h.run(Connect(pcid, ALICE, timeout_s=15))
    await h.advance(40)
    return pcid


async def caller_hangup_while_queued(h: SimHarness) -> str:
    pcid = h.sim.inject_call(from_number=CUSTOMER, to_number=QUEUE_NUMBER, patience_s=10)
    await h.advance(20)
    return pcid


async def click_to_call_answered(h: SimHarness) -> str:
    res = await h.run(Originate(agent_endpoint="sim/alice", to_number=CUSTOMER, call_id="c2c-1", agent=AGENT))
    await h.advance(10)
    await h.run(Hangup(res.provider_call_id))
    assert {e.call_id for e in h.of(res.provider_call_id)} == {"c2c-1"}
    return res.provider_call_id


async def busy(h: SimHarness) -> str:
    res = await h.run(Originate(agent_endpoint="sim/alice", to_number="+33699999999", call_id="c2c-2",
                                agent=AGENT))
    await h.advance(10)
    return res.provider_call_id


async def hold_unhold(h: SimHarness) -> str:
    pcid = await _answered(h)
    await h.run(Hold(pcid))
    await h.advance(10)
    await h.run(Unhold(pcid))
    await h.advance(10)
    await h.run(Hangup(pcid))
    return pcid


async def blind_transfer(h: SimHarness) -> str:
    pcid = await _answered(h)
    await h.run(BlindTransfer(pcid, "+33145000000"))
    return pcid


async def recording_ready(h: SimHarness) -> str:
    pcid = await _answered(h)
    await h.run(Record(pcid, "start"))
    await h.advance(20)
    await h.run(Record(pcid, "stop"))
    await h.advance(5)
    await h.run(Hangup(pcid))
    return pcid


async def supervisor_whisper(h: SimHarness) -> str:
    pcid = await _answered(h)
    res = await h.run(Monitor(pcid, "sim/sam", mode="whisper"))
    assert res.session_id
    await h.advance(10)
    await h.run(Monitor(pcid, "sim/sam", mode="stop", session_id=res.session_id))
    await h.run(Hangup(pcid))
    return pcid


SCENARIOS: dict[str, Callable[[SimHarness], Awaitable[str]]] = {
    f.__name__: f
    for f in (inbound_answered, inbound_not_answered, caller_hangup_while_queued, click_to_call_answered,
              busy, hold_unhold, blind_transfer, recording_ready, supervisor_whisper)
}

# the simulated callee picks up after 2 s, except +33699999999 which is busy
OPTIONS = {**QUIET, "customer_answer_probability": 1.0, "customer_busy_probability": 0.0,
           "customer_answer_delay_s": [2, 2], "busy_numbers": ["+33699999999"]}


def test_every_scenario_is_covered() -> None:
    assert set(SCENARIOS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_simulator_conformance(name: str) -> None:
    async with SimHarness(**OPTIONS) as h:
        pcid = await SCENARIOS[name](h)
        events = h.of(pcid)
    check(name, events)
    assert all(e.tenant == "acme" for e in events)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_simulated_humans_answer_and_hang_up_on_their_own() -> None:
    """auto_answer + auto_hangup: the router connects, the rest happens by itself."""
    opts = {**QUIET, "auto_answer": True, "auto_hangup": True, "answer_probability": 1.0,
            "answer_delay_s": [2, 4], "talk_time_s": [30, 60], "hold_probability": 0,
            "transfer_probability": 0}
    async with SimHarness(**opts) as h:
        pcid = h.sim.inject_call(from_number=CUSTOMER, to_number=QUEUE_NUMBER, patience_s=math.inf)
        await h.run(Connect(pcid, ALICE, timeout_s=15))
        await h.advance(100)
        events = h.of(pcid)
    check("inbound_answered", events)


async def test_simulated_agent_who_never_answers() -> None:
    opts = {**QUIET, "auto_answer": True, "answer_probability": 0.0}
    async with SimHarness(**opts) as h:
        pcid = h.sim.inject_call(from_number=CUSTOMER, to_number=QUEUE_NUMBER, patience_s=25)
        await h.run(Connect(pcid, ALICE, timeout_s=15))
        await h.advance(40)
        events = h.of(pcid)
    check("inbound_not_answered", events)
