"""The Router runtime: events in, commands and agent_state_changed events out (ManualClock, real engine)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from cti.adapters.base import AdapterError, BlindTransfer, CommandResult, Connect, Originate, Play
from cti.clock import ManualClock
from cti.config import ConfigError
from cti.model import AgentState, CallEvent, Contact, EventKind, make_call_id, make_event_id
from cti.routing.acd import Router
from cti.routing.reservations import MemoryReservations
from cti.routing.states import InvalidTransition, UnknownAgent
from tests.routing.helpers import settings

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # Monday 10:00 Paris


def _q(snap, name):
    return next(q for q in snap["queues"] if q["name"] == name)


class Harness:
    def __init__(self, s=None, fail_for: set[str] | None = None, **kw):
        self.clock = ManualClock(START)
        self.sent: list[tuple[str, object]] = []
        self.published: list[CallEvent] = []
        self.recorded = []
        self.fail_for = fail_for or set()
        self.resv = MemoryReservations(now=self.clock.monotonic)
        self.router = Router(s or settings(), clock=self.clock, dispatch=self.dispatch, reservations=self.resv,
                             publish_event=self.published.append, record_decision=self.record, **kw)
        self.n = 0

    async def record(self, d):
        self.recorded.append(d)

    async def dispatch(self, provider, cmd):
        self.sent.append((provider, cmd))
        if isinstance(cmd, Connect) and cmd.targets[0][0] in self.fail_for:
            raise AdapterError("endpoint unreachable")
        return CommandResult(ok=True)

    def ev(self, kind, pcid="p1", **kw) -> CallEvent:
        self.n += 1
        return CallEvent(event_id=make_event_id("pbx", pcid, kind, self.n), provider="pbx", provider_call_id=pcid,
                         call_id=make_call_id("default", "pbx", pcid), kind=EventKind(kind),
                         occurred_at=self.clock.now(), **kw)

    async def login(self, *agents):
        for a in agents:
            await self.router.set_agent_state(a, "available")
            await self.clock.advance(1)

    def connects(self):
        return [c for _, c in self.sent if isinstance(c, Connect)]


async def test_queued_call_rings_the_best_agent_and_publishes_states():
    h = Harness(settings(queues=[{"name": "support", "numbers": ["100"], "requires": "fr >= 5"}]))
    await h.login("alice", "bob")
    e = h.ev("queued", to_number="100", from_number="+33611111111")
    await h.router.on_event(e)
    await h.router.on_event(e)  # duplicate delivery: ignored
    [c] = h.connects()
    assert c.targets == (("alice", "PJSIP/alice"),) and c.provider_call_id == "p1" and c.timeout_s == 15
    ringing = [p for p in h.published if p.data["state"] == "ringing"]
    assert ringing[0].agent == "alice" and ringing[0].data["previous"] == "available"
    assert all(p.kind is EventKind.AGENT_STATE_CHANGED and p.provider == "cti" and p.call_id == f"agent:{p.agent}"
               for p in h.published)
    [d] = h.router.decisions_for(e.call_id)
    assert d.chosen == "alice" and h.recorded == [d]
    assert await h.resv.held("alice") == [e.call_id]


async def test_answer_end_and_wrap_up_timer():
    h = Harness(settings(queues=[{"name": "support", "requires": "fr >= 5", "wrap_up_s": 20}]))
    await h.login("alice")
    await h.router.on_event(h.ev("queued", queue="support"))
    await h.router.on_event(h.ev("answered", agent="alice"))
    assert h.router.agent_state("alice")["state"] == "on_call"
    await h.router.on_event(h.ev("ended", data={"cause": "normal"}))
    assert h.router.agent_state("alice")["state"] == "wrap_up"
    assert await h.resv.held("alice") == []
    await h.clock.advance(20)
    await h.router.tick()
    assert h.router.agent_state("alice")["state"] == "available"
    assert [p.data["state"] for p in h.published if p.agent == "alice"] == [
        "available", "ringing", "on_call", "wrap_up", "available"]


async def test_no_answer_and_ring_timeout_go_to_the_next_agent():
    h = Harness(settings(queues=[{"name": "support", "requires": "fr >= 1", "ring_timeout_s": 10}]),
                ring_grace_s=2)
    await h.login("alice", "bob", "carol")
    await h.router.on_event(h.ev("queued", queue="support"))
    await h.router.on_event(h.ev("no_answer", agent="alice", data={"reason": "timeout"}))
    assert [c.targets[0][0] for c in h.connects()] == ["alice", "bob"]
    await h.clock.advance(12)            # the provider never reports bob's timeout
    await h.router.tick()
    assert [c.targets[0][0] for c in h.connects()] == ["alice", "bob", "carol"]


async def test_failed_connect_offers_the_next_agent():
    h = Harness(fail_for={"alice"})
    await h.login("alice", "bob")
    await h.router.on_event(h.ev("queued", queue="support"))
    assert [c.targets[0][0] for c in h.connects()] == ["alice", "bob"]


async def test_agent_held_by_another_node_is_skipped():
    h = Harness()
    await h.login("alice", "bob")
    assert await h.resv.reserve("alice", "other-node-call")
    await h.router.on_event(h.ev("queued", queue="support"))
    assert [c.targets[0][0] for c in h.connects()] == ["bob"]


async def test_api_state_errors_and_reasons():
    h = Harness()
    with pytest.raises(UnknownAgent):
        await h.router.set_agent_state("nobody", "available")
    with pytest.raises(InvalidTransition) as info:
        await h.router.set_agent_state("alice", "on_call")
    assert info.value.current is AgentState.OFFLINE
    assert await h.router.set_agent_state("alice", "away", "training") is AgentState.AWAY
    assert h.published[-1].data == {"state": "away", "reason": "training", "previous": "offline",
                                    "node": h.router.node_id}


async def test_crm_lookup_gives_vip_priority_and_owner():
    async def lookup(ev):
        return Contact(id="c1", name="Zoe", role="CEO", owner="bob")

    s = settings(queues=[{"name": "support", "requires": "fr >= 5", "preferred_agent_s": 10}],
                 rules=[{"name": "vip", "when": "contact.role in ['CEO', 'CFO']", "boost": 50}])
    h = Harness(s, lookup=lookup)
    await h.login("alice", "bob")
    e = h.ev("queued", queue="support")
    await h.router.on_event(e)
    [c] = h.connects()
    assert c.targets[0][0] == "bob"
    [d] = h.router.decisions_for(e.call_id)
    assert d.rules == ("vip",) and d.priority == 50 and "preferred" in d.reason


async def test_callback_offer_dtmf_then_originate_when_an_agent_frees():
    s = settings(queues=[{"name": "support", "requires": "fr >= 5", "max_wait_s": 30,
                          "overflow": {"after_s": 30, "then": "callback", "prompt": "sound:cb"}}])
    h = Harness(s)
    e = h.ev("queued", queue="support", from_number="+33611111111")
    await h.router.on_event(e)
    await h.clock.advance(30)
    await h.router.tick()
    assert any(isinstance(c, Play) and c.media == "sound:cb" for _, c in h.sent)
    await h.router.on_event(h.ev("dtmf", data={"digits": "1"}))
    await h.router.on_event(h.ev("ended", data={"cause": "caller_hangup"}))
    assert _q(h.router.snapshot(), "support")["callbacks"] == 1
    await h.login("alice")
    [o] = [c for _, c in h.sent if isinstance(c, Originate)]
    assert (o.agent, o.agent_endpoint, o.to_number) == ("alice", "PJSIP/alice", "+33611111111")
    dial = CallEvent(event_id="d1", provider="pbx", provider_call_id="x", call_id=o.call_id,
                     kind=EventKind.ANSWERED, occurred_at=h.clock.now(), agent="alice")
    await h.router.on_event(dial)
    assert h.router.agent_state("alice")["state"] == "on_call"
    assert [d.action for d in h.router.decisions_for(e.call_id)] == ["callback_offer", "callback_dial"]


async def test_voicemail_overflow_transfers_the_call():
    s = settings(queues=[{"name": "support", "requires": "fr >= 5",
                          "overflow": {"after_s": 20, "then": "voicemail", "target": "vm:support"}}])
    h = Harness(s)
    await h.router.on_event(h.ev("queued", queue="support"))
    await h.clock.advance(20)
    await h.router.tick()
    [t] = [c for _, c in h.sent if isinstance(c, BlindTransfer)]
    assert t.target == "vm:support" and t.provider_call_id == "p1"


async def test_reconfigure_is_atomic():
    h = Harness()
    await h.login("carol")
    await h.router.on_event(h.ev("queued", queue="support"))     # carol (fr 3) cannot take it
    bad = settings(queues=[{"name": "support", "requires": "fr >="}])
    with pytest.raises(ConfigError, match="queue 'support'"):
        h.router.reconfigure(bad)
    assert h.router.engine.cfg.queues[0].requires.source == "fr >= 5"
    h.router.reconfigure(settings(queues=[{"name": "support", "requires": "fr >= 3"}, {"name": "sales"}]))
    await h.clock.advance(1)
    await h.router.tick()                                   # the waiting call is routed with the new rules
    assert [c.targets[0][0] for c in h.connects()] == ["carol"]
    assert [q["name"] for q in h.router.snapshot()["queues"]] == ["support", "sales"]


async def test_bad_events_do_not_break_the_router():
    h = Harness()
    await h.login("alice")
    await h.router.on_event(h.ev("queued", queue="no-such-queue"))
    await h.router.on_event(h.ev("no_answer", pcid="zz", agent="ghost"))
    await h.router.on_event(h.ev("answered", pcid="zz2", agent="alice"))  # a direct call
    assert h.router.agent_state("alice")["state"] == "on_call"


async def test_run_loop_fires_timers_on_the_injected_clock():
    h = Harness(settings(queues=[{"name": "support", "requires": "fr >= 1", "ring_timeout_s": 5}]), ring_grace_s=0)
    await h.login("alice", "bob")
    await h.router.on_event(h.ev("queued", queue="support"))
    task = asyncio.create_task(h.router.run())
    try:
        for _ in range(12):
            await asyncio.sleep(0)   # let the loop run and go to sleep on the clock
            await h.clock.advance(0.5)
        assert [c.targets[0][0] for c in h.connects()] == ["alice", "bob"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_snapshot_for_dashboards():
    h = Harness()
    await h.router.on_event(h.ev("queued", queue="support"))
    await h.clock.advance(timedelta(seconds=42).total_seconds())
    snap = h.router.snapshot()
    assert _q(snap, "support")["waiting"] == 1 and _q(snap, "support")["oldest_wait_s"] == 42
    assert _q(snap, "support")["agents"]["offline"] == 2   # alice and bob may take it; carol (fr 3) not
    assert snap["agents"]["offline"] == 3


async def test_end_wrap_up_after_disposition():
    h = Harness(settings(queues=[{"name": "support", "requires": "fr >= 5", "wrap_up_s": 300}]))
    await h.login("alice")
    await h.router.on_event(h.ev("queued", queue="support"))
    await h.router.on_event(h.ev("answered", agent="alice"))
    await h.router.on_event(h.ev("ended"))
    assert h.router.agent_state("alice")["state"] == "wrap_up"
    assert await h.router.end_wrap_up("alice") is AgentState.AVAILABLE
    assert await h.router.end_wrap_up("alice") is AgentState.AVAILABLE   # no-op when not wrapping up


async def test_states_set_on_another_node_are_mirrored_not_republished():
    h = Harness()
    other = CallEvent(event_id="n2-1", provider="cti", provider_call_id="", call_id="",
                      kind=EventKind.AGENT_STATE_CHANGED, occurred_at=h.clock.now(), agent="alice",
                      data={"state": "available", "reason": None, "previous": "offline", "node": "node-2"})
    await h.router.on_event(other)
    assert h.router.agent_state("alice")["state"] == "available"
    assert h.published == []
    # our own events coming back from the bus change nothing
    await h.router.set_agent_state("bob", "available")
    mine = h.published[-1]
    await h.router.set_agent_state("bob", "away", "lunch")
    await h.router.on_event(mine)
    assert h.router.agent_state("bob")["state"] == "away"
    # a call routed on this node goes to the agent the other node made available
    await h.router.on_event(h.ev("queued", queue="support"))
    assert [c.targets[0][0] for c in h.connects()] == ["alice"]


async def test_slow_crm_lookup_does_not_hold_the_caller():
    async def slow(ev):
        await asyncio.sleep(5)

    h = Harness(lookup=slow, lookup_timeout_s=0.05)
    await h.login("alice")
    await h.router.on_event(h.ev("queued", queue="support"))
    assert [c.targets[0][0] for c in h.connects()] == ["alice"]


async def test_the_crm_lookups_of_a_batch_run_side_by_side():
    """Five callers queue in one bus batch; each lookup waits until all five have started.
    Looked up one after another (each costing at least a loop cycle on a busy node), they
    would time out; side by side, all five route with their records."""
    started = 0
    all_in = asyncio.Event()

    async def lookup(ev):
        nonlocal started
        started += 1
        if started == 5:
            all_in.set()
        await all_in.wait()
        return {"contact": {"id": ev.provider_call_id}}

    h = Harness(lookup=lookup, lookup_timeout_s=1.0)
    await h.login("alice")
    events = [h.ev("queued", pcid=f"p{i}", queue="support") for i in range(5)]
    await asyncio.wait_for(h.router.on_events(events), 0.5)
    assert started == 5 and all_in.is_set()


async def test_crm_lookup_helper_uses_the_first_match():
    from cti.routing.acd import crm_lookup

    class Cache:
        async def lookup(self, number):
            return [Contact(id="c1", name="Zoe", role="CFO", owner="bob")] if number == "+33611111111" else []

    s = settings(rules=[{"name": "vip", "when": "contact.role in ['CEO', 'CFO']", "boost": 50}])
    h = Harness(s, lookup=crm_lookup(Cache()))
    e = h.ev("queued", queue="support", from_number="+33611111111")
    await h.router.on_event(e)
    await h.login("alice")
    [d] = h.router.decisions_for(e.call_id)
    assert d.rules == ("vip",)


async def test_reservation_of_a_long_call_is_refreshed_and_an_ivr_answer_is_not_an_agent():
    h = Harness()
    await h.login("alice")
    await h.router.on_event(h.ev("answered", pcid="ivr"))          # IVR answers an unrelated call: nothing
    assert h.router.agent_state("alice")["state"] == "available"
    e = h.ev("queued", queue="support")
    await h.router.on_event(e)
    await h.router.on_event(h.ev("answered", agent="alice"))
    for _ in range(60):                                           # an hour-long call, ticking every minute
        await h.clock.advance(60)
        await h.router.tick()
        # another node trying to grab alice is refused all along
        assert not await h.resv.reserve("alice", "other-node-call", ttl_s=1)
    assert await h.resv.held("alice") == [e.call_id]
    await h.router.on_event(h.ev("ended"))
    assert await h.resv.held("alice") == []


class _Flaky(MemoryReservations):
    """Reservations whose store can be switched off (a Redis outage)."""

    down = False

    async def reserve(self, *a, **kw):
        if self.down:
            raise ConnectionError("Connection refused")
        return await super().reserve(*a, **kw)

    async def release(self, *a, **kw):
        if self.down:
            raise ConnectionError("Connection refused")
        return await super().release(*a, **kw)


async def test_reservation_store_outage_delays_offers_but_loses_no_call_and_no_release():
    h = Harness()
    h.resv = _Flaky(now=h.clock.monotonic)
    h.router.reservations = h.resv
    await h.login("alice", "bob")
    await h.router.on_event(h.ev("queued", pcid="p1", queue="support"))
    await h.router.on_event(h.ev("answered", pcid="p1", agent=h.connects()[0].targets[0][0]))
    first = h.connects()[0].targets[0][0]
    assert await h.resv.held(first) == [make_call_id("default", "pbx", "p1")]

    h.resv.down = True
    await h.router.on_event(h.ev("ended", pcid="p1", data={"cause": "normal"}))   # release fails
    await h.router.on_event(h.ev("queued", pcid="p2", queue="support"))           # reserve fails
    assert len(h.connects()) == 1, "nothing may be offered unguarded while the store is unreachable"
    assert _q(h.router.snapshot(), "support")["waiting"] == 1  # the call waits, it is not dropped
    await h.clock.advance(2)
    await h.router.tick()                                                          # still down: still waiting
    assert len(h.connects()) == 1

    h.resv.down = False
    await h.clock.advance(2)
    await h.router.tick()
    await h.router.tick()
    assert len(h.connects()) == 2 and h.connects()[1].provider_call_id == "p2"
    assert make_call_id("default", "pbx", "p1") not in await h.resv.held(first)   # the failed release was replayed


async def test_a_batch_is_routed_with_one_state_publish_in_event_order():
    batches: list[list[CallEvent]] = []

    async def publish_many(evs):
        batches.append(list(evs))

    h = Harness(publish_events=publish_many)
    await h.login("alice", "bob")
    batches.clear()
    await h.router.on_events([h.ev("queued", pcid=f"p{i}", queue="support") for i in range(2)])
    assert len(h.connects()) == 2
    assert len(batches) == 1, "one bus round trip for the whole batch's agent states"
    assert [(e.agent, e.data["state"]) for e in batches[0]] == [(c.targets[0][0], "ringing") for c in h.connects()]
    assert h.published == []  # the single-event path is not used when the batch path exists


async def test_duplicate_filter_forgets_ids_older_than_its_window():
    # the filter is there for redeliveries (seconds to minutes late); keeping every id of the
    # day made a node's memory grow for as long as it ran
    from cti.routing.acd import SEEN_EVENTS_TTL_S

    h = Harness()
    await h.login("alice")
    first = h.ev("queued", pcid="p1", queue="support")
    await h.router.on_event(first)
    await h.router.on_event(first)
    assert len(h.connects()) == 1          # within the window: a duplicate is ignored
    await h.clock.advance(SEEN_EVENTS_TTL_S + 1)
    await h.router.on_event(h.ev("ringing", pcid="p1", agent="alice"))
    assert first.event_id not in h.router._seen and len(h.router._seen) == 1


class _Counting(MemoryReservations):
    """Counts the round trips a router makes to the reservation store (one per call of any method)."""

    trips = 0
    _inside = False

    async def apply(self, ops):
        self.trips += 1
        self._inside = True
        try:
            return await super().apply(ops)
        finally:
            self._inside = False

    async def reserve(self, *a, **kw):
        self.trips += not self._inside
        return await super().reserve(*a, **kw)

    async def release(self, *a, **kw):
        self.trips += not self._inside
        return await super().release(*a, **kw)


async def test_reservations_go_out_in_one_round_trip_per_offer_and_one_per_refresh():
    agents = [{"id": f"a{i}", "skills": {"fr": 9}} for i in range(6)]
    h = Harness(settings(agents=agents, queues=[{"name": "support", "requires": "fr >= 5", "wrap_up_s": 0}]))
    h.resv = _Counting(now=h.clock.monotonic)
    h.router.reservations = h.resv
    await h.login(*(a["id"] for a in agents))
    # three calls answered by three agents
    await h.router.on_events([h.ev("queued", pcid=f"p{i}", queue="support") for i in range(3)])
    rung = [c.targets[0][0] for c in h.connects()]
    await h.router.on_events([h.ev("answered", pcid=f"p{i}", agent=rung[i]) for i in range(3)])
    # one batch: the three calls end (three releases) and three new calls arrive (three offers)
    h.resv.trips = 0
    await h.router.on_events([h.ev("ended", pcid=f"p{i}", data={"cause": "normal"}) for i in range(3)]
                             + [h.ev("queued", pcid=f"q{i}", queue="support") for i in range(3)])
    assert len(h.connects()) == 6
    assert h.resv.trips <= 3 + 1, h.resv.trips  # each offer carries the releases before it
    for i in range(3):  # the ended calls' reservations are gone
        assert make_call_id("default", "pbx", f"p{i}") not in await h.resv.held(rung[i])
    # the minute's refresh of every agent on a call: one round trip, not one per call
    await h.router.on_events([h.ev("answered", pcid=f"q{i}", agent=h.connects()[3 + i].targets[0][0])
                              for i in range(3)])
    h.resv.trips = 0
    await h.clock.advance(61)
    await h.router.tick()
    assert h.resv.trips == 1
