"""The event pipeline: bus `events` -> store (call_events, calls) -> bus `calls`.

Per batch, in one transaction: insert the events (idempotent on event_id), fold
each touched call and upsert its row; after the commit publish a `call_update`
per touched call. Folding uses an in-memory `CallFolder`; a call it does not
know (first event since start, evicted after it ended, or a redelivered batch
whose events it has already seen) is loaded from the store first, so the record
is always the fold of every stored event of the call.

Failure handling:
- an event that does not parse (or does not fit the columns) is rejected alone:
  logged as `event_rejected`, counted, and published to `events:dead`; the rest
  of the batch goes on;
- a store that is unreachable or locked is retried here with backoff (logged
  as `store_unavailable`), so an outage delays events but never dead-letters them;
- any other error is raised: the bus retries the batch entry by entry and
  dead-letters the entry that keeps failing. The folder is rebuilt from the store
  after a failed batch, so it never holds an event that was not committed.
Redelivery is harmless: inserts are idempotent and the call row is recomputed
from all stored events; its `call_update` is published again (consumers are
idempotent).

Several nodes may share the group (events of one call then reach different
nodes): each batch locks its calls (PostgreSQL advisory transaction locks, in a
fixed order; SQLite has a single writer anyway) and trusts its in-memory fold
only when it covers exactly as many events as the store holds for the call;
otherwise it reloads the call from the store.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from typing import Any

import structlog

from cti.bus import Bus, Message, streams
from cti.bus.base import DEAD_SUFFIX
from cti.calls.repo import CallRepo
from cti.calls.state import CallFolder
from cti.metrics import Metrics
from cti.model import Call, CallEvent, EventKind
from cti.store.db import Database, is_transient
from cti.yielding import step_aside

log = structlog.get_logger(__name__)

# column widths of call_events / calls (cti.store.tables): reject, do not truncate
_LIMITS = {
    "event_id": 64, "call_id": 64, "tenant": 64, "provider": 64, "provider_call_id": 128,
    "agent": 64, "queue": 64, "from_number": 32, "to_number": 32,
}


def parse_event(data: Any) -> CallEvent:
    """A bus entry as a CallEvent; ValueError naming the bad field otherwise."""
    if not isinstance(data, dict):
        raise ValueError(f"call event must be a JSON object, got {type(data).__name__}")
    e = CallEvent.from_dict(data)
    # fast path first (one expression); find the culprit only when something is wrong
    if (
        e.event_id and e.call_id
        and len(e.event_id) <= 64 and len(e.call_id) <= 64 and len(e.tenant) <= 64
        and len(e.provider) <= 64 and len(e.provider_call_id) <= 128
        and (e.agent is None or (type(e.agent) is str and len(e.agent) <= 64))
        and (e.queue is None or (type(e.queue) is str and len(e.queue) <= 64))
        and (e.from_number is None or (type(e.from_number) is str and len(e.from_number) <= 32))
        and (e.to_number is None or (type(e.to_number) is str and len(e.to_number) <= 32))
    ):
        return e
    for name, width in _LIMITS.items():
        v = getattr(e, name)
        if v is not None and not isinstance(v, str):
            raise ValueError(f"call event field {name!r} must be a string")
        if v is not None and len(v) > width:
            raise ValueError(f"call event field {name!r} is longer than {width} characters")
    raise ValueError("call event has an empty event_id or call_id")


@dataclass
class PipelineStats:
    batches: int = 0
    events: int = 0            # parsed events handled (duplicates included)
    rejected: int = 0          # unparseable events sent to events:dead
    skipped: int = 0           # agent_state_changed: not a call fact
    calls_written: int = 0     # call rows upserted
    updates_published: int = 0
    reloads: int = 0           # calls loaded from the store before folding
    store_retries: int = 0
    failed_batches: int = 0


class EventPipeline:
    def __init__(
        self,
        bus: Bus,
        db: Database,
        *,
        consumer: str,
        group: str = "store",
        metrics: Metrics | None = None,
        folder: CallFolder | None = None,
        max_store_backoff_s: float = 10.0,
        linger_ms: int = 0,
    ) -> None:
        self.bus = bus
        self.linger_ms = linger_ms
        self.db = db
        self.repo = CallRepo(db)
        self.consumer = consumer
        self.group = group
        self.metrics = metrics
        self.folder = folder or CallFolder()
        self.max_store_backoff_s = max_store_backoff_s
        self.stats = PipelineStats()

    async def run(self) -> None:
        """Consume `events` until cancelled."""
        log.info("pipeline_started", group=self.group, consumer=self.consumer)
        await self.bus.consume(streams.EVENTS, self.group, self.consumer, self.handle, linger_ms=self.linger_ms)

    async def handle(self, batch: list[Message]) -> None:
        """Process one batch of bus entries (the bus handler; also used by benchmarks)."""
        self.stats.batches += 1
        events: list[CallEvent] = []
        for m in batch:
            try:
                e = parse_event(m.data)
            except ValueError as exc:
                await self._reject(m, exc)
                continue
            if e.kind is EventKind.AGENT_STATE_CHANGED:
                self.stats.skipped += 1
                continue
            events.append(e)
        if not events:
            return
        self.stats.events += len(events)
        await step_aside()
        try:
            changed = await self._store(events)
        except BaseException:
            # what the folder saw may not be committed: rebuild it from the store
            self.folder = CallFolder(self.folder.keep_ended)
            self.stats.failed_batches += 1
            raise
        if changed:
            await step_aside()
            updates = [{"type": "call_update", "call": c.to_dict()} for c in changed]
            await step_aside()
            await self.bus.publish_many(streams.CALLS, updates)
            self.stats.updates_published += len(changed)

    async def _reject(self, m: Message, exc: ValueError) -> None:
        provider = m.data.get("provider") if isinstance(m.data, dict) else None
        snippet = json.dumps(m.data, default=str)[:200]
        log.warning("event_rejected", provider=provider, entry=m.id, error=str(exc), snippet=snippet)
        self.stats.rejected += 1
        if self.metrics is not None:
            self.metrics.events_failed.labels(stage="pipeline").inc()
        await self.bus.publish(
            streams.EVENTS + DEAD_SUFFIX,
            {"entry": m.id, "group": self.group, "data": m.data, "error": str(exc), "deliveries": m.deliveries},
        )

    async def _store(self, events: list[CallEvent]) -> list[Call]:
        attempt = 0
        while True:
            try:
                return await self._store_once(events)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self.folder = CallFolder(self.folder.keep_ended)
                delay = random.uniform(0.05, min(self.max_store_backoff_s, 0.1 * 2**attempt))
                attempt += 1
                self.stats.store_retries += 1
                log.warning(
                    "store_unavailable", attempt=attempt, retry_in_s=round(delay, 2), error=repr(exc)[:300]
                )
                await asyncio.sleep(delay)

    async def _store_once(self, events: list[CallEvent]) -> list[Call]:
        results: dict[str, Call] = {}
        by_call: dict[str, list[CallEvent]] = {}
        for e in events:
            by_call.setdefault(e.call_id, []).append(e)
        async with self.db.engine.begin() as conn:
            # several nodes may consume the same group: serialize work on the same call
            await self.repo.lock_calls(by_call, conn=conn)
            await self.repo.insert_events(events, conn=conn)
            stored_counts = await self.repo.count_events(by_call, conn=conn)
            # calls the folder knows: fold in memory (once per call per batch), trusted only
            # if it folded exactly the events the store has (another node may have added some)
            for cid, evs in by_call.items():
                if self.folder.known(cid):
                    call = self.folder.add_many(evs)
                    if call is not None and call.events == stored_counts.get(cid):
                        results[cid] = call
            # the others (unknown, stale, or a redelivery whose events were all seen) from the store
            reload = [cid for cid in by_call if cid not in results]
            if reload:
                # every batch event is stored now, so when the store holds as many events of
                # the call as the batch does, they are the same events: no need to read them
                first_seen = {
                    cid for cid in reload if stored_counts.get(cid) == len({e.event_id for e in by_call[cid]})
                }
                to_load = [cid for cid in reload if cid not in first_seen]
                self.stats.reloads += len(to_load)
                stored = await self.repo.load_events(to_load, conn=conn) if to_load else {}
                for cid in first_seen:
                    stored[cid] = []
                for cid in reload:
                    batch_ids = {e.event_id for e in by_call[cid]}
                    self.folder.load(cid, [e for e in stored[cid] if e.event_id not in batch_ids])
                    call = self.folder.add_many(by_call[cid])
                    if call is not None:
                        results[cid] = call
            changed = list(results.values())
            # the fold and the rows' parameters are the batch's two biggest loop steps: apart
            await step_aside()
            await self.repo.upsert_calls(changed, conn=conn)
        self.stats.calls_written += len(changed)
        return changed
