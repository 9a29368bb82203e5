"""Twilio adapter over HTTP: signatures, bad bodies, duplicates, REST errors, capabilities."""

from __future__ import annotations

import asyncio

import pytest

from cti.adapters.base import (
    AdapterContext,
    AdapterError,
    Answer,
    AttendedTransfer,
    CallNotFound,
    Connect,
    Hangup,
    Monitor,
    Originate,
    Play,
    Unsupported,
    adapter_class,
)
from cti.adapters.twilio.adapter import TwilioAdapter
from cti.config import ProviderSettings
from cti.model import EventKind
from tests.adapters.twilio.harness import twilio_env
from tests.conformance.scenarios import CUSTOMER, QUEUE_NUMBER

VOICE = {"AccountSid": "AC" + "0" * 32, "CallSid": "CA" + "1" * 32, "CallStatus": "ringing",
         "Direction": "inbound", "From": CUSTOMER, "To": QUEUE_NUMBER, "ApiVersion": "2010-04-01"}


def test_registered_as_twilio() -> None:
    assert adapter_class("twilio") is TwilioAdapter


def test_missing_auth_token_is_named() -> None:
    with pytest.raises(ValueError, match="auth_token"):
        TwilioAdapter(ProviderSettings(name="tw", type="twilio", account_sid="AC1"), AdapterContext())


async def test_valid_signature_is_accepted() -> None:
    async with twilio_env() as env:
        status, twiml = await env.fake.post(env.hook("voice"), VOICE)
        assert status == 200 and "<Enqueue>support</Enqueue>" in twiml
        await env.wait_for(EventKind.QUEUED)


@pytest.mark.parametrize("how", ["bad", "missing", "wrong_url", "wrong_token", "tampered_query"])
async def test_bad_signature_is_403_and_publishes_nothing(how: str) -> None:
    async with twilio_env() as env:
        url = env.hook("voice")
        if how == "bad":
            status, _ = await env.fake.post(url, VOICE, signature="bm90IGEgc2lnbmF0dXJl")
        elif how == "missing":
            status, _ = await env.fake.post(url, VOICE, sign=False)
        elif how == "wrong_url":  # signed for another host: the proxy-in-the-middle case
            sig = env.fake._validator.compute_signature("https://evil.example/webhooks/twilio/tw1/voice", VOICE)
            status, _ = await env.fake.post(url, VOICE, signature=sig)
        elif how == "wrong_token":
            status, _ = await env.fake.post(url, VOICE, token="another-accounts-token")
        else:  # signed for one agent, replayed with another in the query
            signed = env.hook("status") + "?role=agent&parent=CA1&agent=alice"
            sig = env.fake._validator.compute_signature(signed, VOICE)
            status, _ = await env.fake.post(env.hook("status") + "?role=agent&parent=CA1&agent=mallory",
                                            VOICE, signature=sig)
        await env.settle()
        assert status == 403
        assert env.events == []
        assert env.adapter.counters["bad_signature"] == 1


@pytest.mark.parametrize(("kind", "params", "message"), [
    ("voice", {"AccountSid": "AC1", "From": CUSTOMER}, "missing field CallSid"),
    ("status", {"CallSid": "CA1", "CallStatus": "on-fire"}, "unknown CallStatus"),
    ("recording", {"CallSid": "CA1", "RecordingSid": "RE1", "RecordingStatus": "completed"},
     "missing field RecordingUrl"),
    ("conference", {"FriendlyName": "CA1"}, "missing field StatusCallbackEvent"),
])
async def test_malformed_callback_is_400_named_and_counted(kind: str, params: dict, message: str) -> None:
    async with twilio_env() as env:
        status, text = await env.fake.post(env.hook(kind), params)
        await env.settle()
        assert status == 400 and message in text
        assert env.events == []
        assert env.adapter.counters["malformed"] == 1


async def test_non_form_body_is_400() -> None:
    async with twilio_env() as env:
        # a JSON body is not what Twilio sends: rejected before anything is parsed
        async with env.fake._http.post(env.hook("status"), data=b"CallSid",
                                       headers={"X-Twilio-Signature": "x"}) as resp:
            assert resp.status == 400
            assert "not form-encoded" in await resp.text()
        assert env.adapter.counters["malformed"] == 1


