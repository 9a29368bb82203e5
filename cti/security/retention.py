"""Retention (`cti purge --older-than 90d`) and erasure (`cti erase --number | --contact`).

What to delete is decided by pure functions (`purge_plan`, `erase_plan`): one WHERE
clause per table, built from the cutoff or the numbers/contact. `apply_plan` runs a
plan in one transaction (rows first, then the audit line), and removes the recording
files only once the transaction has committed: a failed run deletes nothing, and a
file left behind by a crash is named in the report rather than silently kept.

The audit line never repeats the erased number or contact id (that would keep the very
data being erased): it stores a SHA-256 prefix, enough to answer "was X erased?".
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from cti.store import tables as t

log = structlog.get_logger(__name__)

# dependents first, calls last: their clauses select call ids from `calls`
ORDER = ("call_events", "activities", "transcripts", "routing_decisions", "monitor_sessions", "recordings",
         "callbacks", "contact_phones", "contacts", "calls")
TABLES: dict[str, sa.Table] = {n: getattr(t, n) for n in ORDER}

_AGE = re.compile(r"^\s*(\d+)\s*([dhwm]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1.0, "d": 1.0, "h": 1 / 24, "w": 7.0, "m": 30.0}


class RetentionError(ValueError):
    """Bad purge/erase request; the message names the option."""


def parse_age(text: str) -> timedelta:
    """'90d', '12w', '6m' (30-day months), '48h', or a bare number of days."""
    m = _AGE.match(str(text))
    if not m or int(m.group(1)) <= 0:
        raise RetentionError(f"--older-than: {text!r} is not an age like 90d, 12w, 6m or 48h")
    return timedelta(days=int(m.group(1)) * _UNITS[m.group(2).lower()])


def fingerprint(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Plan:
    action: str                                 # purge | erase
    where: dict[str, Any]                       # table name -> WHERE clause (absent: untouched)
    target: str | None = None                   # audit target (never personal data in clear)
    detail: dict[str, Any] = field(default_factory=dict)


def _tenant(table: sa.Table, tenant: str | None) -> Any:
    return table.c.tenant == tenant if tenant is not None and "tenant" in table.c else sa.true()


def purge_plan(cutoff: datetime, tenant: str | None = None) -> Plan:
    """Everything about calls created before `cutoff`, and any row of those tables older than it."""
    c = t.calls.c
    old_calls = sa.select(c.call_id).where(c.created_at < cutoff, _tenant(t.calls, tenant))
    # a row belongs to an old call, or is itself old (orphans: a call row never written, a failed job)
    by_time = {"call_events": "occurred_at", "activities": "created_at", "transcripts": "created_at",
               "routing_decisions": "decided_at", "monitor_sessions": "started_at", "recordings": "created_at"}
    where: dict[str, Any] = {}
    for name, col in by_time.items():
        tb = TABLES[name]
        where[name] = sa.and_(sa.or_(tb.c.call_id.in_(old_calls), tb.c[col] < cutoff), _tenant(tb, tenant))
    cb = t.callbacks.c
    where["callbacks"] = sa.and_(cb.requested_at < cutoff, _tenant(t.callbacks, tenant))
    where["calls"] = sa.and_(c.created_at < cutoff, _tenant(t.calls, tenant))
    return Plan("purge", where, None, {"cutoff": cutoff.isoformat(), "tenant": tenant})


def erase_plan(numbers: list[str], contact_id: str | None = None, tenant: str | None = None) -> Plan:
    """Everything stored for these phone numbers (and this contact): calls from/to them, their
    events, recordings, transcripts, activities, decisions, monitor sessions, callbacks; with a
    contact, the contact and its phones in the local CRM directory."""
    nums = sorted({n for n in numbers if n})
    if not nums and not contact_id:
        raise RetentionError("erase: give --number or --contact")
    c = t.calls.c
    cond = [c.from_number.in_(nums), c.to_number.in_(nums)] if nums else []
    if contact_id:
        cond.append(c.contact_id == contact_id)
    calls_where = sa.and_(sa.or_(*cond), _tenant(t.calls, tenant))
    ids = sa.select(c.call_id).where(calls_where)
    where: dict[str, Any] = {}
    for name in ("call_events", "transcripts", "routing_decisions", "monitor_sessions", "recordings"):
        tb = TABLES[name]
        where[name] = sa.and_(tb.c.call_id.in_(ids), _tenant(tb, tenant))
    a = t.activities.c
    act = [a.call_id.in_(ids)]
    if nums:
        act += [a.from_number.in_(nums), a.to_number.in_(nums)]
    if contact_id:
        act.append(a.contact_id == contact_id)
    where["activities"] = sa.and_(sa.or_(*act), _tenant(t.activities, tenant))
    cb = t.callbacks.c
    where["callbacks"] = sa.and_(sa.or_(cb.number.in_(nums), cb.call_id.in_(ids)), _tenant(t.callbacks, tenant))
    if contact_id:
        where["contact_phones"] = t.contact_phones.c.contact_id == contact_id
        where["contacts"] = sa.and_(t.contacts.c.id == contact_id, _tenant(t.contacts, tenant))
    where["calls"] = calls_where
    target = fingerprint(f"contact:{contact_id}") if contact_id else fingerprint(f"number:{nums[0]}")
    return Plan("erase", where, target, {"numbers": len(nums), "contact": bool(contact_id), "tenant": tenant})


@dataclass
class Report:
    action: str
    counts: dict[str, int]
    files_deleted: int = 0
    files_missing: int = 0
    files_failed: list[str] = field(default_factory=list)
    dry_run: bool = False

    def summary(self) -> str:
        rows = ", ".join(f"{k} {v}" for k, v in self.counts.items() if v) or "nothing"
        verb = "would delete" if self.dry_run else "deleted"
        files = f"; recording files {verb} {self.files_deleted}"
        if self.files_missing:
            files += f" ({self.files_missing} already gone)"
        if self.files_failed:
            files += f"; could not delete {len(self.files_failed)}: {', '.join(self.files_failed[:5])}"
        return f"{self.action}: {verb} {rows}{files}"


def _own_file(path: str | None, storage: Path | None) -> Path | None:
    """Files we may delete: our stored copy; a provider's source only inside our storage."""
    if not path or "://" in path:
        return None
    p = Path(path)
    if storage is None:
        return p
    try:
        p.resolve().relative_to(storage.resolve())
    except ValueError:
        return None
    return p


