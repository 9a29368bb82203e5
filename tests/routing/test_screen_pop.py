"""Screen pop: contact card, chooser, new-contact form, script, priority, slow/failing CRM, dedupe."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cti.clock import ManualClock
from cti.config import Settings
from cti.crm.cache import CachedLookup
from cti.crm.local import LocalConnector
from cti.crm.store import upsert_activity
from cti.model import Activity, CallEvent, Contact, Direction, EventKind, Outcome, make_event_id
from cti.routing.screen_pop import ScreenPop, fill_script
from cti.store.tables import metadata

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

SETTINGS = Settings.model_validate(
    {
        "agents": [{"id": "alice", "name": "Alice Martin"}, {"id": "bob", "name": "Bob Stone"}],
        "queues": [
            {
                "name": "support",
                "script": "Hello {contact.first_name}, {agent.first_name} from {account.name}. {nope.x}{contact.zz}",
            }
        ],
    }
)


class FakeCrm:
    """Connector whose answer, delay and failures the test controls."""

    name = "fake"

    def __init__(self, directory: dict[str, list[Contact]], delay: float = 0.0, fail: bool = False) -> None:
        self.directory = directory
        self.delay = delay
        self.fail = fail
        self.calls: list[str] = []
        self.release = asyncio.Event()
        if delay == 0:
            self.release.set()

    async def lookup(self, e164: str) -> list[Contact]:
        self.calls.append(e164)
        await self.release.wait()
        if self.fail:
            raise ConnectionError("crm down")
        return self.directory.get(e164, [])


CLAIRE = Contact(
    id="c-1",
    name="Claire Dubois",
    first_name="Claire",
    last_name="Dubois",
    phones=("+33612345678",),
    account_id="acc-acme",
    account_name="Acme",
    role="CFO",
    fields={"account.won_amount_24m": 120000, "contact.role": "CFO"},
)
PAUL = Contact(id="c-4", name="Paul Durand", phones=("+33612345678",), account_id="acc-acme", account_name="Acme")


@pytest.fixture
async def engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(sqlite_url)
    async with eng.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield eng
    await eng.dispose()


def ringing(call_id: str, agent: str, number: str = "+33612345678", queue: str | None = "support") -> CallEvent:
    return CallEvent(
        event_id=make_event_id("sim", call_id, "ringing", agent),
        provider="sim",
        provider_call_id=call_id,
        call_id=call_id,
        kind=EventKind.RINGING,
        occurred_at=T0,
        agent=agent,
        queue=queue,
        direction=Direction.INBOUND,
        from_number=number,
        to_number="+33170000000",
    )


def event(call_id: str, kind: EventKind, agent: str | None = None) -> CallEvent:
    return CallEvent(
        event_id=make_event_id("sim", call_id, kind, agent),
        provider="sim",
        provider_call_id=call_id,
        call_id=call_id,
        kind=kind,
        occurred_at=T0,
        agent=agent,
    )


async def fire(pop: ScreenPop, ev: CallEvent) -> None:
    """Feed one event and wait for the pop it causes (pops are built in their own tasks)."""
    await pop.on_event(ev)
    await pop.drain()


def make_pop(engine, crm, timeout=0.2, rules=None):
    sent: list[dict] = []

    async def publish(msg: dict) -> None:
        sent.append(msg)

    lookup = CachedLookup(crm, ManualClock(), ttl=300, negative_ttl=60, timeout=timeout)
    # a generous history budget: these tests check what the pop shows, not how fast
    return ScreenPop(lookup, engine, SETTINGS, publish=publish, rules=rules, history_timeout_s=5), sent


async def test_one_match_pops_the_contact_card_with_script_and_priority(engine):
    rules = lambda c: (50, ["vip"]) if c and c.fields.get("account.won_amount_24m", 0) >= 50000 else (0, [])  # noqa: E731
    pop, sent = make_pop(engine, FakeCrm({"+33612345678": [CLAIRE]}), rules=rules)
    await fire(pop, ringing("call-1", "alice"))
    (msg,) = sent
    assert msg["type"] == "screen_pop" and msg["agent"] == "alice" and msg["call_id"] == "call-1"
    assert msg["lookup"] == "ok" and msg["update"] is False
    assert msg["contact"]["name"] == "Claire Dubois" and msg["contact"]["account_name"] == "Acme"
    assert msg["matches"] == [msg["contact"]] and msg["new_contact"] is None
    assert msg["from_display"] == "06 12 34 56 78"
    assert msg["script"] == "Hello Claire, Alice from Acme. "
    assert (msg["priority"], msg["priority_reasons"]) == (50, ["vip"])
    assert msg["queue"] == "support"
    assert pop.pops_for("alice") == [msg] and pop.pops_for("bob") == []


async def test_several_matches_give_a_chooser(engine):
    pop, sent = make_pop(engine, FakeCrm({"+33612345678": [CLAIRE, PAUL]}))
    await fire(pop, ringing("call-1", "alice"))
    (msg,) = sent
    assert msg["contact"] is None and [m["id"] for m in msg["matches"]] == ["c-1", "c-4"]
    assert msg["new_contact"] is None
    assert msg["script"] == "Hello , Alice from . "  # missing fields are empty, never a crash


async def test_unknown_caller_gets_a_prefilled_new_contact_form(engine):
    pop, sent = make_pop(engine, FakeCrm({}))
    await fire(pop, ringing("call-1", "alice", number="0698765432"))
    (msg,) = sent
    assert msg["matches"] == [] and msg["contact"] is None
    assert msg["new_contact"] == {"phone": "+33698765432"}


async def test_slow_crm_pops_at_once_as_pending_then_sends_an_update(engine):
    crm = FakeCrm({"+33612345678": [CLAIRE]}, delay=1)
    pop, sent = make_pop(engine, crm, timeout=0.05)
    await asyncio.wait_for(fire(pop, ringing("call-1", "alice")), 1)  # does not wait for the CRM
    assert [(m["lookup"], m["update"]) for m in sent] == [("pending", False)]
    assert sent[0]["contact"] is None and sent[0]["new_contact"] is None
    crm.release.set()
    for _ in range(100):
        if len(sent) == 2:
            break
        await asyncio.sleep(0.01)
    assert [(m["lookup"], m["update"]) for m in sent] == [("pending", False), ("ok", True)]
    assert sent[1]["contact"]["id"] == "c-1"
    assert pop.pops_for("alice") == [sent[1]]


async def test_failing_crm_pops_with_lookup_failed(engine):
    pop, sent = make_pop(engine, FakeCrm({}, fail=True))
    await fire(pop, ringing("call-1", "alice"))
    (msg,) = sent
    assert msg["lookup"] == "failed" and msg["matches"] == [] and msg["new_contact"] is None


async def test_failing_slow_crm_updates_the_pending_pop_to_failed(engine):
    crm = FakeCrm({}, delay=1, fail=True)
    pop, sent = make_pop(engine, crm, timeout=0.02)
    await fire(pop, ringing("call-1", "alice"))
    crm.release.set()
    for _ in range(100):
        if len(sent) == 2:
            break
        await asyncio.sleep(0.01)
    assert [(m["lookup"], m["update"]) for m in sent] == [("pending", False), ("failed", True)]


async def test_the_same_ringing_event_twice_pops_once(engine):
    pop, sent = make_pop(engine, FakeCrm({"+33612345678": [CLAIRE]}))
    ev = ringing("call-1", "alice")
    await asyncio.gather(pop.on_event(ev), pop.on_event(ev))
    await fire(pop, ev)
    assert len(sent) == 1


async def test_ring_all_pops_every_agent_with_one_crm_lookup_and_clears_the_others_on_answer(engine):
    crm = FakeCrm({"+33612345678": [CLAIRE]})
    pop, sent = make_pop(engine, crm)
    await fire(pop, ringing("call-1", "alice"))
    await fire(pop, ringing("call-1", "bob"))
    assert sorted(m["agent"] for m in sent) == ["alice", "bob"]
    assert crm.calls == ["+33612345678"]
    await fire(pop, event("call-1", EventKind.ANSWERED, "bob"))
    assert pop.pops_for("alice") == [] and len(pop.pops_for("bob")) == 1
    await fire(pop, event("call-1", EventKind.ENDED))
    assert pop.pops_for("bob") == []
    await fire(pop, ringing("call-1", "carol"))  # late event of a finished call
    assert len(sent) == 2


async def test_no_answer_clears_that_agents_pop(engine):
    pop, _ = make_pop(engine, FakeCrm({}))
    await fire(pop, ringing("call-1", "alice"))
    await fire(pop, event("call-1", EventKind.NO_ANSWER, "alice"))
    assert pop.pops_for("alice") == []


async def test_cached_lookup_serves_the_second_call_without_asking_the_crm(engine):
    crm = FakeCrm({"+33612345678": [CLAIRE]})
    pop, _ = make_pop(engine, crm)
    await fire(pop, ringing("call-1", "alice"))
    await fire(pop, ringing("call-2", "alice"))
    assert crm.calls == ["+33612345678"]


async def test_history_and_last_summary_come_from_the_local_store(engine):
    async with engine.begin() as conn:
        for i, (outcome, summary) in enumerate([("answered", {"key_points": ["refund asked"]}), ("missed", None)]):
            act = Activity(
                call_id=f"old-{i}",
                subject="Inbound",
                direction=Direction.INBOUND,
                from_number="+33612345678",
                to_number="+33170000000",
                duration_s=60.0,
                outcome=Outcome(outcome),
                contact_id="c-1",
                agent="bob",
                disposition="resolved" if i == 0 else None,
                summary=summary,
            )
            await upsert_activity(conn, act, "default", T0 - timedelta(days=2 - i))
    pop, sent = make_pop(engine, FakeCrm({"+33612345678": [CLAIRE]}))
    await fire(pop, ringing("call-1", "alice"))
    (msg,) = sent
    assert [h["call_id"] for h in msg["history"]] == ["old-1", "old-0"]
    assert msg["history"][1]["disposition"] == "resolved" and msg["history"][1]["agent"] == "bob"
    assert msg["last_summary"] == {"key_points": ["refund asked"]}


async def test_anonymous_caller_pops_without_a_lookup(engine):
    crm = FakeCrm({})
    pop, sent = make_pop(engine, crm)
    await fire(pop, ringing("call-1", "alice", number="anonymous"))
    assert crm.calls == [] and sent[0]["lookup"] == "ok" and sent[0]["new_contact"] is None


def test_fill_script_leaves_other_braces_and_empties_unknown_fields():
    out = fill_script("{contact.first_name} {x} {agent.nope} {a.b}", {"contact": {"first_name": "Zoé"}})
    assert out == "Zoé {x}  "
    assert fill_script(None, {}) is None


async def test_rules_from_settings_boost_vip(engine):
    settings = SETTINGS.model_copy(
        update={
            "priority_rules": Settings.model_validate(
                {"priority_rules": [{"name": "vip", "when": "account.won_amount_24m >= 50000", "boost": 50}]}
            ).priority_rules
        }
    )
    sent: list[dict] = []

    async def publish(msg: dict) -> None:
        sent.append(msg)

    lookup = CachedLookup(FakeCrm({"+33612345678": [CLAIRE]}), ManualClock(), timeout=0.2)
    pop = ScreenPop(lookup, engine, settings, publish=publish)
    await fire(pop, ringing("call-1", "alice"))
    assert (sent[0]["priority"], sent[0]["priority_reasons"]) == (50, ["vip"])


async def test_local_connector_end_to_end(engine):
    crm = LocalConnector(engine)
    await crm.create_contact(phone="06 12 34 56 78", first_name="Claire", last_name="Dubois", account_name="Acme")
    pop, sent = make_pop(engine, crm)
    await fire(pop, ringing("call-1", "alice"))
    assert sent[0]["contact"]["name"] == "Claire Dubois"


async def test_chosen_contact_replaces_the_chooser_in_later_snapshots(engine):
    pop, sent = make_pop(engine, FakeCrm({"+33612345678": [CLAIRE, PAUL]}))
    await fire(pop, ringing("call-1", "alice"))
    chosen = pop.match_for("call-1", "c-4")
    assert chosen is PAUL
    await pop.attach_contact("call-1", chosen)
    (snap,) = pop.pops_for("alice")
    assert snap["contact"]["id"] == "c-4" and snap["matches"] == [snap["contact"]] and snap["new_contact"] is None
    assert sent[0]["contact"] is None  # what was already sent is not rewritten...
    assert sent[-1] == snap and snap["update"] is True  # ...an update goes out
    assert snap["script"] == "Hello , Alice from Acme. "  # refilled for the chosen contact (no first name)


class PerNumberCrm:
    """Slow for one number only."""

    name = "fake"

    def __init__(self, slow: str) -> None:
        self.slow = slow
        self.release = asyncio.Event()

    async def lookup(self, e164: str) -> list[Contact]:
        if e164 == self.slow:
            await self.release.wait()
        return [CLAIRE] if e164 == "+33612345678" else []


async def test_a_slow_lookup_does_not_hold_up_the_next_callers_pop(engine):
    crm = PerNumberCrm(slow="+33698765432")
    pop, sent = make_pop(engine, crm, timeout=5)  # long timeout: the first pop waits for its CRM
    await pop.on_event(ringing("call-slow", "bob", number="+33698765432"))
    await pop.on_event(ringing("call-fast", "alice"))
    for _ in range(200):
        if sent:
            break
        await asyncio.sleep(0.01)
    assert [m["call_id"] for m in sent] == ["call-fast"]
    crm.release.set()
    await pop.drain()
    assert [m["call_id"] for m in sent] == ["call-fast", "call-slow"]


async def test_answered_elsewhere_while_looking_up_sends_no_stale_pop(engine):
    crm = PerNumberCrm(slow="+33698765432")
    pop, sent = make_pop(engine, crm, timeout=5)
    await pop.on_event(ringing("call-1", "alice", number="+33698765432"))
    await pop.on_event(ringing("call-1", "bob", number="+33698765432"))
    await pop.on_event(event("call-1", EventKind.ANSWERED, "bob"))
    crm.release.set()
    await pop.drain()
    assert [m["agent"] for m in sent] == ["bob"]
    assert pop.pops_for("alice") == []


async def test_history_cache_is_dropped_when_a_call_with_that_number_ends_or_changes(engine):
    from cti.calls.activity import ActivityWriter
    from cti.model import Call, CallState

    pop, sent = make_pop(engine, FakeCrm({"+33612345678": [CLAIRE]}))
    await fire(pop, ringing("call-1", "alice"))
    assert sent[-1]["history"] == []
    await fire(pop, event("call-1", EventKind.ENDED))
    writer = ActivityWriter(engine, FakeLogCrm(), ManualClock(), on_change=pop.invalidate_history)
    call = Call(
        call_id="call-1",
        tenant="default",
        provider="sim",
        provider_call_id="call-1",
        direction=Direction.INBOUND,
        state=CallState.ENDED,
        from_number="+33612345678",
        to_number="+33170000000",
        agent="alice",
        outcome=Outcome.ANSWERED,
    )
    await writer.on_call(call)
    await fire(pop, ringing("call-2", "alice"))
    assert [h["call_id"] for h in sent[-1]["history"]] == ["call-1"]
    assert sent[-1]["history"][0]["disposition"] is None
    await writer.wrap_up("call-1", "resolved", None)  # on_change drops the cached history
    await fire(pop, ringing("call-3", "bob"))
    assert sent[-1]["history"][0]["disposition"] == "resolved"


class FakeLogCrm:
    name = "fake"

    async def log_activity(self, activity: Activity) -> str:
        return activity.call_id


async def test_a_slow_history_query_does_not_hold_the_pop_back(engine):
    sent: list[dict] = []

    async def publish(msg: dict) -> None:
        sent.append(msg)

    pop = ScreenPop(
        CachedLookup(FakeCrm({"+33612345678": [CLAIRE]}), ManualClock()),
        engine,
        SETTINGS,
        publish=publish,
        history_timeout_s=0.02,
    )
    release = asyncio.Event()
    old = {
        "call_id": "old-1",
        "at": "2026-03-01T10:00:00+00:00",
        "direction": "inbound",
        "outcome": "answered",
        "duration_s": 60.0,
        "agent": "bob",
        "disposition": "resolved",
    }

    async def slow(*_a, **_k):  # a store stuck behind a long transaction
        await release.wait()
        return [old], {"key_points": ["refund"]}

    pop._cached_history = slow
    await asyncio.wait_for(fire(pop, ringing("call-1", "alice")), 2)
    assert [(m["contact"]["id"], m["history"], m["update"]) for m in sent] == [("c-1", [], False)]
    release.set()
    for _ in range(100):
        if len(sent) == 2:
            break
        await asyncio.sleep(0.01)
    assert sent[1]["update"] is True and sent[1]["history"] == [old]
    assert sent[1]["last_summary"] == {"key_points": ["refund"]} and pop.pops_for("alice") == [sent[1]]
    await pop.close()


async def test_by_default_a_direct_dial_pops_without_waiting_for_the_store(engine):
    # nothing arrived before the ringing, so nothing was prefetched: the pop goes at once and
    # the last calls follow, even from a store answering in a few milliseconds
    sent: list[dict] = []

    async def publish(msg: dict) -> None:
        sent.append(msg)

    pop = ScreenPop(CachedLookup(FakeCrm({"+33612345678": [CLAIRE]}), ManualClock()), engine, SETTINGS,
                    publish=publish)
    old = {"call_id": "old-1", "at": "2026-03-01T10:00:00+00:00", "direction": "inbound",
           "outcome": "answered", "duration_s": 60.0, "agent": "bob", "disposition": "resolved"}

    async def quick(*_a, **_k):
        await asyncio.sleep(0.005)
        return [old], None

    pop._cached_history = quick
    await fire(pop, ringing("call-1", "alice"))
    for _ in range(100):
        if len(sent) == 2:
            break
        await asyncio.sleep(0.01)
    assert [(m["contact"]["id"], m["history"], m["update"]) for m in sent] == [
        ("c-1", [], False), ("c-1", [old], True)]
    await pop.close()


async def test_a_pop_whose_caller_is_known_goes_out_before_the_event_is_done(engine):
    # looked up on arrival (or cached): the pop is built and sent within the event, with no
    # task and no extra turn of the event loop; an unknown caller still gets its own task
    sent: list[dict] = []

    async def publish(msg: dict) -> None:
        sent.append(msg)

    crm = FakeCrm({"+33612345678": [CLAIRE]})
    pop = ScreenPop(CachedLookup(crm, ManualClock()), engine, SETTINGS, publish=publish)
    await pop.on_event(dataclasses.replace(ringing("call-1", "alice"), kind=EventKind.CREATED, agent=None,
                                           event_id="created-1"))
    await pop.drain()
    await asyncio.sleep(0.05)  # the arrival's lookup and last calls are in
    await pop.on_event(ringing("call-1", "alice"))
    assert [m["call_id"] for m in sent] == ["call-1"] and not pop._pop_tasks
    await pop.on_event(ringing("call-2", "bob", number="+33699999999"))  # nobody looked it up
    assert len(pop._pop_tasks) == 1
    await pop.drain()
    assert [m["call_id"] for m in sent] == ["call-1", "call-2"]
    await pop.close()


class GatedHistory:
    """Stands in for the store's history query: counts calls, answers once `gate` is set."""

    def __init__(self, monkeypatch) -> None:
        from cti.routing import screen_pop as sp

        self.gate = asyncio.Event()
        self.calls = 0
        monkeypatch.setattr(sp, "local_history", self)

    async def __call__(self, *_a, **_k):
        self.calls += 1
        await self.gate.wait()
        return [], None


