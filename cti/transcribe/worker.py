"""Bus consumers of the transcription stage.

- `RecordingIngest` (group "recordings" on `streams.EVENTS`): on `recording_ready`,
  fetches the file into `transcribe.storage` (encrypted when a key is set), links it to
  the call (`recordings` row) and enqueues a job on `streams.JOBS_TRANSCRIBE`.
- `TranscriptionWorker` (group "transcribe" on `streams.JOBS_TRANSCRIBE`): transcribes,
  redacts, summarizes, stores (`transcripts`, `activities.summary`) and pushes to the CRM.
  Start more workers to go faster: the consumer group shares jobs among them.

Delivery is at least once, so both are idempotent: the recording id is derived from the
call and the source, the transcript row is keyed by call id, and a transcript row goes
`pending` -> `running` (a lease with a heartbeat: one worker at a time, even when the bus
hands a slow job to a second consumer) -> text stored -> `done` only after the CRM note,
so a retried or duplicated job neither transcribes twice nor adds a second note. A failing job raises:
the bus retries it (we back off first) and dead-letters it after `max_deliveries`; its
error is written on the call (`calls.error`) and the transcript (`transcripts.error`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.bus import streams
from cti.bus.base import Bus, Message
from cti.model import EventKind, make_event_id
from cti.security.crypto import transcript_columns, transcript_content
from cti.store.db import dialect_insert
from cti.store.tables import activities, call_events, calls, recordings, transcripts
from cti.transcribe.asr import ModelError, Recognizer, channel_roles, load_recognizer
from cti.transcribe.pipeline import summarize_for, transcribe_redacted
from cti.transcribe.recording import provider_auth, read_recording, storage_path, store_recording

log = structlog.get_logger(__name__)


class JobError(RuntimeError):
    """A transcription job that cannot succeed as is (bad job, bad audio, gave up)."""


def _engine(db: Any) -> AsyncEngine:
    """Accept `cti.store.db.Database` (has `.engine`) or a bare AsyncEngine."""
    if isinstance(db, AsyncEngine):
        return db  # (AsyncEngine.engine is its *sync* engine)
    return db.engine


def _transcribe_settings(settings: Any) -> Any:
    return getattr(settings, "transcribe", settings)


def _now() -> datetime:
    return datetime.now(UTC)


async def _insert_ignore(conn: Any, table: sa.Table, values: dict[str, Any]) -> bool:
    """INSERT unless the primary key exists (portable SQLite/PostgreSQL). True if inserted."""
    res = await conn.execute(dialect_insert(conn.dialect.name, table).values(**values).on_conflict_do_nothing())
    return bool(res.rowcount)


def backoff_s(deliveries: int, *, base: float, cap: float = 60.0) -> float:
    """Delay before delivery number `deliveries` (1 = first: none), exponential with jitter."""
    if deliveries <= 1 or base <= 0:
        return 0.0
    raw = min(cap, base * 2 ** (deliveries - 2))
    return raw * (0.5 + random.random() / 2)


# --------------------------------------------------------------------------- ingest


class RecordingIngest:
    def __init__(self, bus: Bus, db: Any, settings: Any, *, consumer: str = "ingest", session: Any = None) -> None:
        self.bus = bus
        self._db = db
        self.settings = settings
        self.tsettings = _transcribe_settings(settings)
        self.consumer = consumer
        self._session = session  # aiohttp session for downloads (tests inject one)

    @property
    def engine(self) -> AsyncEngine:
        return _engine(self._db)  # resolved late: a Database may connect after we are built

    async def run(self) -> None:
        await self.bus.consume(streams.EVENTS, "recordings", self.consumer, self.handle)

    async def handle(self, batch: list[Message]) -> None:
        for msg in batch:
            if msg.data.get("kind") != EventKind.RECORDING_READY:
                continue
            await self.ingest(msg.data)

    async def ingest(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """Store the recording of one recording_ready event and enqueue its job. Returns the job."""
        data = event.get("data") or {}
        call_id = event.get("call_id")
        tenant = str(event.get("tenant") or "default")
        source = data.get("path") or data.get("url")
        if not call_id or not source:
            log.warning("recording_ready_without_source", call_id=call_id, event_id=event.get("event_id"))
            return None
        provider = str(event.get("provider") or "")
        recording_id = make_event_id("recording", call_id, data.get("recording") or source)
        channels = _channels_of(data, call_id)
        with structlog.contextvars.bound_contextvars(call_id=call_id):
            async with self.engine.connect() as conn:
                row = (await conn.execute(sa.select(recordings).where(recordings.c.id == recording_id))).first()
            if row is not None and row.path and await asyncio.to_thread(Path(row.path).exists):
                stored_path, encrypted = row.path, bool(row.encrypted)  # redelivery: already stored
            else:
                dest = storage_path(self.tsettings.storage, tenant, call_id, recording_id, str(source))
                auth = provider_auth(self.settings, provider, str(source))
                key = getattr(getattr(self.settings, "security", None), "encryption_key", None)
                try:
                    stored = await store_recording(str(source), dest, key=key, auth=auth, session=self._session)
                except Exception as exc:
                    await _record_error(self.engine, call_id, f"recording fetch failed: {exc}")
                    raise
                stored_path, encrypted = stored.path, stored.encrypted
                paused = data.get("paused") or await self._paused_spans(call_id)
                async with self.engine.begin() as conn:
                    values = {
                        "id": recording_id, "call_id": call_id, "tenant": tenant, "source": _safe_source(source),
                        "path": stored_path, "encrypted": encrypted, "duration_s": data.get("duration_s"),
                        "paused": paused or None, "channels": channels, "created_at": _now(),
                    }
                    if not await _insert_ignore(conn, recordings, values):
                        await conn.execute(
                            recordings.update().where(recordings.c.id == recording_id)
                            .values(path=stored_path, encrypted=encrypted)
                        )
                log.info("recording_stored", recording_id=recording_id, encrypted=encrypted)
            async with self.engine.begin() as conn:
                await _insert_ignore(conn, transcripts, {
                    "call_id": call_id, "tenant": tenant, "status": "pending", "attempts": 0,
                    "created_at": _now(), "updated_at": _now(),
                })
                status = (await conn.execute(sa.select(transcripts.c.status)
                                             .where(transcripts.c.call_id == call_id))).scalar()
            if status == "done":
                log.info("recording_already_transcribed", recording_id=recording_id)
                return None
            job = {"call_id": call_id, "tenant": tenant, "recording_id": recording_id, "path": stored_path,
                   "channels": channels}
            await self.bus.publish(streams.JOBS_TRANSCRIBE, job)
            return job

    async def _paused_spans(self, call_id: str) -> list[list[float]]:
        """[[start, end], ...] seconds into the recording, from recording_* events of the call."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(call_events.c.kind, call_events.c.occurred_at)
                .where(call_events.c.call_id == call_id, call_events.c.kind.in_(
                    ["recording_started", "recording_paused", "recording_resumed", "recording_stopped"]))
                .order_by(call_events.c.occurred_at)
            )).all()
        return paused_spans([(r.kind, r.occurred_at) for r in rows])


