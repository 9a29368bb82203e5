"""The call as it lands in the customer's history: exactly one activity per call.

`ActivityWriter.on_call(call)` runs when a call ends. It upserts the `activities` row
(primary key call_id: a ring-all that rang five agents, a caller matching three
contacts, a replayed event — still one row), then pushes it to the CRM connector.
A CRM outage delays the push, never loses it: failures are counted on the row
(`crm_attempts`, `crm_error`) and `run_retries()` retries with exponential backoff
until the CRM takes it. Connectors are idempotent by call id, so a retry after a
lost answer updates the CRM record instead of creating a second one.
`wrap_up(call_id, disposition, notes)` stores the agent's wrap-up and re-syncs.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import structlog

from cti import phone
from cti.crm.base import CrmAuthError, CrmError, CrmUnavailable
from cti.crm.store import upsert_activities, upsert_activity
from cti.model import Activity, Call, Direction, Outcome
from cti.routing.screen_pop import customer_number
from cti.store.tables import activities, calls
from cti.yielding import step_aside

log = structlog.get_logger(__name__)

# built once (an IN list of a bound, expanding parameter): a select built per batch cost
# more loop time than the query
_CHOSEN = sa.select(calls.c.call_id, calls.c.contact_id, calls.c.account_id).where(
    calls.c.call_id.in_(sa.bindparam("ids", expanding=True))
)


def subject_for(call: Call, region: str = "FR") -> str:
    """'Inbound call from 06 12 34 56 78 (missed)' — what the CRM timeline shows."""
    other = customer_number(call.direction, call.from_number, call.to_number) or "unknown"
    shown = phone.display(other, region) if other.startswith("+") else other
    word = {
        Direction.INBOUND: "Inbound call from",
        Direction.OUTBOUND: "Outbound call to",
        Direction.INTERNAL: "Internal call with",
    }[call.direction]
    outcome = f" ({call.outcome})" if call.outcome and call.outcome is not Outcome.ANSWERED else ""
    return f"{word} {shown}{outcome}"


def call_started(call: Call) -> datetime | None:
    """When the call happened, as a CRM user reads it: when it started (offered or dialled).

    Not when it was answered (a missed call never is) nor when it ended (a long call would sort
    after shorter ones that began later). The fold sets `created_at` from the first of these;
    the others cover a record built without it."""
    return call.created_at or call.queued_at or call.ringing_at or call.answered_at or call.ended_at


def _utc(at: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes for timezone-aware columns; they are UTC."""
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


def activity_for(call: Call, extras: dict[str, Any] | None = None, region: str = "FR") -> Activity:
    """Pure: the activity of an ended call (contact/account come from the pop's match)."""
    x = dict(extras or {})
    contact = x.get("contact")
    if contact is not None and not x.get("contact_id"):
        # the pop's match (cti.model.Contact); an account-only match fills account_id only
        is_account = getattr(contact, "kind", "contact") == "account"
        x["contact_id"] = None if is_account else contact.id
        x["account_id"] = x.get("account_id") or (contact.id if is_account else contact.account_id)
    return Activity(
        call_id=call.call_id,
        subject=x.get("subject") or subject_for(call, region),
        direction=call.direction,
        from_number=call.from_number,
        to_number=call.to_number,
        duration_s=round(call.talk_s + call.hold_s, 3),
        outcome=call.outcome,
        contact_id=x.get("contact_id"),
        account_id=x.get("account_id"),
        agent=call.agent,
        disposition=x.get("disposition"),
        notes=x.get("notes"),
        recording_url=x.get("recording_url") or call.recording,
        summary=x.get("summary"),
        started_at=call_started(call),
    )


REFUSED = "refused: "


def _refused(exc: BaseException) -> bool:
    """The CRM said no to this data (retrying the same data cannot help)."""
    return isinstance(exc, CrmError) and not isinstance(exc, (CrmUnavailable, CrmAuthError))


def backoff_s(attempts: int, base: float, cap: float, jitter: float = 0.1) -> float:
    """Exponential backoff after `attempts` failures (1 -> base), capped, with +-jitter."""
    delay = min(cap, base * (2 ** max(0, attempts - 1)))
    return delay * (1 + random.uniform(-jitter, jitter)) if jitter else delay


@dataclass
class SyncResult:
    ok: bool
    crm_ref: str | None = None
    error: str | None = None


