"""The local activity store shared by every connector: upsert one activity per call,
and read the last calls with a customer (the pop's history), whatever CRM is configured."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cti.model import Activity
from cti.store.tables import activities, transcripts


def upsert_stmt(
    conn: AsyncConnection | AsyncEngine,
    table: sa.Table,
    values: dict[str, Any],
    keys: list[str],
    update: list[str],
) -> Any:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET update — on SQLite and PostgreSQL."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table).values(**values)
    if not update:
        return stmt.on_conflict_do_nothing(index_elements=keys)
    return stmt.on_conflict_do_update(index_elements=keys, set_={k: stmt.excluded[k] for k in update})


def activity_values(a: Activity, tenant: str) -> dict[str, Any]:
    return {
        "call_id": a.call_id,
        "tenant": tenant,
        "contact_id": a.contact_id,
        "account_id": a.account_id,
        "agent": a.agent,
        "subject": a.subject[:300],
        "direction": str(a.direction),
        "from_number": a.from_number,
        "to_number": a.to_number,
        "duration_s": float(a.duration_s or 0.0),
        "outcome": str(a.outcome) if a.outcome else None,
        "disposition": a.disposition,
        "notes": a.notes,
        "recording_url": a.recording_url,
        "summary": a.summary,
    }


async def upsert_activity(
    conn: AsyncConnection, a: Activity, tenant: str, now: datetime, *, synced_ref: str | None = None
) -> None:
    """One row per call (primary key call_id): a second write updates it.

    Wrap-up fields (disposition, notes) and the summary are kept when the new value is
    empty, so a late re-sync of the call facts never erases what the agent typed.
    `synced_ref`: the CRM already has this version (the local CRM, whose history is this
    table), so the row is written as synced with that reference.
    """
    values = activity_values(a, tenant)
    values["created_at"] = now
    values["updated_at"] = now
    values["crm_synced_at"] = None  # changed: the CRM must get this version
    if synced_ref is not None:
        values.update(crm_ref=synced_ref, crm_synced_at=now, crm_error=None)
    facts = [
        "contact_id",
        "account_id",
        "agent",
        "subject",
        "direction",
        "from_number",
        "to_number",
        "duration_s",
        "outcome",
        "recording_url",
        "updated_at",
        "crm_synced_at",
    ]
    if synced_ref is not None:
        facts += ["crm_ref", "crm_error"]
    stmt = upsert_stmt(conn, activities, values, ["call_id"], facts)
    await conn.execute(stmt)
    keep = {k: values[k] for k in ("disposition", "notes", "summary") if values[k] not in (None, "")}
    if keep:
        await conn.execute(activities.update().where(activities.c.call_id == a.call_id).values(**keep))


def _history_row(r: Any) -> dict[str, Any]:
    at = r.created_at
    return {
        "call_id": r.call_id,
        "at": at.isoformat() if isinstance(at, datetime) else at,
        "direction": r.direction,
        "outcome": r.outcome,
        "duration_s": r.duration_s,
        "agent": r.agent,
        "disposition": r.disposition,
    }


async def local_history(
    engine: AsyncEngine,
    key: str | Sequence[str],
    limit: int = 5,
    *,
    tenant: str = "default",
    exclude_call: str | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """(last calls, last summary) for E.164 numbers (start with '+') and/or contact ids, in one query."""
    a = activities
    keys = [key] if isinstance(key, str) else [k for k in key if k]
    conds = []
    for k in keys:
        if k.startswith("+"):
            conds += [a.c.from_number == k, a.c.to_number == k]
        else:
            conds.append(a.c.contact_id == k)
    if not conds:
        return [], None
    cond = sa.or_(*conds)
    q = sa.select(a).where(a.c.tenant == tenant, cond)
    if exclude_call:
        q = q.where(a.c.call_id != exclude_call)
    q = q.order_by(a.c.created_at.desc(), a.c.call_id).limit(max(1, limit))
    async with engine.connect() as conn:
        rows = (await conn.execute(q)).all()
        summary = next((r.summary for r in rows if r.summary), None)
        if summary is None and rows:
            # the transcription stage may have written the summary only on the transcript
            t = await conn.execute(
                sa.select(transcripts.c.summary)
                .where(transcripts.c.call_id.in_([r.call_id for r in rows]), transcripts.c.summary.is_not(None))
                .order_by(transcripts.c.updated_at.desc())
                .limit(1)
            )
            summary = t.scalar()
    return [_history_row(r) for r in rows], summary