def paused_spans(events: list[tuple[str, datetime]]) -> list[list[float]]:
    """Pure: recording_started/paused/resumed/stopped times -> paused spans relative to the start."""
    start: datetime | None = None
    paused_at: float | None = None
    spans: list[list[float]] = []
    for kind, at in sorted(events, key=lambda e: e[1]):
        if kind == "recording_started" and start is None:
            start = at
        if start is None:
            continue
        offset = (at - start).total_seconds()
        if kind == "recording_paused" and paused_at is None:
            paused_at = offset
        elif kind in ("recording_resumed", "recording_stopped") and paused_at is not None:
            spans.append([round(paused_at, 3), round(offset, 3)])
            paused_at = None
    if paused_at is not None:
        spans.append([round(paused_at, 3), 1e9])  # paused until the end
    return spans


def _channels_of(data: dict[str, Any], call_id: str) -> list[str] | None:
    """The recording_ready's `channel_roles` (who is left, right), checked; None = the default.

    A value no one can read is logged and dropped, not fatal: the recording is still stored
    and transcribed (left = agent), which loses less than refusing it."""
    value = data.get("channel_roles")
    if value is None:
        return None
    try:
        return list(channel_roles(value))
    except (ValueError, TypeError) as exc:
        log.warning("recording_channel_roles_ignored", call_id=call_id, error=str(exc))
        return None


def _safe_source(source: Any) -> str:
    s = str(source)
    return s.split("?")[0]  # query strings may carry signed tokens


async def _record_error(engine: AsyncEngine, call_id: str, error: str) -> None:
    try:
        async with engine.begin() as conn:
            await conn.execute(calls.update().where(calls.c.call_id == call_id).values(error=error[:2000]))
    except Exception as exc:
        log.warning("call_error_not_recorded", call_id=call_id, error=str(exc))


# --------------------------------------------------------------------------- worker


