"""The pure ACD engine: strategies, timeouts, priorities, overflow, preferred agents, callbacks."""

from __future__ import annotations

import json

import pytest

from cti.model import AgentState
from cti.routing.engine import CallIn
from cti.routing.queues import compile_routing
from cti.routing.states import InvalidTransition, UnknownAgent
from tests.routing.helpers import T0, chosen, engine, legs, offers, overflows, settings, states

S = AgentState


def q(**kw):
    base = {"name": "support", "requires": "fr >= 5"}
    base.update(kw)
    return [base]


def test_longest_idle_offers_the_agent_idle_longest_and_explains_why():
    e = engine()  # alice free first, then bob; carol lacks fr >= 5
    acts = e.enqueue(CallIn("c1", "support", provider="pbx", provider_call_id="p1"), T0 + 30)
    [o] = offers(acts)
    assert o.targets == (("alice", "PJSIP/alice"),)
    assert o.provider == "pbx" and o.provider_call_id == "p1" and o.timeout_s == 15.0
    d = o.decision
    assert d.chosen == "alice" and d.action == "offer" and d.strategy == "longest_idle"
    assert [c.agent for c in d.candidates] == ["alice", "bob"]          # carol is not eligible
    assert d.candidates[0].parts["idle_s"] == pytest.approx(30.0)
    assert "alice ranked first of 2" in d.reason
    assert ("alice", "ringing") in states(acts)
    row = d.to_row()
    json.dumps(row, default=str)
    assert row["chosen"] == "alice" and row["candidates"][0]["agent"] == "alice"


def test_no_answer_moves_to_the_next_agent():
    e = engine()
    e.enqueue(CallIn("c1", "support"), T0 + 1)
    acts = e.no_answer("c1", "alice", T0 + 16)
    assert chosen(acts) == ["bob"]
    assert "skipped" not in offers(acts)[0].decision.reason
    assert ("alice", "available") in states(acts)
    assert ("end", "alice", "c1") in legs(acts)


def test_ring_timeout_without_provider_event_moves_on():
    e = engine(settings(queues=q(ring_timeout_s=10)), ring_grace_s=2)
    e.enqueue(CallIn("c1", "support"), T0 + 1)
    assert e.advance(T0 + 12.9) == []
    acts = e.advance(T0 + 13)
    assert chosen(acts) == ["bob"]


def test_every_free_agent_tried_goes_round_again():
    e = engine(available=("alice",))
    e.enqueue(CallIn("c1", "support"), T0 + 1)
    acts = e.no_answer("c1", "alice", T0 + 16)
    assert chosen(acts) == ["alice"]


def test_fewest_calls():
    e = engine(settings(queues=q(strategy="fewest_calls")))
    e.enqueue(CallIn("c1", "support"), T0 + 1)
    e.answered("c1", "alice", T0 + 2)
    e.ended("c1", T0 + 10)
    # alice is now the most recently idle but has taken 1 call; bob none
    assert chosen(e.enqueue(CallIn("c2", "support"), T0 + 20)) == ["bob"]


def test_round_robin_rotates_through_agents():
    s = settings(agents=[{"id": a, "skills": {"fr": 9}} for a in ("a1", "a2", "a3")],
                 queues=q(strategy="round_robin"))
    e = engine(s)
    got = []
    for i in range(6):
        acts = e.enqueue(CallIn(f"c{i}", "support"), T0 + 10 + i)
        [agent] = chosen(acts)
        got.append(agent)
        e.answered(f"c{i}", agent, T0 + 10 + i)
        e.ended(f"c{i}", T0 + 10 + i)
    assert got == ["a1", "a2", "a3", "a1", "a2", "a3"]


def test_linear_hunts_in_configuration_order():
    s = settings(agents=[{"id": a, "skills": {"fr": 9}} for a in ("z", "y", "x")], queues=q(strategy="linear"))
    e = engine(s, available=("x", "y", "z"))
    assert chosen(e.enqueue(CallIn("c1", "support"), T0 + 5)) == ["z"]
    assert chosen(e.enqueue(CallIn("c2", "support"), T0 + 5)) == ["y"]