async def test_history_queries_are_shed_when_the_store_is_far_behind(engine, monkeypatch):
    history = GatedHistory(monkeypatch)
    pop, sent = make_pop(engine, FakeCrm({}))
    pop.history_timeout_s = 0.01
    for i in range(40):
        await pop.on_event(ringing(f"call-{i}", "alice", number=f"+336123456{i:02d}"))
    await pop.drain()
    assert len(sent) == 40  # every pop went out
    # 4 queries running, at most 16 waiting: the rest were shed, not queued
    assert history.calls == 4 and pop._history_waiting == 16
    history.gate.set()
    await pop.close()


def arrival(call_id: str, kind: EventKind = EventKind.QUEUED, number: str = "+33612345678") -> CallEvent:
    return CallEvent(
        event_id=make_event_id("sim", call_id, kind),
        provider="sim",
        provider_call_id=call_id,
        call_id=call_id,
        kind=kind,
        occurred_at=T0,
        queue="support",
        direction=Direction.INBOUND,
        from_number=number,
        to_number="+33170000000",
    )


async def test_the_caller_is_looked_up_when_the_call_arrives_so_the_pop_waits_on_nothing(engine, monkeypatch):
    from cti.routing import screen_pop as sp

    queries: list[list[str]] = []
    real = sp.local_history

    async def counting(engine_, keys, *a, **k):
        queries.append(list(keys))
        return await real(engine_, keys, *a, **k)

    monkeypatch.setattr(sp, "local_history", counting)
    crm = FakeCrm({"+33612345678": [CLAIRE]})
    pop, sent = make_pop(engine, crm)
    await pop.on_event(arrival("call-1", EventKind.CREATED))
    await pop.on_event(arrival("call-1", EventKind.QUEUED))  # one prefetch per call
    for _ in range(200):
        if queries and not pop._tasks:
            break
        await asyncio.sleep(0.005)
    assert crm.calls == ["+33612345678"] and queries == [["+33612345678", "c-1"]]
    assert sent == []  # nothing pops before a phone rings

    # a store that stopped answering: the pop is still complete, from what the arrival fetched
    async def stuck(*_a, **_k):
        await asyncio.Event().wait()

    monkeypatch.setattr(sp, "local_history", stuck)
    pop.history_timeout_s = 0.01
    pop._hist.clear()  # even with the shared cache gone (expired, or a settling number)
    await fire(pop, ringing("call-1", "alice"))
    assert sent[-1]["contact"]["id"] == "c-1" and sent[-1]["update"] is False
    assert crm.calls == ["+33612345678"] and not pop._late  # no late-history update pending
    await pop.close()


async def test_a_ring_all_shares_one_history_query(engine, monkeypatch):
    history = GatedHistory(monkeypatch)
    pop, sent = make_pop(engine, FakeCrm({"+33612345678": [CLAIRE]}))
    pop.history_timeout_s = 0.01
    await pop.on_event(ringing("call-1", "alice"))
    await pop.on_event(ringing("call-1", "bob"))
    await pop.drain()
    assert len(sent) == 2 and history.calls == 1
    history.gate.set()
    await pop.close()


async def test_expired_history_entries_leave_the_cache_as_new_ones_come(engine):
    clock = ManualClock()
    crm = FakeCrm({})
    pop = ScreenPop(CachedLookup(crm, clock), engine, SETTINGS, publish=lambda _m: asyncio.sleep(0),
                    history_ttl_s=30, history_timeout_s=5)
    for i in range(50):
        await fire(pop, ringing(f"call-{i}", "alice", number=f"+336123456{i:02d}"))
        await clock.advance(1.0)
    # 50 callers over 50 s with a 30 s TTL: only the last 30 s are kept, and their index entries
    assert 29 <= len(pop._hist) <= 31
    assert set(pop._hist_index) == {k for keys in pop._hist for k in keys}
    await pop.close()
