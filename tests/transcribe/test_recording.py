"""Recording policy, consent, fetch (Twilio-style basic auth), encryption at rest."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from aiohttp import web

from cti.config import QueueSettings, Settings
from cti.transcribe.audio import load_audio
from cti.transcribe.recording import (
    RecordingError,
    announce_at,
    consent_announcement,
    provider_auth,
    read_recording,
    recording_policy,
    store_recording,
)
from tests.transcribe.conftest import DATA

SID, TOKEN = "AC0123456789abcdef0123456789abcdef", "secret-token"


def test_policy_per_queue_and_direction() -> None:
    assert recording_policy(QueueSettings(name="sales", recording="always"), "inbound") == "always"
    assert recording_policy(QueueSettings(name="support"), "outbound") == "never"
    split = QueueSettings(name="mixed", recording="inbound:always, outbound:on_demand")
    assert recording_policy(split, "inbound") == "always"
    assert recording_policy(split, "outbound") == "on_demand"
    assert recording_policy(QueueSettings(name="in", recording="inbound:always"), "outbound") == "never"
    assert recording_policy(None, "inbound") == "never"
    assert recording_policy(None, "inbound", default="on_demand") == "on_demand"
    with pytest.raises(ValueError, match="sometimes"):
        recording_policy(QueueSettings(name="q", recording="sometimes"), "inbound")
    with pytest.raises(ValueError, match="sideways"):
        recording_policy(QueueSettings(name="q", recording="sideways:always"), "inbound")


def test_consent_prompt_only_for_recorded_calls() -> None:
    q = QueueSettings(name="sales", recording="always", consent_media="sound:recorded-call")
    assert consent_announcement(q, "always") == "sound:recorded-call"
    assert consent_announcement(q, "never") is None
    assert consent_announcement(QueueSettings(name="x", recording="always"), "always") is None
    assert (announce_at("always"), announce_at("on_demand"), announce_at("never")) == ("answer", "record_start", None)


def test_provider_credentials_only_for_the_providers_own_host() -> None:
    s = Settings.model_validate({"providers": [
        {"name": "tw", "type": "twilio", "account_sid": SID, "auth_token": TOKEN, "api_url": "http://127.0.0.1:9"},
        {"name": "pbx", "type": "asterisk", "url": "http://pbx.local:8088", "username": "u", "password": "p",
         "app": "cti"},
    ]})
    assert provider_auth(s, "tw", "https://api.twilio.com/2010-04-01/Accounts/AC/Recordings/RE.wav") == (SID, TOKEN)
    assert provider_auth(s, "tw", "http://127.0.0.1:9/rec.wav") == (SID, TOKEN)
    assert provider_auth(s, "tw", "https://evil.example/rec.wav") is None
    assert provider_auth(s, "pbx", "http://pbx.local:8088/ari/recordings/stored/x/file") == ("u", "p")
    assert provider_auth(s, "pbx", "http://other:8088/x") is None
    assert provider_auth(s, "nobody", "http://pbx.local:8088/x") is None


@pytest.fixture
async def fake_twilio(aiohttp_server=None):
    """Twilio's recording media endpoint: basic auth AccountSid:AuthToken, WAV body."""
    body = (DATA / "c06_appointment_booking.mono.wav").read_bytes()
    seen: list[str] = []

    async def media(request: web.Request) -> web.Response:
        seen.append(request.path)
        expected = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401, text="auth required")
        if request.match_info["rid"] != "RE1":
            return web.Response(status=404)
        return web.Response(body=body, content_type="audio/x-wav")

    app = web.Application()
    app.router.add_get("/2010-04-01/Accounts/{sid}/Recordings/{rid}.wav", media)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/2010-04-01/Accounts/{SID}/Recordings", body, seen
    finally:
        await runner.cleanup()


