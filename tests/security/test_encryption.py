"""Recordings and transcripts are encrypted at rest with the configured key, and read back clear."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import create_async_engine

from cti.bus import open_bus
from cti.config import ConfigError, Settings, load_settings
from cti.model import make_call_id
from cti.security.crypto import (
    DecryptError,
    EncryptionKeyError,
    transcript_columns,
    transcript_content,
    validate_key,
)
from cti.store import tables as t
from cti.transcribe.worker import RecordingIngest, TranscriptionWorker
from tests.security.conftest import app_client, live_settings
from tests.transcribe.conftest import DATA, clip

KEY = Fernet.generate_key().decode()


def test_a_short_key_stops_start_up_naming_the_setting_not_the_value() -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(None, {"CTI_SECURITY__ENCRYPTION_KEY_ENV": "CTI_KEY", "CTI_KEY": "hunter2"})
    assert "encryption_key" in str(err.value) and "hunter2" not in str(err.value)
    with pytest.raises(EncryptionKeyError, match="empty"):
        validate_key("   ")
    assert validate_key(KEY) == KEY and validate_key("a passphrase of 16+ chars") and validate_key(None) is None


def test_transcript_columns_are_sealed_and_need_the_right_key() -> None:
    segs = [{"start": 0.0, "end": 1.0, "speaker": "agent", "text": "parcel 58213 is late"}]
    cols = transcript_columns(KEY, "parcel 58213 is late", segs)
    assert cols["text"] is None and cols["segments"] is None and b"58213" not in cols["text_encrypted"]
    row = type("Row", (), cols)()
    assert transcript_content(KEY, row) == ("parcel 58213 is late", segs)
    with pytest.raises(DecryptError, match="encryption_key"):
        transcript_content(Fernet.generate_key().decode(), row)
    with pytest.raises(DecryptError, match="not set"):
        transcript_content(None, row)
    # without a key nothing changes: clear columns, as before
    assert transcript_columns(None, "x", segs) == {"text": "x", "segments": segs, "text_encrypted": None}


async def transcribe_call(engine: Any, settings: Settings, recognizer: Any, tmp: Path, agent: str = "alice") -> str:
    """A finished call with a recording, ingested and transcribed by the real worker."""
    tenant = settings.site.tenant
    call_id = make_call_id(tenant, "sim", f"enc-{tmp.name}")
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(t.calls.insert().values(
            call_id=call_id, tenant=tenant, provider="sim", provider_call_id=call_id[:12], direction="inbound",
            state="ended", agent=agent, from_number="+33612345678", created_at=now))
    wav = clip(DATA / "c02_delivery_delay.stereo.wav", tmp / "in.wav", 8.5, 13.3)
    bus = open_bus("memory://")
    event = {"event_id": f"evt-{call_id}", "provider": "sim", "provider_call_id": call_id[:12], "call_id": call_id,
             "kind": "recording_ready", "occurred_at": now.isoformat(), "tenant": tenant,
             "data": {"recording": "r1", "path": str(wav)}}
    job = await RecordingIngest(bus, engine, settings).ingest(event)
    assert job is not None
    worker = TranscriptionWorker(bus, engine, settings, consumer="w", recognizer=recognizer, retry_base_s=0)
    assert await worker.process(job) == "done"
    return call_id


def words_of(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z]{4,}", text))


def phrases_of(text: str) -> set[str]:
    """Three consecutive words: distinctive enough to mean 'the transcript is here in clear'."""
    w = text.split()
    return {" ".join(w[i:i + 3]) for i in range(len(w) - 2)}


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
async def test_transcript_and_recording_hold_no_plain_words_at_rest(store, recognizer, tmp_path, request) -> None:
    url = request.getfixturevalue("sqlite_url" if store == "sqlite" else "pg_url")
    settings = Settings.model_validate({
        "store": {"url": url},
        "transcribe": {"enabled": True, "storage": str(tmp_path / "rec"), "summary": "none"},
        "security": {"encryption_key": KEY},
    })
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(t.metadata.create_all)
    try:
        call_id = await transcribe_call(engine, settings, recognizer, tmp_path)
        async with engine.connect() as conn:
            row = (await conn.execute(sa.select(t.transcripts).where(t.transcripts.c.call_id == call_id))).one()
            rec = (await conn.execute(sa.select(t.recordings).where(t.recordings.c.call_id == call_id))).one()
            # every column of the row as the database stores it, as text
            dumped = " ".join(str(v) for v in (await conn.execute(
                sa.select(*[sa.cast(c, sa.Text) for c in t.transcripts.c if c.name != "text_encrypted"])
                .where(t.transcripts.c.call_id == call_id))).one())
    finally:
        await engine.dispose()
    text, segments = transcript_content(KEY, row)
    words = words_of(text)
    assert "58213" in text.replace(" ", "").replace("-", "") and len(words) >= 3, text
    assert row.text is None and row.segments is None
    sealed = bytes(row.text_encrypted)
    for w in words:
        assert w.encode() not in sealed and w not in dumped, w
    assert rec.encrypted and not Path(rec.path).read_bytes().startswith(b"RIFF")  # noqa: ASYNC240
    if store == "sqlite":  # the whole database file (and its WAL) on disk
        db = Path(url.split("///", 1)[1])
        raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
        for ph in phrases_of(text):
            assert ph.encode() not in raw, ph


async def test_the_call_api_returns_the_decrypted_transcript(recognizer, tmp_path) -> None:
    settings = live_settings(tmp_path, {"security": {"encryption_key": KEY},
                                        "transcribe": {"summary": "none"}})
    async with app_client(settings) as api:
        call_id = await transcribe_call(api.app.db.engine, settings, recognizer, tmp_path)
        s, body, _ = await api.call("GET", f"/api/v1/calls/{call_id}", "demo-agent-alice")
        assert s == 200, body
        tr = body["transcript"]
        assert tr["status"] == "done" and "58213" in tr["text"].replace(" ", "").replace("-", "")
        assert tr["segments"] and all("text" in s for s in tr["segments"])
        # someone else's call stays invisible
        assert (await api.call("GET", f"/api/v1/calls/{call_id}", "demo-agent-bob"))[0] == 404


async def test_a_missing_key_reports_the_transcript_as_unreadable_not_a_500(recognizer, tmp_path) -> None:
    settings = live_settings(tmp_path, {"transcribe": {"summary": "none"}})
    sealed = settings.model_copy(update={"security": settings.security.model_copy(update={"encryption_key": KEY})})
    async with app_client(settings) as api:
        call_id = await transcribe_call(api.app.db.engine, sealed, recognizer, tmp_path)
        s, body, _ = await api.call("GET", f"/api/v1/calls/{call_id}", "demo-admin")
        assert s == 200 and body["transcript"]["text"] is None
        assert "encryption_key" in body["transcript"]["error"]


@pytest.mark.parametrize("key", [KEY, "a passphrase that is long enough"])
def test_one_key_opens_recordings_and_transcripts(key: str) -> None:
    """Recordings (cti.transcribe.recording) and transcripts derive the same Fernet from the setting."""
    from cti.security.crypto import fernet, unseal
    from cti.transcribe.recording import fernet_for

    assert unseal(fernet(key), fernet_for(key).encrypt(b"audio")) == b"audio"  # type: ignore[arg-type]
