"""Conformance: the Twilio adapter against the fake Twilio (REST + signed webhooks)."""

from __future__ import annotations

from cti.adapters.base import BlindTransfer, Connect, Hold, Monitor, Originate, Record, Unhold
from cti.model import EventKind
from tests.adapters.twilio.harness import TwilioEnv, twilio_env
from tests.conformance.scenarios import AGENT, CUSTOMER, QUEUE, QUEUE_NUMBER, check


async def _inbound_answered(env: TwilioEnv) -> tuple[str, str]:
    """Customer calls the queue number, the router connects alice, she answers. -> (sid, agent leg)."""
    fake, adapter = env.fake, env.adapter
    sid, status, twiml = await fake.inbound(CUSTOMER, QUEUE_NUMBER)
    assert status == 200 and f">{QUEUE}</Enqueue>" in twiml
    result = await adapter.execute(Connect(sid, ((AGENT, "client:alice"),)))
    (leg,) = result.detail["legs"]
    name, _, label = fake.conference_of(sid)
    assert (name, label) == (sid, "customer")
    for st in ("initiated", "ringing", "in-progress"):
        await fake.leg_status(leg, st)
    await fake.conference_event(sid, "participant-join", sid, "customer")
    await fake.conference_event(sid, "participant-join", leg, f"agent:{AGENT}")
    await env.wait_for(EventKind.ANSWERED, sid)
    return sid, leg


async def _end(env: TwilioEnv, sid: str, leg: str | None = None) -> None:
    if leg:
        await env.fake.leg_status(leg, "completed", duration=20)
    await env.fake.leg_status(sid, "completed", duration=30)
    await env.wait_for(EventKind.ENDED, sid)


async def test_inbound_answered() -> None:
    async with twilio_env() as env:
        sid, leg = await _inbound_answered(env)
        await _end(env, sid, leg)
        check("inbound_answered", env.of_call(sid))


async def test_inbound_not_answered() -> None:
    async with twilio_env() as env:
        fake = env.fake
        sid, _, _ = await fake.inbound(CUSTOMER, QUEUE_NUMBER)
        result = await env.adapter.execute(Connect(sid, ((AGENT, "client:alice"),), timeout_s=5))
        (leg,) = result.detail["legs"]
        await fake.leg_status(leg, "ringing")
        await fake.leg_status(leg, "no-answer")
        await _end(env, sid)
        check("inbound_not_answered", env.of_call(sid))


async def test_caller_hangup_while_queued() -> None:
    async with twilio_env() as env:
        sid, _, _ = await env.fake.inbound(CUSTOMER, QUEUE_NUMBER)
        await _end(env, sid)
        check("caller_hangup_while_queued", env.of_call(sid))


async def _click_to_call(env: TwilioEnv, customer_status: str) -> str:
    fake = env.fake
    result = await env.adapter.execute(Originate("client:alice", CUSTOMER, call_id="c2c-0001", agent=AGENT))
    sid = result.provider_call_id
    assert sid is not None
    for st in ("initiated", "ringing", "in-progress"):
        await fake.leg_status(sid, st)
    cust = fake.dial_leg(sid)
    assert cust.to == CUSTOMER
    await fake.leg_status(cust.sid, "initiated")
    await fake.leg_status(cust.sid, "ringing")
    await fake.leg_status(cust.sid, customer_status)
    if customer_status == "in-progress":
        await fake.leg_status(cust.sid, "completed", duration=25)
    await fake.leg_status(sid, "completed", duration=30)
    await env.wait_for(EventKind.ENDED, sid)
    assert {e.call_id for e in env.of_call(sid)} == {"c2c-0001"}
    return sid


async def test_click_to_call_answered() -> None:
    async with twilio_env() as env:
        sid = await _click_to_call(env, "in-progress")
        check("click_to_call_answered", env.of_call(sid))


async def test_busy() -> None:
    async with twilio_env() as env:
        sid = await _click_to_call(env, "busy")
        check("busy", env.of_call(sid))


async def test_hold_unhold() -> None:
    async with twilio_env() as env:
        sid, leg = await _inbound_answered(env)
        await env.adapter.execute(Hold(sid))
        assert ("Hold", "true") in env.fake.last("POST", "/Participants/customer.json")
        await env.fake.conference_event(sid, "participant-hold", sid, "customer")
        await env.adapter.execute(Unhold(sid))
        assert ("Hold", "false") in env.fake.last("POST", "/Participants/customer.json")
        await env.fake.conference_event(sid, "participant-unhold", sid, "customer")
        await _end(env, sid, leg)
        check("hold_unhold", env.of_call(sid))


async def test_blind_transfer() -> None:
    async with twilio_env() as env:
        sid, leg = await _inbound_answered(env)
        await env.adapter.execute(BlindTransfer(sid, "+33198765432"))
        twiml = dict(env.fake.last("POST", f"/Calls/{sid}.json"))["Twiml"]
        assert "<Number>+33198765432</Number>" in twiml
        await env.fake.leg_status(leg, "completed", duration=10)  # the conference ends for alice
        await _end(env, sid)
        check("blind_transfer", env.of_call(sid))


async def test_recording_ready() -> None:
    async with twilio_env() as env:
        sid, leg = await _inbound_answered(env)
        rec = await env.adapter.execute(Record(sid, "start"))
        rsid = rec.detail["recording"]
        await env.fake.recording_status(rsid, "in-progress")  # same fact as the REST answer: deduped
        await env.adapter.execute(Record(sid, "stop"))
        await _end(env, sid, leg)
        await env.fake.recording_status(rsid, "completed", duration=28)
        ready = await env.wait_for(EventKind.RECORDING_READY, sid)
        assert ready.data["url"].endswith(f"/Recordings/{rsid}.wav")
        check("recording_ready", env.of_call(sid))


async def test_supervisor_whisper() -> None:
    async with twilio_env() as env:
        sid, leg = await _inbound_answered(env)
        mon = await env.adapter.execute(Monitor(sid, "client:sam", "whisper"))
        form = dict(env.fake.last("POST", f"/Conferences/{sid}/Participants.json"))
        assert form["Coaching"] == "true" and form["CallSidToCoach"] == leg and form["To"] == "client:sam"
        await env.fake.conference_event(sid, "participant-join", mon.session_id, "monitor:whisper:sam",
                                        Coaching="true")
        await env.adapter.execute(Monitor(sid, "client:sam", "stop", session_id=mon.session_id))
        assert env.fake.calls[mon.session_id].status == "completed"
        await env.fake.conference_event(sid, "participant-leave", mon.session_id, "monitor:whisper:sam")
        await _end(env, sid, leg)
        check("supervisor_whisper", env.of_call(sid))