async def test_retried_webhooks_are_dropped() -> None:
    async with twilio_env() as env:
        await env.fake.post(env.hook("voice"), VOICE, idempotency="tok-1")
        status, _ = await env.fake.post(env.hook("voice"), VOICE, idempotency="tok-1")
        assert status == 200
        done = {**VOICE, "CallStatus": "completed", "SequenceNumber": "0", "CallDuration": "4"}
        await env.fake.post(env.hook("status"), done, idempotency="tok-2")
        await env.fake.post(env.hook("status"), done, idempotency="")  # no token: CallSid+SequenceNumber
        await env.settle()
        assert [e.kind for e in env.events] == [EventKind.CREATED, EventKind.QUEUED, EventKind.ENDED]
        assert env.adapter.counters["duplicate"] == 2


async def test_rest_rate_limit_is_retried() -> None:
    async with twilio_env() as env:
        env.fake.fail_next = [(429, 20429), (429, 20429)]
        sid, _, _ = await env.fake.inbound(CUSTOMER, QUEUE_NUMBER)
        await env.adapter.execute(Hangup(sid))
        assert env.fake.calls[sid].status == "completed"
        assert env.adapter.counters["rest_retry"] == 2


async def test_rest_rate_limit_exhausted_is_an_adapter_error() -> None:
    async with twilio_env(max_retries=1) as env:
        env.fake.fail_next = [(429, 20429)] * 3
        with pytest.raises(AdapterError, match="429"):
            await env.adapter.execute(Hangup("CA" + "2" * 32))


async def test_unknown_call_is_call_not_found() -> None:
    async with twilio_env() as env:
        with pytest.raises(CallNotFound, match="20404"):
            await env.adapter.execute(Hangup("CA" + "3" * 32))


async def test_wrong_credentials_fail_clearly() -> None:
    async with twilio_env() as env:
        env.fake.auth_token = "rotated"
        with pytest.raises(AdapterError, match=r"401.*20003"):
            await env.adapter.execute(Hangup("CA" + "4" * 32))


@pytest.mark.parametrize("command", [
    Answer("CA1", "alice"), AttendedTransfer("CA1", "+33100000000"),
    Monitor("CA1", "client:sam", "takeover"),
])
async def test_unsupported_commands_say_so(command) -> None:
    async with twilio_env() as env:
        with pytest.raises(Unsupported, match="twilio adapter does not support"):
            await env.adapter.execute(command)
        assert [m for m, _, _ in env.fake.requests if m == "POST"] == []


async def test_ring_all_cancels_the_other_legs_when_one_answers() -> None:
    async with twilio_env() as env:
        sid, _, _ = await env.fake.inbound(CUSTOMER, QUEUE_NUMBER)
        res = await env.adapter.execute(Connect(sid, (("alice", "client:alice"), ("bob", "client:bob"))))
        a, b = res.detail["legs"]
        for leg in (a, b):
            await env.fake.leg_status(leg, "ringing")
        await env.fake.leg_status(b, "in-progress")
        answered = await env.wait_for(EventKind.ANSWERED, sid)
        assert answered.agent == "bob"
        for _ in range(100):
            if env.fake.calls[a].status == "canceled":
                break
            await env.settle()
        assert env.fake.calls[a].status == "canceled"
        assert sorted(e.agent for e in env.of_call(sid) if e.kind is EventKind.RINGING) == ["alice", "bob"]


async def test_ring_all_leg_created_after_another_answered_is_cancelled_and_no_more_are_rung() -> None:
    """Legs are created one REST request at a time: alice may answer before bob's leg exists.
    Bob's leg must not keep ringing, and carol's is not created at all."""
    async with twilio_env() as env:
        sid, _, _ = await env.fake.inbound(CUSTOMER, QUEUE_NUMBER)
        created: list[str] = []

        async def alice_answers_during_the_next_create(leg) -> None:  # type: ignore[no-untyped-def]
            created.append(leg.sid)
            if len(created) == 2:
                await env.fake.leg_status(created[0], "in-progress")
                await env.wait_for(EventKind.ANSWERED, sid)

        env.fake.before_participant_answer = alice_answers_during_the_next_create
        targets = (("alice", "client:alice"), ("bob", "client:bob"), ("carol", "client:carol"))
        res = await env.adapter.execute(Connect(sid, targets))
        a, b = res.detail["legs"]
        assert created == [a, b]  # carol's leg was never created
        for _ in range(100):
            if env.fake.calls[b].status == "canceled":
                break
            await env.settle()
        assert env.fake.calls[b].status == "canceled" and env.fake.calls[a].status == "in-progress"