class TranscriptionWorker:
    def __init__(
        self,
        bus: Bus,
        db: Any,
        settings: Any,
        *,
        consumer: str,
        crm: Any = None,
        metrics: Any = None,
        recognizer: Recognizer | None = None,
        retry_base_s: float = 2.0,
        cpu_threads: int | None = None,
        lease_s: float = 60.0,
    ) -> None:
        self.bus = bus
        self._db = db
        self.settings = settings
        self.tsettings = _transcribe_settings(settings)
        self.consumer = consumer
        self.crm = crm
        self.metrics = metrics
        self.recognizer = recognizer  # loaded once, in run() (or injected, shared by tests)
        self.retry_base_s = retry_base_s
        self.cpu_threads = cpu_threads
        self.lease_s = lease_s
        self.max_attempts = max(1, int(getattr(self.tsettings, "max_attempts", 3)))
        self._key = getattr(getattr(settings, "security", None), "encryption_key", None)

    @property
    def engine(self) -> AsyncEngine:
        return _engine(self._db)

    async def load(self) -> Recognizer:
        """Load the model once (raises ModelError naming what to install)."""
        if self.recognizer is None:
            self.recognizer = await asyncio.to_thread(load_recognizer, self.tsettings, cpu_threads=self.cpu_threads)
        return self.recognizer

    async def run(self) -> None:
        try:
            await self.load()
        except ModelError as exc:
            log.error("transcription_model_unavailable", error=str(exc))
            raise
        log.info("transcription_worker_started", consumer=self.consumer, model=self.recognizer.name)  # type: ignore[union-attr]
        await self.bus.consume(streams.JOBS_TRANSCRIBE, "transcribe", self.consumer, self.handle)

    async def handle(self, batch: list[Message]) -> None:
        for msg in batch:
            delay = backoff_s(msg.deliveries, base=self.retry_base_s)
            if delay:
                await asyncio.sleep(delay)
            await self.process(msg.data)

    def _count(self, result: str) -> None:
        if self.metrics is not None and hasattr(self.metrics, "jobs"):
            self.metrics.jobs.labels("transcribe", result).inc()

    async def process(self, job: dict[str, Any]) -> str:
        """Run one job; returns 'done' or 'skipped' (already done). Raises on failure."""
        call_id = job.get("call_id")
        if not call_id or not isinstance(call_id, str):
            self._count("invalid")
            raise JobError(f"transcription job without call_id: {sorted(job)}")
        with structlog.contextvars.bound_contextvars(call_id=call_id):
            try:
                return await self._process(call_id, job)
            except Exception as exc:
                error = f"transcription failed: {exc}"
                log.warning("transcription_failed", error=error)
                await self._fail(call_id, str(job.get("tenant") or "default"), error)
                self._count("failed")
                raise

    async def _process(self, call_id: str, job: dict[str, Any]) -> str:
        tenant = str(job.get("tenant") or "default")
        async with self.engine.begin() as conn:
            await _insert_ignore(conn, transcripts, {
                "call_id": call_id, "tenant": tenant, "status": "pending", "attempts": 0,
                "created_at": _now(), "updated_at": _now(),
            })
            row = (await conn.execute(sa.select(transcripts).where(transcripts.c.call_id == call_id))).first()
            assert row is not None
            if row.status == "failed" and row.attempts >= self.max_attempts:
                raise JobError(f"gave up after {row.attempts} attempts: {row.error}")
        row = await self._acquire(call_id)
        if row is None:
            self._count("skipped")
            log.info("transcription_skipped_done")
            return "skipped"
        heartbeat = asyncio.create_task(self._heartbeat(call_id))
        try:
            if row.text is not None or row.text_encrypted is not None:
                # transcribed and stored by an earlier attempt; only the CRM push is left
                text, segments = transcript_content(self._key, row)
                summary = row.summary
            else:
                text, segments, summary = await self._transcribe(call_id, tenant, job)
            if self.crm is not None and hasattr(self.crm, "log_transcript"):
                await self.crm.log_transcript(call_id, text, summary)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        async with self.engine.begin() as conn:
            await conn.execute(transcripts.update().where(transcripts.c.call_id == call_id)
                               .values(status="done", error=None, updated_at=_now()))
            # an error an earlier attempt left on the call is no longer true
            await conn.execute(calls.update().where(
                calls.c.call_id == call_id,
                sa.or_(calls.c.error.like("transcription failed%"), calls.c.error.like("recording fetch failed%")),
            ).values(error=None))
        self._count("done")
        log.info("transcription_done", segments=len(segments or []))
        return "done"

    async def _acquire(self, call_id: str) -> Any | None:
        """Take the job's lease (status 'running'); None once another worker has finished it.

        A job can be delivered to two workers at once (the bus hands an entry idle longer
        than claim_idle_ms to another consumer, and a long recording takes longer than
        that). Only the lease holder transcribes and writes the CRM note; the other waits
        for it to finish, or takes over once its heartbeat stops (it crashed).
        """
        while True:
            now = _now()
            async with self.engine.begin() as conn:
                res = await conn.execute(
                    transcripts.update()
                    .where(
                        transcripts.c.call_id == call_id,
                        transcripts.c.status != "done",
                        sa.or_(transcripts.c.status != "running",
                               transcripts.c.updated_at < now - timedelta(seconds=self.lease_s)),
                    )
                    .values(status="running", attempts=transcripts.c.attempts + 1, updated_at=now)
                )
                row = (await conn.execute(sa.select(transcripts).where(transcripts.c.call_id == call_id))).first()
            if res.rowcount == 1:
                return row
            if row is None or row.status == "done":
                return None
            log.info("transcription_busy_elsewhere")
            await asyncio.sleep(self.lease_s / 6)

    async def _heartbeat(self, call_id: str) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            async with self.engine.begin() as conn:
                await conn.execute(transcripts.update().where(
                    transcripts.c.call_id == call_id, transcripts.c.status == "running").values(updated_at=_now()))

    async def _transcribe(self, call_id: str, tenant: str, job: dict[str, Any]) -> tuple[str, list, dict | None]:
        recognizer = await self.load()
        path, encrypted, paused, channels = await self._recording(call_id, job)
        source = read_recording(path, encrypted=encrypted, key=self._key)
        t0 = time.perf_counter()
        result = await asyncio.to_thread(
            transcribe_redacted, recognizer, source, paused=paused,
            redact_emails=bool(getattr(self.tsettings, "redact_emails", False)),
            diarize=bool(getattr(self.tsettings, "diarize_mono", False)),
            speakers=channels,  # checked by transcribe_audio (None: left = agent)
        )
        summary_obj = await summarize_for(self.tsettings, result.segments, fallback=True)
        summary = summary_obj.to_dict() if summary_obj is not None else None
        segments = [s.to_dict() for s in result.segments]
        text = result.text
        elapsed = time.perf_counter() - t0
        async with self.engine.begin() as conn:
            await conn.execute(transcripts.update().where(transcripts.c.call_id == call_id).values(
                error=None, model=result.transcript.model,
                language=result.transcript.language, summary=summary,
                **transcript_columns(self._key, text, segments),  # sealed when a key is configured
                audio_s=round(result.transcript.audio_s, 3), processing_s=round(elapsed, 3), updated_at=_now(),
            ))
            if summary is not None:
                await conn.execute(activities.update().where(activities.c.call_id == call_id)
                                   .values(summary=summary, updated_at=_now()))
        if result.redactions:
            log.info("transcript_redacted", kinds=sorted(set(result.redactions)))
        return text, segments, summary

    async def _recording(
        self, call_id: str, job: dict[str, Any]
    ) -> tuple[str, bool, list[list[float]] | None, list[str] | None]:
        rec_id = job.get("recording_id")
        async with self.engine.connect() as conn:
            q = sa.select(recordings).where(recordings.c.call_id == call_id)
            if rec_id:
                q = q.where(recordings.c.id == rec_id)
            row = (await conn.execute(q.order_by(recordings.c.created_at.desc()))).first()
        if row is not None and row.path:
            return row.path, bool(row.encrypted), row.paused, row.channels
        path = job.get("path")
        if not path:
            raise JobError("no recording for this call (no recordings row, no path in the job)")
        return str(path), str(path).endswith(".enc"), job.get("paused"), job.get("channels")

    async def _fail(self, call_id: str, tenant: str, error: str) -> None:
        try:
            async with self.engine.begin() as conn:
                row = (await conn.execute(sa.select(transcripts.c.attempts)
                                          .where(transcripts.c.call_id == call_id))).first()
                attempts = row.attempts if row else 0
                status = "failed" if attempts >= self.max_attempts else "pending"
                if row is None:
                    await _insert_ignore(conn, transcripts, {
                        "call_id": call_id, "tenant": tenant, "status": status, "attempts": 1,
                        "error": error[:2000], "created_at": _now(), "updated_at": _now(),
                    })
                else:
                    await conn.execute(transcripts.update().where(transcripts.c.call_id == call_id)
                                       .values(status=status, error=error[:2000], updated_at=_now()))
        except Exception as exc:
            log.warning("transcript_error_not_recorded", error=str(exc))
        await _record_error(self.engine, call_id, error)