def pending_query(tenant: str, max_refusals: int) -> sa.Select[Any]:
    """Activities the CRM does not have in their latest version, oldest change first, except
    those it refused `max_refusals` times. Reads the partial index ix_activities_crm_pending."""
    a = activities.c
    gave_up = sa.and_(a.crm_attempts >= max_refusals, a.crm_error.like(REFUSED + "%"))
    return (sa.select(a.call_id).where(a.tenant == tenant, a.crm_synced_at.is_(None), sa.not_(gave_up))
            .order_by(a.updated_at))


class ActivityWriter:
    def __init__(
        self,
        engine: Any,
        crm: Any,
        clock: Any,
        *,
        tenant: str = "default",
        region: str = "FR",
        lookup: Any = None,
        retry_base_s: float = 5.0,
        retry_max_s: float = 600.0,
        max_refusals: int = 8,
        jitter: float = 0.1,
        poll_s: float = 1.0,
        push_timeout_s: float = 15.0,
        retry_per_s: float = 20.0,
        on_change: Any = None,
    ) -> None:
        self.engine = engine
        self.crm = crm
        self.clock = clock
        self.tenant = tenant
        self.region = region
        self.lookup = lookup  # CachedLookup, to find the contact when the call record has none
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        # A CRM that *refuses* an activity (bad data) is retried a few times, then left alone
        # until the activity changes; an unreachable CRM is retried for as long as it takes.
        self.max_refusals = max_refusals
        self.jitter = jitter
        self.poll_s = poll_s
        self.push_timeout_s = push_timeout_s
        # A backlog (hours of a CRM outage, tens of thousands of activities) is worked off at
        # this pace, not at once: pushed as fast as possible it took a whole core from the
        # real-time work on the node (pops, routing) and would meet the CRM's API rate limits.
        # New calls are pushed when they end, outside this budget.
        self.retry_per_pass = max(1, round(retry_per_s * poll_s))
        self._next_try: dict[str, float] = {}  # call_id -> monotonic time of the next attempt
        self._locks: dict[str, asyncio.Lock] = {}
        self._pending_wrap: dict[str, dict[str, Any]] = {}
        # called with (from_number, to_number, contact_id) when an activity changes, so
        # caches of the customer's history (ScreenPop.invalidate_history) can drop it
        self.on_change = on_change

    # ------------------------------------------------------------------ writes

    async def on_call(self, call: Call, extras: dict[str, Any] | None = None) -> bool:
        """Record an ended call (other states are ignored); returns True once the CRM has it."""
        if not call.is_ended:
            return False
        act = activity_for(call, await self._facts(call, extras), self.region)
        async with self._lock(call.call_id):
            async with self.engine.begin() as conn:
                await upsert_activity(conn, act, self.tenant, self.clock.now())
            log.info("activity_recorded", call_id=call.call_id, contact_id=act.contact_id)
            self._changed(act.from_number, act.to_number, act.contact_id)
            ok = (await self._sync(call.call_id)).ok
        self._release(call.call_id, ok)
        return ok

    async def on_calls(self, batch: list[Call]) -> None:
        """Record many ended calls (a bus batch). For the local CRM, whose history is the
        activities table itself, that is one read of the agents' choices and one write
        transaction for the whole batch, the rows written as synced; other CRMs get one write
        and one push per call (`on_call`)."""
        ended = [c for c in batch if c.is_ended]
        if getattr(self.crm, "name", None) != "local":
            for call in ended:
                await self.on_call(call)
            return
        if not ended:
            return
        chosen = await self._chosen_many([c.call_id for c in ended])
        acts = [activity_for(call, await self._facts(call, chosen=chosen.get(call.call_id, {})), self.region)
                for call in ended]
        now = self.clock.now()
        await step_aside()  # building the activities and writing them: two loop steps
        async with self.engine.begin() as conn:
            await upsert_activities(conn, [(act, f"local:{act.call_id}") for act in acts], self.tenant, now)
        for act in acts:
            log.info("activity_recorded", call_id=act.call_id, contact_id=act.contact_id)
            self._changed(act.from_number, act.to_number, act.contact_id)
            self._next_try.pop(act.call_id, None)

    async def wrap_up(self, call_id: str, disposition: str | None, notes: str | None) -> bool:
        """Store the agent's wrap-up on the activity (and the call) and push it again.

        A wrap-up that arrives before the call's activity exists is kept and applied
        when the call is recorded. Returns True if stored now, False if deferred."""
        async with self._lock(call_id):
            async with self.engine.begin() as conn:
                res = await conn.execute(
                    activities.update()
                    .where(activities.c.call_id == call_id)
                    .values(
                        disposition=disposition,
                        notes=notes,
                        updated_at=self.clock.now(),
                        crm_synced_at=None,
                        crm_attempts=0,  # changed data: a CRM that refused it gets a fresh chance
                    )
                )
                await conn.execute(
                    calls.update().where(calls.c.call_id == call_id).values(disposition=disposition, notes=notes)
                )
            if not res.rowcount:
                if len(self._pending_wrap) >= 10_000:  # wrap-ups of calls that never end: bounded
                    self._pending_wrap.pop(next(iter(self._pending_wrap)))
                self._pending_wrap[call_id] = {"disposition": disposition, "notes": notes}
                return False
            async with self.engine.connect() as conn:
                row = (
                    await conn.execute(
                        sa.select(activities.c.from_number, activities.c.to_number, activities.c.contact_id).where(
                            activities.c.call_id == call_id
                        )
                    )
                ).first()
            if row is not None:
                self._changed(row.from_number, row.to_number, row.contact_id)
            self._next_try.pop(call_id, None)
            await self._sync(call_id)
            return True

    def _changed(self, *keys: str | None) -> None:
        if self.on_change is not None:
            try:
                self.on_change(*keys)
            except Exception:
                log.exception("activity_on_change_failed")

    async def on_summary(self, call_id: str, transcript_text: str, summary: dict[str, Any] | None) -> None:
        """Attach a transcript summary to the activity and the CRM (idempotent)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                activities.update()
                .where(activities.c.call_id == call_id)
                .values(summary=summary, updated_at=self.clock.now())
            )
        try:
            await self.crm.log_transcript(call_id, transcript_text, summary)
        except Exception as exc:
            log.warning("crm_transcript_failed", call_id=call_id, error=str(exc))

    async def _facts(
        self, call: Call, extras: dict[str, Any] | None = None, *, chosen: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """What the activity records beyond the call: a wrap-up typed before the call was
        recorded, and the contact. What the agent chose (chooser, new contact) is on the call
        row and wins over a lookup; `chosen` is that, when the caller already read it."""
        x = dict(extras or {})
        wrap = self._pending_wrap.pop(call.call_id, None)
        if wrap:
            x.update({k: v for k, v in wrap.items() if v is not None})
        if not x.get("contact_id"):
            if chosen is None:
                chosen = (await self._chosen_many([call.call_id])).get(call.call_id, {})
            if chosen:
                x.update(chosen)
            elif x.get("contact") is None:
                x.update(await self._match(call))
        return x

    async def _chosen_many(self, call_ids: list[str]) -> dict[str, dict[str, Any]]:
        """call id -> the contact/account the agent chose on that call, for calls that have one."""
        out: dict[str, dict[str, Any]] = {}
        async with self.engine.connect() as conn:
            for i in range(0, len(call_ids), 500):
                rows = await conn.execute(_CHOSEN, {"ids": call_ids[i : i + 500]})
                for row in rows:
                    if row.contact_id or row.account_id:
                        out[row.call_id] = {"contact_id": row.contact_id, "account_id": row.account_id}
        return out

    async def _match(self, call: Call) -> dict[str, Any]:
        """Contact/account of the call from a CRM lookup of the customer's number.

        Several matches still make one activity: it goes to the first contact, and to
        the account when they all belong to the same one."""
        number = phone.normalize(customer_number(call.direction, call.from_number, call.to_number), self.region)
        if self.lookup is None or not number or not number.startswith("+"):
            return {}
        try:
            matches = await asyncio.wait_for(self.lookup.lookup(number), self.push_timeout_s)
        except Exception:
            return {}
        if not matches:
            return {}
        accounts_ = {m.account_id for m in matches}
        first = matches[0]
        return {
            "contact_id": first.id if first.kind != "account" else None,
            "account_id": first.account_id if len(accounts_) == 1 else None,
        }

    # ------------------------------------------------------------------ CRM sync

    def _lock(self, call_id: str) -> asyncio.Lock:
        # serializes write + push per call, so "synced" always refers to the version pushed
        lock = self._locks.get(call_id)
        if lock is None:
            lock = self._locks[call_id] = asyncio.Lock()
        return lock

    def _release(self, call_id: str, synced: bool) -> None:
        lock = self._locks.get(call_id)
        if synced and lock is not None and not lock.locked():
            del self._locks[call_id]

    async def sync(self, call_id: str) -> SyncResult:
        """Push the stored activity to the CRM once; on failure record it and schedule a retry."""
        lock = self._lock(call_id)
        async with lock:
            result = await self._sync(call_id)
        self._release(call_id, result.ok)
        return result

    async def _sync(self, call_id: str) -> SyncResult:
        if getattr(self.crm, "name", None) == "local":
            # the activities table *is* the local CRM's history: nothing to push
            ref = f"local:{call_id}"
            async with self.engine.begin() as conn:
                res = await conn.execute(
                    activities.update()
                    .where(activities.c.call_id == call_id)
                    .values(crm_ref=ref, crm_synced_at=self.clock.now(), crm_error=None)
                )
            return SyncResult(bool(res.rowcount), crm_ref=ref if res.rowcount else None)
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(activities).where(activities.c.call_id == call_id))).first()
        if row is None:
            return SyncResult(False, error="no activity")
        act = Activity(
            call_id=row.call_id,
            subject=row.subject,
            direction=Direction(row.direction),
            from_number=row.from_number,
            to_number=row.to_number,
            duration_s=row.duration_s,
            outcome=Outcome(row.outcome) if row.outcome else None,
            contact_id=row.contact_id,
            account_id=row.account_id,
            agent=row.agent,
            disposition=row.disposition,
            notes=row.notes,
            recording_url=row.recording_url,
            summary=row.summary,
            crm_ref=None if (row.crm_ref or "").startswith("local:") else row.crm_ref,
            # a row from before migration 0004 whose call is gone: written about when the call ended
            started_at=_utc(row.started_at or row.created_at),
        )
        try:
            ref = await asyncio.wait_for(self.crm.log_activity(act), self.push_timeout_s)
        except Exception as exc:
            attempts = (row.crm_attempts or 0) + 1
            err = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if _refused(exc):
                err = REFUSED + err
            delay = backoff_s(attempts, self.retry_base_s, self.retry_max_s, self.jitter)
            self._next_try[call_id] = self.clock.monotonic() + delay
            async with self.engine.begin() as conn:
                await conn.execute(
                    activities.update()
                    .where(activities.c.call_id == call_id)
                    .values(crm_attempts=attempts, crm_error=err[:2000])
                )
            log.warning(
                "crm_activity_push_failed",
                call_id=call_id,
                attempts=attempts,
                retry_in_s=round(delay, 2),
                error=err,
            )
            return SyncResult(False, error=err)
        self._next_try.pop(call_id, None)
        now = self.clock.now()
        async with self.engine.begin() as conn:
            # crm_synced_at set = the CRM has this version; every local change clears it
            await conn.execute(
                activities.update()
                .where(activities.c.call_id == call_id)
                .values(
                    crm_ref=str(ref),
                    crm_synced_at=now,
                    crm_attempts=(row.crm_attempts or 0) + 1,
                    crm_error=None,
                )
            )
        log.info("crm_activity_pushed", call_id=call_id, crm_ref=str(ref))
        return SyncResult(True, crm_ref=str(ref))

    async def pending(self, limit: int | None = None) -> list[str]:
        """Call ids whose activity the CRM does not have (in its latest version), oldest first."""
        q = pending_query(self.tenant, self.max_refusals)
        async with self.engine.connect() as conn:
            return list((await conn.execute(q if limit is None else q.limit(limit))).scalars())

    async def retry_due(self) -> int:
        """One pass: push up to `retry_per_pass` pending activities whose backoff has elapsed,
        oldest first; returns how many went through."""
        now = self.clock.monotonic()
        # rows still in backoff come back too: read enough that they cannot crowd out due ones
        waiting = sum(1 for t in self._next_try.values() if t > now)
        done = tried = 0
        for call_id in await self.pending(self.retry_per_pass + waiting):
            if tried >= self.retry_per_pass:
                break
            if self._next_try.get(call_id, 0.0) > now:
                continue
            tried += 1
            if (await self.sync(call_id)).ok:
                done += 1
        return done

    async def run_retries(self) -> None:
        """Long-running: retry pending pushes until cancelled (one bad row never stops the loop)."""
        while True:
            try:
                await self.retry_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("crm_retry_pass_failed")
            await self.clock.sleep(self.poll_s)
