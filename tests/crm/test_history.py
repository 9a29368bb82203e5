"""The customer's last calls and last summary, as the screen pop shows them (`local_history`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.crm.store import local_history, upsert_activity
from cti.model import Activity, Direction, Outcome
from cti.store.tables import transcripts

NUMBER = "+33612345678"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


async def _call(engine: AsyncEngine, call_id: str, minutes: int, *, summary: dict | None = None,
                transcript_summary: dict | None = None) -> None:
    at = T0 + timedelta(minutes=minutes)
    act = Activity(call_id=call_id, subject="Inbound call", direction=Direction.INBOUND, from_number=NUMBER,
                   to_number="+33100000000", duration_s=60.0, outcome=Outcome.ANSWERED, summary=summary)
    async with engine.begin() as conn:
        await upsert_activity(conn, act, "default", at)
        if transcript_summary is not None:
            await conn.execute(sa.insert(transcripts).values(
                call_id=call_id, tenant="default", status="done", summary=transcript_summary,
                created_at=at, updated_at=at))


async def test_the_last_summary_is_the_most_recent_calls_from_its_activity_or_its_transcript(
    engine: AsyncEngine,
) -> None:
    await _call(engine, "c1", 0, summary={"key_points": ["oldest"]})
    await _call(engine, "c2", 10, transcript_summary={"key_points": ["only on the transcript"]})
    await _call(engine, "c3", 20)  # the latest call: not transcribed yet
    rows, summary = await local_history(engine, NUMBER, 5)
    assert [r["call_id"] for r in rows] == ["c3", "c2", "c1"]
    assert summary == {"key_points": ["only on the transcript"]}
    # without the transcript, the activity's own summary
    rows, summary = await local_history(engine, NUMBER, 5, exclude_call="c2")
    assert [r["call_id"] for r in rows] == ["c3", "c1"] and summary == {"key_points": ["oldest"]}
    assert await local_history(engine, "+33699999999", 5) == ([], None)



async def test_the_history_shows_and_orders_calls_by_when_they_started_not_when_they_were_recorded(
    engine: AsyncEngine,
) -> None:
    """An activity written late (a store writer behind, a replay) is still dated and ordered by its call."""
    early = Activity(call_id="early", subject="Inbound call", direction=Direction.INBOUND, from_number=NUMBER,
                     to_number="+33100000000", duration_s=60.0, outcome=Outcome.ANSWERED, started_at=T0)
    late = replace(early, call_id="late", started_at=T0 + timedelta(hours=1))
    async with engine.begin() as conn:
        await upsert_activity(conn, late, "default", T0 + timedelta(hours=1, minutes=2))
        await upsert_activity(conn, early, "default", T0 + timedelta(hours=3))  # recorded three hours late
        # a later write that does not know the start keeps the stored one
        await upsert_activity(conn, replace(early, started_at=None), "default", T0 + timedelta(hours=4))
    rows, _ = await local_history(engine, NUMBER, 5)
    assert [r["call_id"] for r in rows] == ["late", "early"]
    at = datetime.fromisoformat(rows[1]["at"])
    assert (at if at.tzinfo else at.replace(tzinfo=UTC)) == T0  # SQLite reads it back naive (UTC)