async def test_resync_closes_calls_that_ended_during_a_gap() -> None:
    async with twilio_env() as env:
        sid, _, _ = await env.fake.inbound(CUSTOMER, QUEUE_NUMBER)
        other, _, _ = await env.fake.inbound("+33600000001", QUEUE_NUMBER)
        env.fake.calls[sid].status = "completed"  # its status callback was lost
        active = await env.adapter.resync()
        assert active == [other]
        ended = await env.wait_for(EventKind.ENDED, sid)
        assert ended.data["cause"] == "caller_hangup"
        assert all(e.kind is not EventKind.ENDED for e in env.of_call(other))


async def _in_progress_calls(env, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    env.fake.max_page_size = 2  # so that n > 2 calls take more than one page
    return [(await env.fake.inbound(f"+3360000000{i}", QUEUE_NUMBER))[0] for i in range(n)]


async def test_resync_retries_a_rate_limited_then_failing_later_page() -> None:
    """Pages after the first are fetched like any REST call: a 429 then an HTML 500 on page 2
    are retried, and no call in progress is missed."""
    async with twilio_env() as env:
        sids = await _in_progress_calls(env, 3)
        before = len(env.fake.requests)
        env.fake.fail(r"^GET /.*/Calls\.json\?.*Page=1", 429)
        env.fake.fail(r"^GET /.*/Calls\.json\?.*Page=1", 500, html=True)
        assert await env.adapter.resync() == sids
        assert env.adapter.counters["rest_retry"] == 2
        pages = [p for m, p, _ in env.fake.requests[before:] if m == "GET" and p.endswith("/Calls.json")]
        assert len(pages) == 4  # page 1, then page 2 three times


async def test_resync_page_that_keeps_failing_is_a_clear_adapter_error() -> None:
    async with twilio_env(max_retries=1) as env:
        await _in_progress_calls(env, 3)
        for _ in range(2):
            env.fake.fail(r"^GET /.*/Calls\.json\?.*Page=1", 502, html=True)
        with pytest.raises(AdapterError, match=r"twilio GET /2010-04-01/Accounts/AC0+/Calls\.json\?.*"
                                               r"failed: HTTP 502 \(text/html answer, not a Twilio error\)$"):
            await env.adapter.resync()


async def test_routes_mount_inside_another_app() -> None:
    from aiohttp import web

    async with twilio_env() as env:
        app = web.Application()
        app.add_routes(env.adapter.routes())
        paths = sorted(r.resource.canonical for r in app.router.routes())
        assert paths == [f"/webhooks/twilio/tw1/{k}" for k in ("conference", "recording", "status", "voice")]


async def test_hold_of_a_click_to_call_says_why_it_cannot() -> None:
    from cti.adapters.base import Hold, Originate

    async with twilio_env() as env:
        res = await env.adapter.execute(Originate("client:alice", CUSTOMER, call_id="c2c-9", agent="alice"))
        with pytest.raises(AdapterError, match="not in a conference"):
            await env.adapter.execute(Hold(res.provider_call_id))


async def test_rest_connection_refused_is_retried_until_twilio_is_back() -> None:
    async with twilio_env(via_proxy=True) as env:
        sid, _, _ = await env.fake.inbound(CUSTOMER, QUEUE_NUMBER)
        env.proxy.refuse(True)
        env.proxy.cut()  # the pooled keep-alive connection goes too
        asyncio.get_running_loop().call_later(0.3, env.proxy.refuse, False)
        await env.adapter.execute(Hangup(sid))
        assert env.fake.calls[sid].status == "completed"
        assert env.adapter.counters["rest_retry"] >= 1


async def test_rest_silent_hang_times_out_with_a_clear_error() -> None:
    async with twilio_env(via_proxy=True, rest_timeout=0.3, max_retries=1) as env:
        env.proxy.blackhole(True)
        with pytest.raises(AdapterError, match=r"twilio POST Calls/CA5+\.json failed"):
            await env.adapter.execute(Hangup("CA" + "5" * 32))


async def test_a_create_whose_answer_is_lost_is_not_repeated() -> None:
    """Originate must not ring the customer twice: a 5xx on create is reported, not retried."""
    async with twilio_env() as env:
        env.fake.fail_next = [(503, 20500)]
        with pytest.raises(AdapterError, match="503"):
            await env.adapter.execute(Originate("client:alice", CUSTOMER, call_id="c2c-x", agent="alice"))
        assert len([p for m, p, _ in env.fake.requests if m == "POST" and p.endswith("/Calls.json")]) == 1


async def test_play_announces_to_the_customer_and_reports_the_end() -> None:
    from tests.conformance.test_twilio import _inbound_answered

    async with twilio_env() as env:
        sid, _ = await _inbound_answered(env)
        await env.adapter.execute(Play(sid, "https://cdn.example.com/prompts/survey.wav"))
        form = dict(env.fake.last("POST", "/Participants/customer.json"))
        assert form == {"AnnounceUrl": "https://cdn.example.com/prompts/survey.wav", "AnnounceMethod": "GET"}
        await env.fake.conference_event(sid, "announcement-end", sid, "customer")
        await env.wait_for(EventKind.PLAYBACK_FINISHED, sid)
        with pytest.raises(AdapterError, match="by URL"):
            await env.adapter.execute(Play(sid, "/var/sounds/local.wav"))


async def test_customer_end_arriving_before_the_agent_answer_still_counts_the_answer() -> None:
    """Twilio does not order callbacks of different calls: the end waits for the agent leg."""
    from cti.calls.state import fold
    from cti.model import Outcome

    async with twilio_env() as env:
        sid, _, _ = await env.fake.inbound(CUSTOMER, QUEUE_NUMBER)
        (leg,) = (await env.adapter.execute(Connect(sid, (("alice", "client:alice"),)))).detail["legs"]
        await env.fake.leg_status(leg, "ringing")
        await env.fake.leg_status(sid, "completed", duration=40)  # delivered early
        await env.fake.leg_status(leg, "in-progress")
        await env.fake.leg_status(leg, "completed", duration=30)
        ended = await env.wait_for(EventKind.ENDED, sid)
        assert ended.data["cause"] == "normal"
        call = fold(env.of_call(sid))
        assert call.outcome is Outcome.ANSWERED and call.agent == "alice"


async def test_caller_leaving_while_the_agent_rings_cancels_the_agent_leg() -> None:
    from tests.conformance.scenarios import check

    async with twilio_env() as env:
        sid, _, _ = await env.fake.inbound(CUSTOMER, QUEUE_NUMBER)
        (leg,) = (await env.adapter.execute(Connect(sid, (("alice", "client:alice"),)))).detail["legs"]
        await env.fake.leg_status(leg, "ringing")
        await env.fake.leg_status(sid, "completed", duration=12)
        for _ in range(100):
            if env.fake.calls[leg].status == "canceled":
                break
            await env.settle()
        assert env.fake.calls[leg].status == "canceled"
        await env.fake.leg_status(leg, "canceled")  # Twilio reports the cancelled leg
        await env.wait_for(EventKind.ENDED, sid)
        check("inbound_not_answered", env.of_call(sid))


async def test_recording_pause_and_resume_update_the_recording() -> None:
    from cti.adapters.base import Record
    from tests.conformance.test_twilio import _inbound_answered

    async with twilio_env() as env:
        sid, _ = await _inbound_answered(env)
        rsid = (await env.adapter.execute(Record(sid, "start"))).detail["recording"]
        for action, status in (("pause", "paused"), ("resume", "in-progress"), ("pause", "paused")):
            await env.adapter.execute(Record(sid, action))
            assert dict(env.fake.last("POST", f"/Recordings/{rsid}.json")) == {"Status": status}
        await env.settle()
        kinds = [e.kind for e in env.of_call(sid) if e.kind.value.startswith("recording")]
        assert kinds == [EventKind.RECORDING_STARTED, EventKind.RECORDING_PAUSED, EventKind.RECORDING_RESUMED,
                         EventKind.RECORDING_PAUSED]


async def test_agent_completed_before_its_in_progress_still_counts_the_answer() -> None:
    """Callbacks of one leg can arrive out of order: `completed` first proves alice answered."""
    async with twilio_env() as env:
        sid, _, _ = await env.fake.inbound(CUSTOMER, QUEUE_NUMBER)
        (leg,) = (await env.adapter.execute(Connect(sid, (("alice", "client:alice"),)))).detail["legs"]
        await env.fake.leg_status(leg, "ringing")
        await env.fake.leg_status(sid, "completed", duration=40)
        await env.fake.leg_status(leg, "completed", duration=30)
        ended = await env.wait_for(EventKind.ENDED, sid)
        assert ended.data["cause"] == "normal"
        answered = await env.wait_for(EventKind.ANSWERED, sid)
        assert answered.agent == "alice" and answered.occurred_at < ended.occurred_at


async def test_signature_covers_the_callback_url_as_sent_with_escaped_query() -> None:
    """Agent ids like e-mail addresses are %-escaped in our callback URLs; Twilio signs them escaped."""
    async with twilio_env() as env:
        sid, _, _ = await env.fake.inbound(CUSTOMER, QUEUE_NUMBER)
        res = await env.adapter.execute(Connect(sid, (("jean.dupont@example.com", "client:jean"),)))
        (leg,) = res.detail["legs"]
        assert "agent=jean.dupont%40example.com" in env.fake.calls[leg].status_callback
        status, _ = await env.fake.leg_status(leg, "ringing")
        assert status == 200
        ringing = await env.wait_for(EventKind.RINGING, sid)
        assert ringing.agent == "jean.dupont@example.com"
        assert env.adapter.counters["bad_signature"] == 0


async def test_retried_voice_webhook_gets_the_same_twiml_again() -> None:
    """Twilio retries a voice webhook whose answer timed out: an empty answer would hang up the caller."""
    async with twilio_env() as env:
        first = await env.fake.post(env.hook("voice"), VOICE, idempotency="tok-v")
        again = await env.fake.post(env.hook("voice"), VOICE, idempotency="tok-v")
        assert first == again == (200, first[1]) and "<Enqueue>support</Enqueue>" in first[1]
        await env.settle()
        assert [e.kind for e in env.events] == [EventKind.CREATED, EventKind.QUEUED]
        assert env.adapter.counters["duplicate"] == 1


async def test_hold_after_a_restart_finds_the_conference_sid() -> None:
    """Participant updates take the ConferenceSid, which a restarted adapter has to ask Twilio for."""
    from cti.adapters.base import Hold
    from tests.conformance.test_twilio import _inbound_answered

    async with twilio_env() as env:
        sid, _ = await _inbound_answered(env)
        env.adapter._calls.clear()  # what a restart forgets
        await env.adapter.execute(Hold(sid))
        conf = env.fake.conference_sids[sid]
        assert dict(env.fake.last("POST", f"/Conferences/{conf}/Participants/customer.json"))["Hold"] == "true"
        with pytest.raises(CallNotFound, match="no conference"):
            await env.adapter.execute(Hold("CA" + "6" * 32))


async def test_unhold_delivered_before_its_hold_in_the_same_second_leaves_the_call_answered() -> None:
    """Conference callbacks come out of order; their SequenceNumber, not arrival, orders them."""
    import email.utils
    from datetime import UTC, datetime, timedelta

    from cti.calls.state import fold
    from cti.clock import ManualClock
    from cti.model import CallState
    from tests.conformance.test_twilio import _inbound_answered

    async with twilio_env() as env:
        sid, _ = await _inbound_answered(env)
        second = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
        clock = ManualClock(start=second + timedelta(milliseconds=100))
        env.adapter._clock = clock  # both arrive inside their stamped second
        stamp = email.utils.format_datetime(second)
        await env.fake.conference_event(sid, "participant-unhold", sid, "customer",
                                        SequenceNumber="11", Timestamp=stamp)
        await clock.advance(0.2)
        await env.fake.conference_event(sid, "participant-hold", sid, "customer",
                                        SequenceNumber="10", Timestamp=stamp)
        await env.settle()
        held = next(e for e in env.of_call(sid) if e.kind is EventKind.HELD)
        resumed = next(e for e in env.of_call(sid) if e.kind is EventKind.RESUMED)
        assert held.occurred_at < resumed.occurred_at
        assert fold(env.of_call(sid)).state is CallState.ANSWERED


async def test_dual_recordings_name_their_first_channel_by_the_recorded_leg() -> None:
    """A dual-channel call recording has the recorded call's own party first: the customer's
    call for an inbound call, the agent's leg for a click-to-call (which calls the agent first)."""
    from cti.adapters.base import Originate, Record
    from tests.conformance.test_twilio import _inbound_answered

    async with twilio_env() as env:
        sid, _ = await _inbound_answered(env)
        rsid = (await env.adapter.execute(Record(sid, "start"))).detail["recording"]
        await env.fake.recording_status(rsid, "completed", duration=30)
        ready = await env.wait_for(EventKind.RECORDING_READY, sid)
        assert ready.data["channels"] == 2 and ready.data["channel_roles"] == ["customer", "agent"]

        out = await env.adapter.execute(Originate("client:alice", CUSTOMER, call_id="c2c-rec", agent="alice"))
        rsid = (await env.adapter.execute(Record(out.provider_call_id, "start"))).detail["recording"]
        await env.fake.recording_status(rsid, "completed", duration=12)
        ready = await env.wait_for(EventKind.RECORDING_READY, out.provider_call_id)
        assert ready.data["channel_roles"] == ["agent", "customer"]
