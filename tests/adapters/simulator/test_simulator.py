"""Simulator behaviour: traffic statistics, caller patience, command errors, call control."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from cti.adapters.base import (
    Adapter,
    AdapterContext,
    AdapterError,
    Answer,
    AttendedTransfer,
    BlindTransfer,
    CallNotFound,
    Capability,
    Connect,
    Hangup,
    Hold,
    Monitor,
    Originate,
    Play,
    Record,
    SendDtmf,
    Unhold,
    VoicemailDrop,
    adapter_class,
    check_capability,
)
from cti.calls.state import fold
from cti.clock import ManualClock
from cti.config import ProviderSettings
from cti.model import EventKind, Outcome
from tests.adapters.simulator.harness import QUIET, SimHarness

CUSTOMER = "+33612345678"
SUPPORT = "+33170000100"
ALICE = (("alice", "sim/alice"),)


async def _answered(h: SimHarness, agent: str = "alice") -> str:
    pcid = h.sim.inject_call(from_number=CUSTOMER, to_number=SUPPORT, patience_s=math.inf)
    await h.run(Connect(pcid, ((agent, f"sim/{agent}"),), timeout_s=15))
    await h.run(Answer(pcid, agent))
    return pcid


async def test_poisson_arrivals_match_the_rate_over_a_simulated_hour() -> None:
    rates = {"support": 2.0, "sales": 1.0, "billing": 0.0}
    async with SimHarness(**{**QUIET, "seed": 42, "arrival_rate_per_min": rates}) as h:
        await h.advance(3600, step=30)
        created = Counter(e.queue for e in h.events if e.kind is EventKind.CREATED)
    # Poisson(120): sd ~11; Poisson(60): sd ~7.7 -> 3 sd bounds
    assert 87 <= created["support"] <= 153, created
    assert 37 <= created["sales"] <= 83, created
    assert created["billing"] == 0


async def test_same_seed_gives_the_same_traffic() -> None:
    runs = []
    for _ in range(2):
        async with SimHarness(**{**QUIET, "seed": 3, "arrival_rate_per_min": 3.0}) as h:
            await h.advance(600, step=10)
            runs.append([(e.event_id, e.kind, e.from_number, e.occurred_at) for e in h.events])
    assert runs[0] == runs[1] and len(runs[0]) > 20


async def test_callers_from_the_customer_list_and_some_unknown() -> None:
    customers = [f"+3361234{i:04d}" for i in range(20)]
    opts = {**QUIET, "seed": 5, "arrival_rate_per_min": 5.0, "customer_numbers": customers,
            "unknown_caller_ratio": 0.25}
    async with SimHarness(**opts) as h:
        await h.advance(1200, step=20)
        callers = [e.from_number for e in h.events if e.kind is EventKind.CREATED]
    known = sum(1 for c in callers if c in customers)
    assert len(callers) > 50
    assert 0.6 < known / len(callers) < 0.9
    assert all(c.startswith("+33") and len(c) == 12 for c in callers)


async def test_caller_abandons_after_their_patience() -> None:
    async with SimHarness(**QUIET) as h:
        pcid = await h.sim.dial_in(from_number=CUSTOMER, to_number=SUPPORT, patience_s=30)
        await h.clock.advance(29)  # straight on the clock: dial_in registered the timer
        await h.settle()
        assert "ended" not in h.kinds(pcid)
        await h.clock.advance(2)
        await h.settle()
        call = fold(h.of(pcid))
    assert call is not None and call.outcome is Outcome.ABANDONED
    assert call.end_cause == "caller_hangup" and call.wait_s == pytest.approx(30, abs=0.01)


async def test_mean_wait_of_abandoned_calls_follows_patience() -> None:
    opts = {**QUIET, "seed": 11, "arrival_rate_per_min": 6.0, "patience_s": 60}
    async with SimHarness(**opts) as h:
        await h.advance(3600, step=30)
        by_call: dict[str, list] = {}
        for e in h.events:
            by_call.setdefault(e.provider_call_id, []).append(e)
    calls = [fold(evs) for evs in by_call.values()]
    ended = [c for c in calls if c is not None and c.is_ended]
    assert len(ended) > 250
    assert all(c.outcome is Outcome.ABANDONED for c in ended)
    mean = sum(c.wait_s for c in ended) / len(ended)
    assert 48 < mean < 72, mean


async def test_commands_on_an_ended_call_raise_call_not_found() -> None:
    async with SimHarness(**QUIET) as h:
        pcid = await _answered(h)
        await h.run(Hangup(pcid))
        for cmd in (Hangup(pcid), Hold(pcid), Unhold(pcid), Answer(pcid, "alice"), Connect(pcid, ALICE),
                    BlindTransfer(pcid, "+33145000000"), AttendedTransfer(pcid, "sim/bob"),
                    Record(pcid), Play(pcid, "sound:hello"), VoicemailDrop(pcid, "vm.wav"),
                    Monitor(pcid, "sim/sam"), SendDtmf(pcid, "1"), Hangup("no-such-call")):
            with pytest.raises(CallNotFound):
                await h.sim.execute(cmd)


async def test_it_is_an_adapter_ready_after_start() -> None:
    h = SimHarness(**QUIET)
    assert isinstance(h.sim, Adapter) and not h.sim.ready
    async with h:
        assert h.sim.ready and h.sim.name == "sim" and h.sim.tenant == "acme"
    assert not h.sim.ready


def test_nothing_is_unsupported() -> None:
    cls = adapter_class("simulator")
    assert cls.capabilities == frozenset(Capability)
    for mode in ("listen", "whisper", "barge", "takeover", "stop"):
        check_capability("simulator", cls.capabilities, Monitor("x", "sim/sam", mode=mode))
    for action in ("start", "stop", "pause", "resume"):
        check_capability("simulator", cls.capabilities, Record("x", action))


def test_bad_option_is_named() -> None:
    cls = adapter_class("simulator")
    ctx = AdapterContext(clock=ManualClock())
    with pytest.raises(AdapterError, match="answer_probability"):
        cls(ProviderSettings(name="sim", type="simulator", answer_probability=2), ctx)
    with pytest.raises(AdapterError, match="talk_time_s"):
        cls(ProviderSettings(name="sim", type="simulator", talk_time_s=[10, 5]), ctx)
    with pytest.raises(AdapterError, match="customer_numbers"):
        cls(ProviderSettings(name="sim", type="simulator", customer_numbers=["hello"]), ctx)
    with pytest.raises(AdapterError, match="unknown simulator option"):
        cls(ProviderSettings(name="sim", type="simulator", arrival_rate=1), ctx)


async def test_state_errors_are_clear() -> None:
    async with SimHarness(**QUIET) as h:
        pcid = h.sim.inject_call(from_number=CUSTOMER, to_number=SUPPORT, patience_s=math.inf)
        with pytest.raises(AdapterError, match="not ringing"):
            await h.run(Answer(pcid, "alice"))
        with pytest.raises(AdapterError, match="before it is answered"):
            await h.run(Hold(pcid))
        await h.run(Connect(pcid, ALICE))
        with pytest.raises(AdapterError, match="not waiting"):
            await h.run(Connect(pcid, ALICE))
        with pytest.raises(AdapterError, match="not ringing agent 'bob'"):
            await h.run(Answer(pcid, "bob"))
        await h.run(Answer(pcid, "alice"))
        with pytest.raises(AdapterError, match="DTMF"):
            await h.run(SendDtmf(pcid, "12x"))
        with pytest.raises(AdapterError, match="monitor mode"):
            await h.run(Monitor(pcid, "sim/sam", mode="spy"))


async def test_ring_all_first_answer_wins_and_others_stop_ringing() -> None:
    opts = {**QUIET, "auto_answer": True, "answer_probability": 1.0, "answer_delay_s": [1, 10]}
    async with SimHarness(**opts) as h:
        pcid = h.sim.inject_call(from_number=CUSTOMER, to_number=SUPPORT, patience_s=math.inf)
        await h.run(Connect(pcid, (("alice", "sim/alice"), ("bob", "sim/bob"), ("carol", "sim/carol")), 15))
        await h.advance(12)
        evs = h.of(pcid)
    answered = [e for e in evs if e.kind is EventKind.ANSWERED]
    assert len(answered) == 1
    others = [e for e in evs if e.kind is EventKind.NO_ANSWER]
    assert {e.agent for e in others} == {"alice", "bob", "carol"} - {answered[0].agent}
    assert all(e.data["reason"] == "answered_elsewhere" for e in others)
    assert fold(evs).agent == answered[0].agent


async def test_no_answer_puts_the_call_back_in_the_queue_for_another_connect() -> None:
    async with SimHarness(**QUIET) as h:
        pcid = h.sim.inject_call(from_number=CUSTOMER, to_number=SUPPORT, patience_s=math.inf)
        await h.run(Connect(pcid, ALICE, timeout_s=10))
        await h.advance(11)
        await h.run(Connect(pcid, (("bob", "sim/bob"),), timeout_s=10))
        await h.run(Answer(pcid, "bob"))
        await h.run(Hangup(pcid))
        call = fold(h.of(pcid))
    assert call.agents_rung == ("alice", "bob") and call.agent == "bob"
    assert call.outcome is Outcome.ANSWERED


async def test_every_event_carries_tenant_agent_queue_and_numbers() -> None:
    async with SimHarness(**QUIET) as h:
        pcid = await _answered(h)
        await h.run(Hold(pcid))
        await h.run(Hangup(pcid))
        evs = h.of(pcid)
    assert {e.tenant for e in evs} == {"acme"}
    assert {e.queue for e in evs} == {"support"}
    assert {(e.from_number, e.to_number) for e in evs} == {(CUSTOMER, SUPPORT)}
    assert all(e.agent == "alice" for e in evs if e.kind not in (EventKind.CREATED, EventKind.QUEUED))
    assert len({e.event_id for e in evs}) == len(evs)


async def test_blind_transfer_to_a_queue_number_comes_back_as_a_new_queued_call() -> None:
    async with SimHarness(**QUIET) as h:
        pcid = await _answered(h)
        res = await h.run(BlindTransfer(pcid, "+33170000300"))
        new = res.detail["new_provider_call_id"]
        assert fold(h.of(pcid)).end_cause == "transferred"
        assert [(str(e.kind), e.queue) for e in h.of(new)] == [("created", "billing"), ("queued", "billing")]
        assert h.of(new)[0].from_number == CUSTOMER


async def test_attended_transfer_to_a_colleague_keeps_the_call_with_them() -> None:
    async with SimHarness(**QUIET) as h:
        pcid = await _answered(h)
        await h.run(AttendedTransfer(pcid, "sim/bob", "consult"))
        with pytest.raises(AdapterError, match="consultation"):
            await h.run(Unhold(pcid))
        await h.run(AttendedTransfer(pcid, "sim/bob", "complete"))
        await h.run(Hangup(pcid))
        evs = h.of(pcid)
    assert [str(e.kind) for e in evs][-4:] == ["held", "transferred", "resumed", "ended"]
    assert evs[-1].agent == "bob"
    assert fold(evs).transferred_to == "sim/bob"


async def test_originate_busy_and_no_answer_numbers() -> None:
    opts = {**QUIET, "busy_numbers": ["+33611111111"], "no_answer_numbers": ["+33622222222"]}
    async with SimHarness(**opts) as h:
        busy = await h.run(Originate("sim/alice", "06 11 11 11 11", call_id="o1"))
        ring = await h.run(Originate("sim/bob", "+33622222222", call_id="o2", timeout_s=20))
        await h.advance(25)
        b, n = fold(h.of(busy.provider_call_id)), fold(h.of(ring.provider_call_id))
    assert (b.outcome, b.agent, b.to_number) == (Outcome.BUSY, "alice", "+33611111111")
    assert (n.outcome, n.end_cause, n.agent) == (Outcome.MISSED, "no_answer", "bob")


async def test_voicemail_drop_frees_the_agent_plays_then_ends_as_voicemail() -> None:
    opts = {**QUIET, "customer_answer_probability": 1.0, "customer_busy_probability": 0.0,
            "customer_answer_delay_s": [2, 2], "voicemail_drop_s": 6}
    async with SimHarness(**opts) as h:
        res = await h.run(Originate("sim/alice", CUSTOMER, call_id="o3", agent="alice"))
        await h.advance(3)
        drop = await h.run(VoicemailDrop(res.provider_call_id, "media/vm-fr.wav"))
        assert drop.detail["agent_left"] is True
        await h.advance(3)
        assert "ended" not in h.kinds(res.provider_call_id)
        await h.advance(4)
        evs = h.of(res.provider_call_id)
    assert [str(e.kind) for e in evs][-2:] == ["playback_finished", "ended"]
    assert evs[-2].data["voicemail_drop"] is True and evs[-2].data["media"] == "media/vm-fr.wav"
    assert fold(evs).outcome is Outcome.VOICEMAIL


async def test_monitor_switches_mode_and_stops_when_the_call_ends() -> None:
    async with SimHarness(**QUIET) as h:
        pcid = await _answered(h)
        res = await h.run(Monitor(pcid, "sim/sam", "listen"))
        again = await h.run(Monitor(pcid, "sim/sam", "barge", session_id=res.session_id))
        assert again.session_id == res.session_id
        await h.run(Hangup(pcid))
        mon = [(str(e.kind), e.data["mode"], e.data["supervisor"]) for e in h.of(pcid)
               if e.kind in (EventKind.MONITOR_STARTED, EventKind.MONITOR_STOPPED)]
    assert mon == [("monitor_started", "listen", "sam"), ("monitor_stopped", "listen", "sam"),
                   ("monitor_started", "barge", "sam"), ("monitor_stopped", "barge", "sam")]


async def test_record_option_records_answered_calls_with_the_given_files() -> None:
    opts = {**QUIET, "record": True, "recording_files": ["a.wav", "b.wav"]}
    async with SimHarness(**opts) as h:
        paths = []
        for _ in range(3):
            pcid = await _answered(h)
            await h.advance(5)
            await h.run(Record(pcid, "pause"))
            await h.run(Record(pcid, "resume"))
            await h.run(Hangup(pcid))
            ready = [e for e in h.of(pcid) if e.kind is EventKind.RECORDING_READY]
            paths.append(ready[0].data["path"])
            assert fold(h.of(pcid)).recording == ready[0].data["path"]
    assert paths == ["a.wav", "b.wav", "a.wav"]


async def test_dtmf_and_play() -> None:
    async with SimHarness(**{**QUIET, "play_s": 2}) as h:
        pcid = await _answered(h)
        await h.run(SendDtmf(pcid, "12#"))
        await h.run(Play(pcid, "sound:please-hold"))
        await h.advance(3)
        digits = [e.data["digit"] for e in h.of(pcid) if e.kind is EventKind.DTMF]
        played = [e.data["media"] for e in h.of(pcid) if e.kind is EventKind.PLAYBACK_FINISHED]
    assert digits == ["1", "2", "#"] and played == ["sound:please-hold"]


async def test_spontaneous_outbound_calls_from_idle_agents() -> None:
    opts = {**QUIET, "seed": 9, "outbound_per_agent_per_hour": 6.0, "auto_hangup": True,
            "outbound_agents": ["alice", "bob", "carol"],
            "customer_numbers": ["+33612345678", "+33698765432"], "talk_time_s": [30, 90]}
    async with SimHarness(**opts) as h:
        await h.advance(3600, step=30)
        created = [e for e in h.events if e.kind is EventKind.CREATED]
    assert 8 <= len(created) <= 32  # 3 agents x 6 per hour = 18 expected
    assert all(str(e.direction) == "outbound" for e in created)
    assert {e.agent for e in created} <= {"alice", "bob", "carol"}  # sam is a supervisor
    assert h.sim.calls_started == len(created)
    assert {e.to_number for e in created} <= {"+33612345678", "+33698765432"}


async def test_an_hour_of_full_traffic_with_a_naive_router_folds_consistently() -> None:
    """Everything on: arrivals, outbound, answers, holds, transfers, recording; every call ends sanely."""
    opts = {"seed": 21, "arrival_rate_per_min": 1.5, "outbound_per_agent_per_hour": 3, "record": True,
            "hold_probability": 0.3, "transfer_probability": 0.2, "answer_probability": 0.8,
            "talk_time_s": [30, 240], "patience_s": 120, "customer_numbers": [CUSTOMER]}
    agents = ["alice", "bob", "carol", "sam"]
    by_call: dict[str, list] = {}
    async with SimHarness(**opts) as h:
        seen = 0
        for _ in range(360):
            await h.advance(10)
            for e in h.events[seen:]:
                by_call.setdefault(e.provider_call_id, []).append(e)
            seen = len(h.events)
            # a naive router: connect each waiting call to an agent not on a call
            states = {p: fold(by_call[p]) for p in h.sim.live_calls()}
            on_call = {c.agent for c in states.values() if c.state.value in ("ringing", "answered", "held")}
            for p, c in states.items():
                free = [a for a in agents if a not in on_call]
                if c.state.value == "queued" and free:
                    await h.run(Connect(p, ((free[0], f"sim/{free[0]}"),), timeout_s=15))
                    on_call.add(free[0])
        for e in h.events[seen:]:
            by_call.setdefault(e.provider_call_id, []).append(e)
    outcomes = Counter()
    for evs in by_call.values():
        assert [e.seq for e in evs] == list(range(1, len(evs) + 1))
        call = fold(evs)
        if call.is_ended:
            outcomes[call.outcome] += 1
    assert outcomes[Outcome.ANSWERED] > 40 and outcomes[Outcome.ABANDONED] > 0, outcomes
    kinds = Counter(e.kind for e in h.events)
    for k in (EventKind.HELD, EventKind.RESUMED, EventKind.TRANSFERRED, EventKind.RECORDING_READY,
              EventKind.NO_ANSWER):
        assert kinds[k] > 0, k


async def test_blind_transfer_to_voicemail_ends_as_voicemail() -> None:
    """Queue overflow to a mailbox: the waiting caller leaves a message, the call ends as voicemail."""
    async with SimHarness(**{**QUIET, "seed": 1}) as h:
        pcid = h.sim.inject_call(from_number=CUSTOMER, to_number=SUPPORT, patience_s=math.inf)
        await h.run(Connect(pcid, ALICE, timeout_s=15))
        await h.run(BlindTransfer(pcid, "voicemail:support"))
        with pytest.raises(AdapterError, match="voicemail"):
            await h.run(Hold(pcid))
        await h.advance(45)
        evs = h.of(pcid)
    call = fold(evs)
    assert call.outcome is Outcome.VOICEMAIL and call.end_cause == "voicemail"
    assert [str(e.kind) for e in evs][2:5] == ["ringing", "no_answer", "transferred"]


async def test_runs_faster_than_real_time_on_a_scaled_clock() -> None:
    import asyncio

    from cti.clock import ScaledClock

    clock = ScaledClock(speed=600)
    ctx = AdapterContext(tenant="acme", clock=clock, queue_numbers={SUPPORT: "support"})
    sim = adapter_class("simulator")(ProviderSettings(name="sim", type="simulator", seed=1,
                                                      arrival_rate_per_min=30.0), ctx)
    await sim.start()
    await asyncio.sleep(0.3)  # about three simulated minutes
    await sim.stop()
    created = [e async for e in sim.events() if e.kind is EventKind.CREATED]
    assert len(created) >= 10
    assert (created[-1].occurred_at - created[0].occurred_at).total_seconds() > 10


async def test_blind_transfer_to_a_colleague_goes_on_with_them() -> None:
    async with SimHarness(**QUIET) as h:
        pcid = await _answered(h)
        await h.run(BlindTransfer(pcid, "sim/carol"))
        await h.run(Hold(pcid))  # still a live call, now carol's
        await h.run(Hangup(pcid))
        evs = h.of(pcid)
    call = fold(evs)
    assert (call.agent, call.transferred_to, call.end_cause) == ("carol", "sim/carol", "normal")
    assert evs[-1].agent == "carol"
