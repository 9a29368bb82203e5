"""Recording -> bus job -> transcript, summary, activity, CRM note; retries and dead letters."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from cti.bus import open_bus, streams
from cti.config import Settings
from cti.model import make_call_id
from cti.store.tables import activities, calls, recordings, transcripts
from cti.transcribe.worker import RecordingIngest, TranscriptionWorker, paused_spans
from tests.transcribe.conftest import DATA, clip

BUS_OPTS: dict[str, Any] = {"max_deliveries": 3, "claim_idle_ms": 60_000, "batch": 8, "block_ms": 50}


class FakeCrm:
    """Counts notes: a CRM connector only needs async log_transcript()."""

    def __init__(self) -> None:
        self.notes: list[tuple[str, str, dict | None]] = []

    async def log_transcript(self, call_id: str, text: str, summary: dict | None) -> str:
        self.notes.append((call_id, text, summary))
        return f"note-{len(self.notes)}"


async def until(cond: Callable[[], Any], within_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not await cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(*coros) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


def settings_for(tmp_path: Path, **security: Any) -> Settings:
    return Settings.model_validate({
        "transcribe": {"enabled": True, "storage": str(tmp_path / "store"), "max_attempts": 2},
        "security": security,
    })


async def add_call(engine, call_id: str) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(calls.insert().values(
            call_id=call_id, tenant="default", provider="sim", provider_call_id=call_id[:8], direction="inbound",
            state="ended", created_at=now))
        await conn.execute(activities.insert().values(
            call_id=call_id, tenant="default", subject="Inbound call", direction="inbound", created_at=now,
            updated_at=now))


def ready_event(call_id: str, path: str, rec: str = "rec-1") -> dict[str, Any]:
    return {"event_id": f"evt-{call_id}-{rec}", "provider": "sim", "provider_call_id": call_id[:8],
            "call_id": call_id, "kind": "recording_ready", "occurred_at": datetime.now(UTC).isoformat(),
            "tenant": "default", "data": {"recording": rec, "path": path}}


async def row(engine, table: sa.Table, call_id: str) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(sa.select(table).where(table.c.call_id == call_id))).first()


async def test_recording_ready_ends_in_history_encrypted_and_idempotent(recognizer, engine, tmp_path) -> None:
    from cryptography.fernet import Fernet

    settings = settings_for(tmp_path, encryption_key=Fernet.generate_key().decode())
    wav = clip(DATA / "c02_delivery_delay.stereo.wav", tmp_path / "in.wav", 8.5, 13.3, subtype="ULAW")
    call_id = make_call_id("default", "sim", "call-1")
    await add_call(engine, call_id)
    bus = open_bus("memory://", **BUS_OPTS)
    crm = FakeCrm()
    ingest = RecordingIngest(bus, engine, settings)
    worker = TranscriptionWorker(bus, engine, settings, consumer="w1", crm=crm, recognizer=recognizer,
                                 retry_base_s=0.01)
    await bus.publish(streams.EVENTS, {"kind": "answered", "call_id": call_id, "data": {}})  # ignored
    await bus.publish(streams.EVENTS, ready_event(call_id, str(wav)))

    async def done() -> bool:
        r = await row(engine, transcripts, call_id)
        return r is not None and r.status == "done"

    async with running(ingest.run(), worker.run()):
        await until(done)
        # the same event redelivered and the same job again: nothing new
        await bus.publish(streams.EVENTS, ready_event(call_id, str(wav)))
        await until(lambda: _lag_zero(bus, streams.EVENTS, "recordings"))
        await until(lambda: _lag_zero(bus, streams.JOBS_TRANSCRIBE, "transcribe"))

    rec = await row(engine, recordings, call_id)
    assert rec.encrypted and rec.path.endswith(".enc")
    assert not Path(rec.path).read_bytes().startswith(b"RIFF")  # noqa: ASYNC240 - encrypted at rest
    assert Path(rec.path).is_relative_to(tmp_path / "store")
    t = await row(engine, transcripts, call_id)
    from cti.security.crypto import transcript_content

    assert t.text is None and t.segments is None and t.text_encrypted  # transcripts sealed at rest too
    text, segments = transcript_content(settings.security.encryption_key, t)
    assert "58213" in text.replace("-", "").replace(" ", "")
    assert {s["speaker"] for s in segments} == {"agent", "customer"}
    assert t.summary["disposition"] in ("resolved", "follow_up", "escalated", "sale", "no_sale", "cancelled")
    assert t.attempts == 1 and t.error is None
    act = await row(engine, activities, call_id)
    assert act.summary == t.summary
    assert len(crm.notes) == 1 and crm.notes[0][0] == call_id
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(transcripts))).scalar() == 1
        assert (await conn.execute(sa.select(sa.func.count()).select_from(recordings))).scalar() == 1

    # a job processed twice (at-least-once) writes one transcript and one note
    assert await worker.process({"call_id": call_id, "tenant": "default"}) == "skipped"
    assert len(crm.notes) == 1


async def _lag_zero(bus, stream: str, group: str) -> bool:
    return await bus.lag(stream, group) == 0


@pytest.mark.parametrize("backend", ["memory+sqlite", "redis+postgres"])
async def test_corrupt_recording_fails_clearly_dead_letters_and_worker_goes_on(
    backend: str, recognizer, engine, tmp_path, request
) -> None:
    settings = settings_for(tmp_path)
    url = "memory://"
    if backend == "redis+postgres":
        from sqlalchemy.ext.asyncio import create_async_engine

        from cti.store import tables

        url = request.getfixturevalue("redis_url")
        engine = create_async_engine(request.getfixturevalue("pg_url"))
        async with engine.begin() as conn:
            await conn.run_sync(tables.metadata.create_all)
    bus = open_bus(url, **BUS_OPTS)
    await bus.start()
    crm = FakeCrm()
    worker = TranscriptionWorker(bus, engine, settings, consumer="w1", crm=crm, recognizer=recognizer,
                                 retry_base_s=0.01)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEfmt garbage" * 20)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    good = clip(DATA / "c01_billing_dispute.stereo.wav", tmp_path / "good.wav", 13.0, 16.0)
    ids = {name: make_call_id("default", "sim", name) for name in ("bad", "empty", "good")}
    for cid in ids.values():
        await add_call(engine, cid)
    await bus.publish(streams.JOBS_TRANSCRIBE, {"call_id": ids["bad"], "tenant": "default", "path": str(bad)})
    await bus.publish(streams.JOBS_TRANSCRIBE, {"call_id": ids["empty"], "tenant": "default", "path": str(empty)})
    await bus.publish(streams.JOBS_TRANSCRIBE, {"tenant": "default"})  # no call id at all
    await bus.publish(streams.JOBS_TRANSCRIBE, {"call_id": ids["good"], "tenant": "default", "path": str(good)})
    try:
        async def finished() -> bool:
            r = await row(engine, transcripts, ids["good"])
            return r is not None and r.status == "done" and len(await bus.dead_letters(streams.JOBS_TRANSCRIBE)) == 3

        async with running(worker.run()):
            await until(finished)
        dead = await bus.dead_letters(streams.JOBS_TRANSCRIBE)
        assert {d.data["data"].get("call_id") for d in dead} == {ids["bad"], ids["empty"], None}
        bad_t = await row(engine, transcripts, ids["bad"])
        assert bad_t.status == "failed" and "not a readable audio file" in bad_t.error
        assert "bad.wav" in (await row(engine, calls, ids["bad"])).error
        assert "empty file" in (await row(engine, transcripts, ids["empty"])).error
        assert "empty file" in (await row(engine, calls, ids["empty"])).error
        assert [n[0] for n in crm.notes] == [ids["good"]]
    finally:
        await bus.close()
        if backend == "redis+postgres":
            await engine.dispose()


async def test_crm_failure_retries_only_the_push(recognizer, engine, tmp_path) -> None:
    """Transcribed once; the CRM push is retried and then the row is done, one note."""

    class FlakyCrm(FakeCrm):
        async def log_transcript(self, call_id: str, text: str, summary: dict | None) -> str:
            if not self.notes and not getattr(self, "failed", False):
                self.failed = True
                raise ConnectionError("CRM down")
            return await super().log_transcript(call_id, text, summary)

    settings = settings_for(tmp_path)
    wav = clip(DATA / "c01_billing_dispute.stereo.wav", tmp_path / "c.wav", 13.0, 16.0)
    call_id = make_call_id("default", "sim", "flaky")
    await add_call(engine, call_id)
    crm = FlakyCrm()
    calls_made = []

    class CountingRecognizer:
        name, language = recognizer.name, recognizer.language

        def words(self, audio, *, speaker):
            calls_made.append(speaker)
            return recognizer.words(audio, speaker=speaker)

    worker = TranscriptionWorker(open_bus("memory://"), engine, settings, consumer="w", crm=crm,
                                 recognizer=CountingRecognizer())
    job = {"call_id": call_id, "tenant": "default", "path": str(wav)}
    with pytest.raises(ConnectionError):
        await worker.process(job)
    t = await row(engine, transcripts, call_id)
    assert t.status == "pending" and t.text and "CRM down" in t.error
    assert "CRM down" in (await row(engine, calls, call_id)).error
    assert await worker.process(job) == "done"
    assert (await row(engine, calls, call_id)).error is None
    assert len(calls_made) == 2  # two channels, transcribed once
    assert len(crm.notes) == 1


async def test_same_job_on_two_workers_at_once_transcribes_once_and_notes_once(recognizer, engine, tmp_path) -> None:
    """The bus may hand a slow job to a second consumer: the lease keeps it to one worker."""

    class SlowCrm(FakeCrm):
        async def log_transcript(self, call_id: str, text: str, summary: dict | None) -> str:
            await asyncio.sleep(0.6)
            return await super().log_transcript(call_id, text, summary)

    asr_calls: list[str] = []

    class CountingRecognizer:
        name, language = recognizer.name, recognizer.language

        def words(self, audio, *, speaker):
            asr_calls.append(speaker)
            return recognizer.words(audio, speaker=speaker)

    settings = settings_for(tmp_path)
    wav = clip(DATA / "c05_sales_quote_followup.stereo.wav", tmp_path / "c.wav", 23.0, 26.2)
    call_id = make_call_id("default", "sim", "twice")
    await add_call(engine, call_id)
    crm = SlowCrm()
    bus = open_bus("memory://")
    w1, w2 = (TranscriptionWorker(bus, engine, settings, consumer=name, crm=crm, recognizer=CountingRecognizer(),
                                  lease_s=3.0) for name in ("w1", "w2"))
    job = {"call_id": call_id, "tenant": "default", "path": str(wav)}
    results = await asyncio.gather(w1.process(job), w2.process(job))
    assert sorted(results) == ["done", "skipped"]
    assert len(crm.notes) == 1
    assert len(asr_calls) == 2  # one transcription: two channels
    assert (await row(engine, transcripts, call_id)).status == "done"


def test_paused_spans_from_recording_events() -> None:
    t0 = datetime(2026, 1, 1, 10, 0, 0, tzinfo=UTC)

    def at(s: float) -> datetime:
        return t0.replace(second=int(s), microsecond=int((s % 1) * 1e6))

    events = [("recording_paused", at(12)), ("recording_started", at(2)), ("recording_resumed", at(20.5)),
              ("recording_paused", at(30)), ("recording_stopped", at(35))]
    assert paused_spans(events) == [[10.0, 18.5], [28.0, 33.0]]
    assert paused_spans([("recording_started", at(1)), ("recording_paused", at(5))]) == [[4.0, 1e9]]
    assert paused_spans([]) == []


async def test_channel_roles_of_the_recording_name_the_speakers(recognizer, engine, tmp_path) -> None:
    """A provider that records the customer on the left (FreeSWITCH RECORD_STEREO, Twilio dual
    on an inbound call) says so in recording_ready; the transcript's speakers follow it."""
    import soundfile as sf

    data, sr = sf.read(str(DATA / "c02_delivery_delay.stereo.wav"), always_2d=True)
    part = data[int(8.5 * sr): int(13.3 * sr)]
    swapped = tmp_path / "customer-left.wav"
    sf.write(str(swapped), part[:, ::-1], sr, subtype="ULAW")  # left = customer, right = agent
    settings = settings_for(tmp_path)
    call_id = make_call_id("default", "sim", "call-roles")
    await add_call(engine, call_id)
    bus = open_bus("memory://", **BUS_OPTS)
    ingest = RecordingIngest(bus, engine, settings)
    worker = TranscriptionWorker(bus, engine, settings, consumer="w1", crm=FakeCrm(), recognizer=recognizer,
                                 retry_base_s=0.01)
    event = ready_event(call_id, str(swapped))
    event["data"]["channel_roles"] = ["customer", "agent"]
    await bus.publish(streams.EVENTS, event)

    async def done() -> bool:
        r = await row(engine, transcripts, call_id)
        return r is not None and r.status == "done"

    async with running(ingest.run(), worker.run()):
        await until(done)
    assert (await row(engine, recordings, call_id)).channels == ["customer", "agent"]
    segments = (await row(engine, transcripts, call_id)).segments
    by_speaker = {s["speaker"]: s["text"] for s in segments}
    assert "order number" in by_speaker["agent"].lower()  # "What's the order number?" is the agent's
    assert "58213" in by_speaker["customer"].replace("-", "").replace(" ", "")


async def test_unreadable_channel_roles_are_logged_and_the_recording_still_transcribed(engine, tmp_path) -> None:
    from structlog.testing import capture_logs

    settings = settings_for(tmp_path)
    wav = clip(DATA / "c01_billing_dispute.stereo.wav", tmp_path / "c.wav", 13.0, 16.0)
    call_id = make_call_id("default", "sim", "call-bad-roles")
    await add_call(engine, call_id)
    bus = open_bus("memory://", **BUS_OPTS)
    ingest = RecordingIngest(bus, engine, settings)
    event = ready_event(call_id, str(wav))
    event["data"]["channel_roles"] = ["caller", "agent"]
    with capture_logs() as logs:
        job = await ingest.ingest(event)
    assert job is not None and job["channels"] is None
    assert (await row(engine, recordings, call_id)).channels is None
    (warning,) = [e for e in logs if e["event"] == "recording_channel_roles_ignored"]
    assert "caller" in warning["error"]