def test_best_skill_offers_the_most_skilled():
    e = engine(settings(queues=q(strategy="best_skill", requires="fr >= 3")))
    acts = e.enqueue(CallIn("c1", "support"), T0 + 5)
    assert chosen(acts) == ["bob"]  # fr 9 > alice 8 > carol 3
    assert offers(acts)[0].decision.candidates[0].parts["skill"] == 9


def test_ring_all_rings_every_free_agent_and_frees_the_others_on_answer():
    e = engine(settings(queues=q(strategy="ring_all", requires="fr >= 1")))
    acts = e.enqueue(CallIn("c1", "support"), T0 + 5)
    [o] = offers(acts)
    assert [a for a, _ in o.targets] == ["alice", "bob", "carol"]
    acts = e.answered("c1", "bob", T0 + 8)
    assert set(states(acts)) == {("alice", "available"), ("carol", "available"), ("bob", "on_call")}
    assert e.agents["bob"].state is S.ON_CALL


def test_vip_jumps_the_queue_and_fifo_holds_within_a_priority():
    s = settings(queues=q(), rules=[{"name": "vip", "when": "contact.role in ['CEO']", "boost": 50}])
    e = engine(s, available=())
    for i in range(3):
        e.enqueue(CallIn(f"n{i}", "support"), T0 + i)
    e.enqueue(CallIn("vip", "support", contact={"contact": {"role": "CEO"}}), T0 + 10)
    order = []
    acts = e.set_agent_state("alice", "available", None, T0 + 20)
    for _ in range(4):
        [o] = offers(acts)
        order.append(o.call_id)
        e.answered(o.call_id, "alice", T0 + 21)
        acts = e.ended(o.call_id, T0 + 22)
    assert order == ["vip", "n0", "n1", "n2"]


def test_vip_decision_names_the_rule():
    s = settings(queues=q(priority=5), rules=[{"name": "vip", "when": "account.won_amount_24m >= 50000",
                                              "boost": 50}])
    e = engine(s)
    [o] = offers(e.enqueue(CallIn("c1", "support", contact={"account.won_amount_24m": 60000}), T0 + 1))
    assert o.decision.priority == 55 and o.decision.rules == ("vip",) and "vip" in o.decision.reason


def test_capacity_two_takes_two_calls_never_three():
    s = settings(agents=[{"id": "blend", "skills": {"fr": 9}, "capacity": 2}], queues=q())
    e = engine(s)
    assert chosen(e.enqueue(CallIn("c1", "support"), T0 + 1)) == ["blend"]
    e.answered("c1", "blend", T0 + 2)
    assert chosen(e.enqueue(CallIn("c2", "support"), T0 + 3)) == ["blend"]
    assert chosen(e.enqueue(CallIn("c3", "support"), T0 + 4)) == []
    assert len(e.agents["blend"].legs) == 2
    acts = e.ended("c1", T0 + 50)
    assert chosen(acts) == ["blend"]  # c3 gets the freed slot


def test_preferred_agent_gets_the_call_first_then_the_queue():
    e = engine(settings(queues=q(preferred_agent_s=20)))
    e.enqueue(CallIn("c0", "support"), T0 + 1)  # alice busy
    e.answered("c0", "alice", T0 + 2)
    acts = e.enqueue(CallIn("c1", "support", owner="alice"), T0 + 5)
    assert chosen(acts) == []                      # bob is free but the owner has 20 s
    acts = e.advance(T0 + 25)
    assert chosen(acts) == ["bob"]


def test_preferred_agent_free_is_offered_even_when_not_longest_idle():
    e = engine(settings(queues=q(preferred_agent_s=20)))
    acts = e.enqueue(CallIn("c1", "support", owner="bob"), T0 + 5)
    [o] = offers(acts)
    assert o.targets[0][0] == "bob" and "preferred" in o.decision.reason
    assert o.decision.candidates[0].parts["preferred"] == 1.0
    # bob lets it ring: the queue takes over at once
    assert chosen(e.no_answer("c1", "bob", T0 + 10)) == ["alice"]