async def apply_plan(
    engine: AsyncEngine,
    plan: Plan,
    *,
    now: datetime,
    audit_tenant: str = "default",
    actor: str = "cli",
    storage: str | Path | None = None,
    dry_run: bool = False,
) -> Report:
    """Delete what the plan selects in one transaction, audit it, then remove the files."""
    store = Path(storage) if storage else None
    counts: dict[str, int] = {}
    files: set[Path] = set()
    async with engine.begin() as conn:
        rec = t.recordings.c
        if "recordings" in plan.where:
            rows = (await conn.execute(sa.select(rec.path, rec.source).where(plan.where["recordings"]))).all()
            for r in rows:
                if r.path and "://" not in r.path:
                    files.add(Path(r.path))
                own = _own_file(r.source, store)
                if own is not None and store is not None:
                    files.add(own)
        for name in ORDER:
            clause = plan.where.get(name)
            if clause is None:
                continue
            tb = TABLES[name]
            if dry_run:
                counts[name] = int((await conn.execute(sa.select(sa.func.count()).select_from(tb)
                                                       .where(clause))).scalar() or 0)
            else:
                counts[name] = int((await conn.execute(sa.delete(tb).where(clause))).rowcount or 0)
        if dry_run:
            return Report(plan.action, counts, files_deleted=len(files), dry_run=True)
        await conn.execute(t.audit_log.insert().values(
            tenant=audit_tenant, at=now, actor=actor, action=plan.action, target=plan.target,
            detail={**plan.detail, "counts": counts, "files": len(files)}))
    report = Report(plan.action, counts)
    for p in sorted(files):
        try:
            await asyncio.to_thread(p.unlink)
            report.files_deleted += 1
        except FileNotFoundError:
            report.files_missing += 1
        except OSError as exc:
            report.files_failed.append(f"{p} ({exc.strerror})")
        if store is not None:  # tidy the call's now-empty folder (storage/<tenant>/<call>/)
            await asyncio.to_thread(_prune_empty_dirs, p.parent, store)
    log.info(f"{plan.action}_done", counts=counts, files=report.files_deleted, missing=report.files_missing,
             failed=len(report.files_failed))
    return report


def _prune_empty_dirs(d: Path, stop: Path) -> None:
    try:
        stop = stop.resolve()
        d = d.resolve()
        while d != stop and stop in d.parents:
            d.rmdir()  # only if empty (OSError otherwise)
            d = d.parent
    except OSError:
        pass


async def purge(engine: AsyncEngine, older_than: timedelta, *, now: datetime, tenant: str | None = None,
                audit_tenant: str = "default", storage: str | Path | None = None, dry_run: bool = False) -> Report:
    return await apply_plan(engine, purge_plan(now - older_than, tenant), now=now, audit_tenant=audit_tenant,
                            storage=storage, dry_run=dry_run)


async def erase(engine: AsyncEngine, *, now: datetime, number: str | None = None, contact_id: str | None = None,
                region: str = "FR", tenant: str | None = None, audit_tenant: str = "default",
                storage: str | Path | None = None, dry_run: bool = False) -> Report:
    """Erase a phone number (as given and in E.164) or a contact (and every number it has)."""
    from cti.phone import InvalidNumber, to_e164

    numbers: list[str] = []
    if number:
        raw = number.strip()
        try:
            numbers.append(to_e164(raw, region))
        except InvalidNumber:
            # an extension or a number phonenumbers does not know is erased as written;
            # words ("anonymous") are refused: they would match every hidden caller
            if not re.fullmatch(r"\+?\d{2,20}", raw):
                raise RetentionError(f"--number: {number!r} is not a phone number") from None
        numbers.append(raw)
    if contact_id:
        async with engine.connect() as conn:
            exists = (await conn.execute(sa.select(t.contacts.c.id).where(t.contacts.c.id == contact_id))).first()
            phones = (await conn.execute(sa.select(t.contact_phones.c.e164, t.contact_phones.c.raw)
                                         .where(t.contact_phones.c.contact_id == contact_id))).all()
        if exists is None:
            raise RetentionError(f"--contact: no contact {contact_id!r} in the local directory")
        numbers += [p.e164 for p in phones] + [p.raw for p in phones if p.raw]
    plan = erase_plan(numbers, contact_id, tenant)
    return await apply_plan(engine, plan, now=now, audit_tenant=audit_tenant, storage=storage, dry_run=dry_run)


async def run(settings: Any, what: str, **kw: Any) -> Report:
    """Open the configured store and purge or erase (the CLI's entry point)."""
    from cti.clock import SystemClock
    from cti.store.db import Database

    db = Database(settings.store.url, connect_timeout_s=10)
    await db.connect()
    try:
        common = {"now": SystemClock().now(), "audit_tenant": settings.site.tenant,
                  "storage": settings.transcribe.storage}
        if what == "purge":
            return await purge(db.engine, **common, **kw)
        return await erase(db.engine, region=settings.site.default_region, **common, **kw)
    finally:
        await db.close()
