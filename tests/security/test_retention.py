"""`cti purge` and `cti erase`: what goes, what stays, files on disk, the audit line (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from cti.security.retention import RetentionError, erase, parse_age, purge, purge_plan
from cti.store import tables as t

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CAMILLE = "+33612345678"
OTHER = "+33699999999"
PER_CALL = ("calls", "call_events", "activities", "recordings", "transcripts", "routing_decisions",
            "monitor_sessions")


async def seed_call(engine: Any, storage: Path, call_id: str, age_days: float, number: str,
                    contact: str | None = None) -> Path:
    """A call with a row in every table that refers to it, and its recording file."""
    at = NOW - timedelta(days=age_days)
    f = storage / "default" / call_id / "rec.wav.enc"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(b"sealed audio")
    async with engine.begin() as conn:
        await conn.execute(t.calls.insert().values(
            call_id=call_id, tenant="default", provider="sim", provider_call_id=call_id, direction="inbound",
            state="ended", from_number=number, to_number="+33140000000", agent="alice", created_at=at,
            contact_id=contact))
        await conn.execute(t.call_events.insert().values(
            event_id=f"e-{call_id}", call_id=call_id, tenant="default", provider="sim", kind="ended",
            occurred_at=at, payload={"call_id": call_id, "from_number": number}))
        await conn.execute(t.activities.insert().values(
            call_id=call_id, tenant="default", subject="Inbound call", direction="inbound", from_number=number,
            contact_id=contact, created_at=at, updated_at=at))
        await conn.execute(t.recordings.insert().values(
            id=f"r-{call_id}", call_id=call_id, tenant="default", source="sim://x", path=str(f), encrypted=True,
            created_at=at))
        await conn.execute(t.transcripts.insert().values(
            call_id=call_id, tenant="default", status="done", text="hello", created_at=at, updated_at=at))
        await conn.execute(t.routing_decisions.insert().values(
            call_id=call_id, tenant="default", queue="support", decided_at=at, chosen="alice", candidates=[]))
        await conn.execute(t.monitor_sessions.insert().values(
            id=f"m-{call_id}", tenant="default", call_id=call_id, supervisor="sam", agent="alice", mode="listen",
            modes=[], started_at=at))
    return f


async def seed_contact(engine: Any, contact_id: str, number: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(t.contacts.insert().values(id=contact_id, tenant="default", first_name="Camille",
                                                      last_name="Martin", fields={}))
        await conn.execute(t.contact_phones.insert().values(contact_id=contact_id, e164=number, raw="06 12 34 56 78"))


async def left(engine: Any, table: str, **where: Any) -> int:
    tb = getattr(t, table)
    q = sa.select(sa.func.count()).select_from(tb)
    for k, v in where.items():
        q = q.where(tb.c[k] == v)
    async with engine.connect() as conn:
        return int((await conn.execute(q)).scalar() or 0)


async def audit_rows(engine: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(sa.select(t.audit_log).order_by(t.audit_log.c.id))).all())


@pytest.fixture
async def world(store_url: str, tmp_path: Path):
    from cti.store.migrate import upgrade_async

    await upgrade_async(store_url)
    engine = create_async_engine(store_url)
    storage = tmp_path / "recordings"
    files = {
        "old": await seed_call(engine, storage, "old", 100, CAMILLE),
        "recent": await seed_call(engine, storage, "recent", 10, CAMILLE, contact="c-camille"),
        "other": await seed_call(engine, storage, "other", 120, OTHER),
        "keep": await seed_call(engine, storage, "keep", 3, OTHER, contact="c-keep"),
    }
    await seed_contact(engine, "c-camille", CAMILLE)
    await seed_contact(engine, "c-keep", OTHER)
    try:
        yield engine, storage, files
    finally:
        await engine.dispose()


def test_ages_parse_and_bad_ones_name_the_option() -> None:
    assert parse_age("90d") == timedelta(days=90) and parse_age("12w") == timedelta(weeks=12)
    assert parse_age("48h") == timedelta(hours=48) and parse_age("6m") == timedelta(days=180)
    assert parse_age("30") == timedelta(days=30)
    for bad in ("", "0d", "ninety", "-3d", "3y"):
        with pytest.raises(RetentionError, match="--older-than"):
            parse_age(bad)
    assert set(purge_plan(NOW).where) >= set(PER_CALL) | {"callbacks"}


async def test_purge_deletes_old_calls_with_everything_about_them_and_their_files(world) -> None:
    engine, storage, files = world
    dry = await purge(engine, timedelta(days=90), now=NOW, storage=storage, dry_run=True)
    assert dry.dry_run and dry.counts["calls"] == 2 and await left(engine, "calls") == 4
    assert files["old"].exists() and await audit_rows(engine) == []

    report = await purge(engine, timedelta(days=90), now=NOW, storage=storage)
    for table in PER_CALL:
        assert report.counts[table] == 2, table
        for gone in ("old", "other"):
            assert await left(engine, table, call_id=gone) == 0, (table, gone)
        for kept in ("recent", "keep"):
            assert await left(engine, table, call_id=kept) == 1, (table, kept)
    assert report.files_deleted == 2 and not files["old"].exists() and not files["other"].exists()
    assert not files["old"].parent.exists()  # the call's folder is tidied
    assert files["recent"].exists() and files["keep"].exists()
    assert await left(engine, "contacts") == 2  # the CRM directory is not a call record
    [a] = await audit_rows(engine)
    assert (a.actor, a.action) == ("cli", "purge") and a.detail["counts"]["calls"] == 2 and a.detail["files"] == 2
    assert "calls 2" in report.summary() and "recording files deleted 2" in report.summary()
    # nothing left to purge: a second run deletes nothing (and says so)
    again = await purge(engine, timedelta(days=90), now=NOW, storage=storage)
    assert sum(again.counts.values()) == 0 and again.files_deleted == 0


async def test_erase_a_number_in_any_format_deletes_its_calls_not_others(world) -> None:
    engine, storage, files = world
    report = await erase(engine, number="06 12 34 56 78", now=NOW, region="FR", storage=storage)
    assert report.counts["calls"] == 2 and report.counts["activities"] == 2
    for table in PER_CALL:
        assert await left(engine, table, call_id="old") == 0 and await left(engine, table, call_id="recent") == 0
        assert await left(engine, table, call_id="other") == 1 and await left(engine, table, call_id="keep") == 1
    assert not files["old"].exists() and not files["recent"].exists() and files["other"].exists()
    assert await left(engine, "contacts", id="c-camille") == 1  # --number keeps the directory entry
    [a] = await audit_rows(engine)
    assert (a.actor, a.action) == ("cli", "erase") and a.detail["counts"]["calls"] == 2
    assert CAMILLE not in str(a.target) + str(a.detail) and "612345678" not in str(a.target) + str(a.detail)


async def test_erase_a_contact_deletes_it_its_phones_and_its_calls(world) -> None:
    engine, storage, files = world
    report = await erase(engine, contact_id="c-camille", now=NOW, storage=storage)
    assert report.counts["contacts"] == 1 and report.counts["contact_phones"] == 1
    assert report.counts["calls"] == 2  # the linked call and the older one from the same number
    assert await left(engine, "contacts", id="c-camille") == 0 and await left(engine, "contact_phones") == 1
    assert await left(engine, "calls") == 2 and await left(engine, "contacts", id="c-keep") == 1
    assert not files["recent"].exists() and files["keep"].exists()
    with pytest.raises(RetentionError, match="--contact"):
        await erase(engine, contact_id="nobody", now=NOW)
    with pytest.raises(RetentionError, match="--number"):
        await erase(engine, number="not a number", now=NOW)


def test_cli_purge_and_erase_print_a_summary(store_url: str, tmp_path: Path, capsys, cli_logging) -> None:
    from cti.cli import main
    from cti.store.migrate import upgrade_async

    storage = tmp_path / "recordings"

    async def setup() -> None:
        await upgrade_async(store_url)
        engine = create_async_engine(store_url)
        await seed_call(engine, storage, "ancient", 400, CAMILLE)
        await seed_call(engine, storage, "fresh", 1, OTHER)
        await engine.dispose()

    asyncio.run(setup())
    cfg = tmp_path / "cti.toml"
    cfg.write_text(f'[store]\nurl = "{store_url}"\n[transcribe]\nstorage = "{storage}"\n')
    assert main(["purge", "--older-than", "90d", "--config", str(cfg), "--dry-run"]) == 0
    assert "would delete" in capsys.readouterr().out
    assert main(["purge", "--older-than", "90d", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("purge: deleted") and "calls 1" in out and "recording files deleted 1" in out
    assert main(["erase", "--number", OTHER, "--config", str(cfg)]) == 0
    assert "calls 1" in capsys.readouterr().out
    assert main(["purge", "--older-than", "soon", "--config", str(cfg)]) == 2
    assert "--older-than" in capsys.readouterr().err
    assert main(["purge", "--config", str(cfg)]) == 2  # no age and no security.retention_days

    async def audit() -> list[Any]:
        engine = create_async_engine(store_url)
        try:
            return [(r.actor, r.action) for r in await audit_rows(engine)]
        finally:
            await engine.dispose()

    assert asyncio.run(audit()) == [("cli", "purge"), ("cli", "erase")]