def test_owner_freed_within_the_window_takes_the_call():
    e = engine(settings(queues=q(preferred_agent_s=30)))
    e.enqueue(CallIn("c0", "support"), T0 + 1)
    e.answered("c0", "alice", T0 + 2)
    e.enqueue(CallIn("c1", "support", owner="alice"), T0 + 5)
    acts = e.ended("c0", T0 + 10)
    assert chosen(acts) == ["alice"]


def test_overflow_widens_the_requirement_after_n_seconds():
    s = settings(queues=q(requires="fr >= 5 and billing >= 5", overflow={"after_s": 60, "widen": "fr >= 3"}))
    e = engine(s, available=("bob", "carol"))   # neither has billing
    assert chosen(e.enqueue(CallIn("c1", "support"), T0 + 1)) == []
    acts = e.advance(T0 + 61)
    assert [o.kind for o in overflows(acts)] == ["widen"]
    assert chosen(acts) == ["bob"]


def test_overflow_then_voicemail_at_its_time():
    s = settings(queues=q(overflow={"after_s": 45, "then": "voicemail", "target": "vm:support"}))
    e = engine(s, available=())
    e.enqueue(CallIn("c1", "support"), T0)
    assert overflows(e.advance(T0 + 44.9)) == []
    [ov] = overflows(e.advance(T0 + 45))
    assert (ov.kind, ov.target, ov.decision.action) == ("voicemail", "vm:support", "overflow_voicemail")
    assert "c1" not in e.items


def test_overflow_to_another_queue_keeps_the_place():
    s = settings(queues=[{"name": "a", "requires": "billing >= 5", "overflow": {"after_s": 30, "then": "queue:b"}},
                         {"name": "b", "requires": "internet >= 1"}])
    e = engine(s, available=())
    e.enqueue(CallIn("early", "a"), T0)
    e.enqueue(CallIn("late", "b"), T0 + 10)
    [ov] = overflows(e.advance(T0 + 30))
    assert ov.kind == "queue" and ov.target == "b"
    acts = e.set_agent_state("bob", "available", None, T0 + 40)
    assert [o.call_id for o in offers(acts)] == ["early"]


def test_overflow_widen_then_callback_offer_at_max_wait():
    s = settings(queues=q(max_wait_s=120, overflow={"after_s": 60, "widen": "fr >= 1", "then": "callback",
                                                     "prompt": "sound:press-1"}))
    e = engine(s, available=())
    e.enqueue(CallIn("c1", "support", from_number="+33611111111"), T0)
    assert [o.kind for o in overflows(e.advance(T0 + 60))] == ["widen"]
    [ov] = overflows(e.advance(T0 + 120))
    assert ov.kind == "callback_offer" and ov.target == "sound:press-1"
    assert e.items["c1"].callback_offered


def test_closed_queue_goes_to_voicemail_with_reason():
    s = settings(queues=q(hours="Sat 09:00-12:00", overflow={"after_s": 60, "then": "voicemail", "target": "vm"}))
    e = engine(s)
    [ov] = overflows(e.enqueue(CallIn("c1", "support"), T0))
    assert ov.kind == "voicemail" and ov.decision.action == "closed" and "closed" in ov.decision.reason


def test_holiday_closes_the_queue():
    s = settings(queues=q(holidays=["2026-01-05"]))
    assert overflows(engine(s).enqueue(CallIn("c1", "support"), T0))[0].decision.action == "closed"


def test_maximum_queue_length():
    e = engine(settings(queues=q(max_length=2)), available=())
    for i in range(2):
        assert overflows(e.enqueue(CallIn(f"c{i}", "support"), T0 + i)) == []
    [ov] = overflows(e.enqueue(CallIn("c2", "support"), T0 + 3))
    assert ov.decision.action == "queue_full"