async def test_http_recording_is_fetched_with_basic_auth(fake_twilio, tmp_path: Path) -> None:
    base, body, _seen = fake_twilio
    stored = await store_recording(f"{base}/RE1.wav", tmp_path / "a" / "r.wav", auth=(SID, TOKEN))
    assert Path(stored.path).read_bytes() == body and not stored.encrypted  # noqa: ASYNC240
    with pytest.raises(RecordingError, match="HTTP 401"):
        await store_recording(f"{base}/RE1.wav", tmp_path / "b.wav", auth=(SID, "wrong"))
    with pytest.raises(RecordingError, match="HTTP 404"):
        await store_recording(f"{base}/RE2.wav", tmp_path / "c.wav", auth=(SID, TOKEN))
    assert not (tmp_path / "b.wav").exists() and not (tmp_path / "c.wav").exists()


async def test_encrypted_recording_is_unreadable_without_the_key(tmp_path: Path) -> None:
    src = DATA / "c06_appointment_booking.mono.wav"
    stored = await store_recording(str(src), tmp_path / "r.wav", key="a passphrase, not a Fernet key")
    assert stored.encrypted and stored.path.endswith(".wav.enc")
    assert [p.name for p in tmp_path.iterdir()] == ["r.wav.enc"]  # noqa: ASYNC240 - no clear copy left
    data = read_recording(stored.path, encrypted=True, key="a passphrase, not a Fernet key")
    assert data == src.read_bytes()
    assert load_audio(data).shape[0] == 1
    with pytest.raises(RecordingError, match="cannot decrypt"):
        read_recording(stored.path, encrypted=True, key="another key")
    with pytest.raises(RecordingError, match="encryption_key is not set"):
        read_recording(stored.path, encrypted=True, key=None)


async def test_missing_local_recording_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="no such file"):
        await store_recording(str(tmp_path / "nope.wav"), tmp_path / "x.wav")


async def test_twilio_recording_ready_is_fetched_stored_linked_and_queued(fake_twilio, engine, tmp_path) -> None:
    import sqlalchemy as sa

    from cti.bus import open_bus, streams
    from cti.store.tables import recordings, transcripts
    from cti.transcribe.worker import RecordingIngest

    base, body, seen = fake_twilio
    api = base.split("/2010-04-01")[0]
    settings = Settings.model_validate({
        "providers": [{"name": "tw", "type": "twilio", "account_sid": SID, "auth_token": TOKEN, "api_url": api}],
        "transcribe": {"enabled": True, "storage": str(tmp_path / "rec")},
    })
    bus = open_bus("memory://")
    ingest = RecordingIngest(bus, engine, settings)
    event = {"event_id": "e1", "provider": "tw", "provider_call_id": "CA1", "call_id": "call-tw", "tenant": "acme",
             "kind": "recording_ready", "occurred_at": "2026-01-01T10:00:00+00:00",
             "data": {"recording": "RE1", "url": f"{base}/RE1.wav", "duration_s": 40, "channels": 1}}
    job = await ingest.ingest(event)
    assert job is not None and job["call_id"] == "call-tw"
    assert Path(job["path"]).read_bytes() == body  # noqa: ASYNC240
    assert Path(job["path"]).is_relative_to(tmp_path / "rec" / "acme" / "call-tw")
    async with engine.connect() as conn:
        rec = (await conn.execute(sa.select(recordings))).one()
        tr = (await conn.execute(sa.select(transcripts))).one()
    assert rec.call_id == "call-tw" and rec.source == f"{base}/RE1.wav" and rec.duration_s == 40
    assert tr.status == "pending"
    queued = await bus.dead_letters(streams.JOBS_TRANSCRIBE)  # nothing dead
    assert queued == []
    # redelivered event: no second download, same recording row, job queued again (idempotent downstream)
    await ingest.ingest(event)
    assert len(seen) == 1
    assert await bus.lag(streams.JOBS_TRANSCRIBE, "transcribe") == 2