def test_unknown_queue_is_rejected_with_a_decision():
    [ov] = overflows(engine().enqueue(CallIn("c1", "nope"), T0))
    assert ov.kind == "rejected" and "unknown queue" in ov.decision.reason


def test_callback_keeps_the_place_and_reserves_an_agent_when_its_turn_comes():
    e = engine(settings(queues=q(wrap_up_s=0)), available=())
    e.enqueue(CallIn("first", "support", provider="pbx", from_number="+33611111111"), T0)
    e.enqueue(CallIn("second", "support"), T0 + 5)
    cb = e.request_callback("first", "+33611111111", T0 + 20)
    assert cb is not None and cb.position_at == T0
    assert e.ended("first", T0 + 21) == []                    # caller hangs up, keeps the place
    acts = e.set_agent_state("alice", "available", None, T0 + 60)
    [o] = offers(acts)
    assert o.call_id == "first" and o.callback is cb and o.dial_call_id == cb.done_call_id
    assert o.decision.action == "callback_dial" and cb.state == "dialing" and cb.agent == "alice"
    assert e.agents["alice"].state is S.RINGING
    e.answered(o.dial_call_id, "alice", T0 + 70)
    assert cb.state == "done" and e.agents["alice"].state is S.ON_CALL
    acts = e.ended(o.dial_call_id, T0 + 100)
    assert [x.call_id for x in offers(acts)] == ["second"]
    assert cb.to_row()["state"] == "done"


def test_failed_callback_is_retried_later():
    e = engine(available=())
    e.enqueue(CallIn("c1", "support"), T0)
    e.request_callback("c1", "+33611111111", T0 + 1)
    e.ended("c1", T0 + 2)
    [o] = offers(e.set_agent_state("alice", "available", None, T0 + 3))
    first_dial = o.dial_call_id
    e.ended(first_dial, T0 + 20)                              # nobody picked up
    assert e.items["c1"].callback.state == "waiting"
    [o2] = offers(e.advance(T0 + 20 + 120))
    assert o2.dial_call_id != first_dial and o2.callback.attempts == 2


def test_wrap_up_timer_then_next_call():
    e = engine(settings(queues=q(wrap_up_s=10)), available=("alice",))
    e.enqueue(CallIn("c1", "support"), T0)
    e.answered("c1", "alice", T0 + 2)
    e.enqueue(CallIn("c2", "support"), T0 + 3)
    acts = e.ended("c1", T0 + 30)
    assert states(acts) == [("alice", "wrap_up")] and chosen(acts) == []
    acts = e.advance(T0 + 40)
    assert states(acts)[0] == ("alice", "available") and chosen(acts) == ["alice"]


def test_available_while_ringing_is_refused():
    e = engine()
    e.enqueue(CallIn("c1", "support"), T0 + 1)
    with pytest.raises(InvalidTransition) as info:
        e.set_agent_state("alice", "available", None, T0 + 2)
    assert info.value.current is S.RINGING and e.agents["alice"].legs == {"c1": "ringing"}


def test_agent_going_away_while_ringing_passes_the_call_on():
    e = engine()
    e.enqueue(CallIn("c1", "support"), T0 + 1)
    acts = e.set_agent_state("alice", "away", "lunch", T0 + 3)
    assert ("alice", "away") in states(acts) and chosen(acts) == ["bob"]
    assert e.agents["alice"].reason == "lunch"


def test_manual_state_errors():
    e = engine()
    with pytest.raises(UnknownAgent):
        e.set_agent_state("zed", "available", None, T0)
    with pytest.raises(InvalidTransition) as info:
        e.set_agent_state("alice", "ringing", None, T0)
    assert info.value.current is S.AVAILABLE
    e2 = engine(settings(queues=q(wrap_up_s=30)), available=("alice",))
    e2.enqueue(CallIn("c1", "support"), T0)
    e2.answered("c1", "alice", T0)
    e2.ended("c1", T0 + 1)
    assert e2.agents["alice"].state is S.WRAP_UP
    with pytest.raises(InvalidTransition) as info:
        e2.set_agent_state("alice", "ringing", None, T0 + 2)
    assert info.value.current is S.WRAP_UP
    e2.set_agent_state("alice", "available", None, T0 + 3)   # ends wrap-up early
    assert e2.agents["alice"].state is S.AVAILABLE


def test_direct_calls_outside_queues_still_drive_agent_state():
    e = engine()
    e.ringing("x1", "alice", T0)
    assert e.agents["alice"].state is S.RINGING
    e.answered("x1", "alice", T0 + 2)
    assert e.agents["alice"].state is S.ON_CALL
    assert chosen(e.enqueue(CallIn("c1", "support"), T0 + 3)) == ["bob"]
    e.ended("x1", T0 + 10)
    assert e.agents["alice"].state is S.AVAILABLE


def test_duplicate_enqueue_is_ignored():
    e = engine()
    assert chosen(e.enqueue(CallIn("c1", "support"), T0)) == ["alice"]
    assert e.enqueue(CallIn("c1", "support"), T0 + 1) == []


def test_reconfigure_keeps_agents_and_waiting_calls():
    e = engine(available=("carol",))           # carol cannot take fr >= 5
    e.enqueue(CallIn("c1", "support"), T0)
    new = settings(queues=q(requires="fr >= 3", strategy="best_skill"))
    e.reconfigure(compile_routing(new))
    assert e.agents["carol"].state is S.AVAILABLE and "c1" in e.items
    # the waiting call is routed with the new rules at the next tick
    assert chosen(e.advance(T0 + 5)) == ["carol"]


def test_snapshot_counts_waiting_and_agents():
    e = engine(available=())
    e.enqueue(CallIn("c1", "support"), T0)
    e.enqueue(CallIn("c2", "support"), T0 + 10)
    snap = e.snapshot(T0 + 30)
    [sq] = snap["queues"]
    assert sq["name"] == "support" and sq["waiting"] == 2 and sq["oldest_wait_s"] == 30
    assert sq["agents"] == {"offline": 2, "available": 0, "ringing": 0, "on_call": 0, "wrap_up": 0, "away": 0}
    assert snap["agents"]["offline"] == 3


def test_reconfigure_during_wrap_up_and_calls_keeps_them_going():
    s = settings(queues=q(wrap_up_s=30))
    e = engine(s, available=("alice", "bob"))
    e.enqueue(CallIn("c1", "support"), T0)
    e.answered("c1", "alice", T0 + 1)
    e.enqueue(CallIn("c2", "support"), T0 + 2)
    e.answered("c2", "bob", T0 + 3)
    e.ended("c2", T0 + 4)                               # bob wraps up until T0 + 34
    # alice is removed from the configuration, a new agent appears
    new = settings(agents=[{"id": "bob", "skills": {"fr": 9}}, {"id": "dan", "skills": {"fr": 9}}],
                   queues=q(wrap_up_s=30))
    e.reconfigure(compile_routing(new))
    assert e.agents["alice"].state is S.ON_CALL and e.agents["dan"].state is S.OFFLINE
    e.advance(T0 + 34)
    assert e.agents["bob"].state is S.AVAILABLE           # the wrap-up timer survived the swap
    e.ended("c1", T0 + 40)
    assert e.agents["alice"].state is S.WRAP_UP
    assert chosen(e.enqueue(CallIn("c3", "support"), T0 + 41)) == ["bob"]   # never the retired alice


def test_calls_waiting_in_a_removed_queue_go_to_voicemail():
    e = engine(settings(queues=[{"name": "a", "requires": "fr >= 5"}, {"name": "b"}]), available=())
    e.enqueue(CallIn("c1", "a"), T0)
    e.reconfigure(compile_routing(settings(queues=[{"name": "b"}])))
    [ov] = overflows(e.advance(T0 + 1))
    assert ov.call_id == "c1" and ov.kind == "voicemail" and "removed" in ov.decision.reason
