"""Screen pop: when a call rings at an agent, tell their browser who is calling.

`ScreenPop.on_event(CallEvent)` is fed every call event. On `ringing` (with an
agent) it looks the customer's number up in the CRM through `CachedLookup` (bounded
by a timeout: a slow CRM never delays the pop), builds the `screen_pop` message of
docs/api.md and hands it to `publish`. Each pop is built in its own task, so one
caller's slow lookup or history query never holds up another caller's pop
(`drain()` waits for them; `close()` cancels them). If the lookup was still pending
it publishes the same pop again with `"update": true` once the CRM answers. The same
ringing event twice pops once; a leg answered elsewhere or stopped meanwhile gets no
stale pop. `pops_for(agent)` lists the pops of ringing/active calls for the WebSocket
snapshot; pops are dropped when the agent's leg stops ringing or the call ends.
The last calls shown come from the local store, cached briefly and invalidated when
a call with that customer ends or its activity changes (`invalidate_history`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from cti import phone
from cti.crm.base import contact_view
from cti.crm.cache import FAILED, OK, PENDING, CachedLookup
from cti.crm.store import local_history
from cti.model import CallEvent, Contact, Direction, EventKind
from cti.recent import RecentIds
from cti.store.db import autocommit_reads

log = structlog.get_logger(__name__)

Rules = Callable[[Contact | None], tuple[int, list[str]]]
Publish = Callable[[dict[str, Any]], Awaitable[None]]

SEEN_TTL_S = 120.0  # duplicate ringing and late events of ended calls come seconds late, not minutes

_PLACEHOLDER = re.compile(r"\{\s*([A-Za-z_][\w]*)\.([A-Za-z_][\w.]*)\s*\}")


def _consume_exception(task: asyncio.Task[Any]) -> None:
    # a background history query that failed after its pop went out: logged, not "never retrieved"
    if not task.cancelled() and task.exception() is not None:
        log.warning("screen_pop_history_failed", error=str(task.exception()))


def no_rules(_: Contact | None) -> tuple[int, list[str]]:
    return 0, []


def rules_from_settings(settings: Any) -> Rules:
    """Adapter from `[[priority_rules]]` to the pop's `rules` callable (cti.routing.rules)."""
    if not getattr(settings, "priority_rules", None):
        return no_rules
    from cti.routing.rules import apply_rules, compile_rules, contact_env

    compiled = compile_rules(settings.priority_rules)
    return lambda c: apply_rules(compiled, contact_env(c))


def _as_callable(rules: Any) -> Rules:
    """Accept the callable, or compiled rules (`cti.routing.rules.compile_rules`) as they are."""
    if callable(rules):
        return rules
    from cti.routing.rules import apply_rules, contact_env

    compiled = tuple(rules)
    return lambda c: apply_rules(compiled, contact_env(c))


def fill_script(template: str | None, namespaces: dict[str, dict[str, Any]]) -> str | None:
    """Fill `{contact.first_name}`, `{agent.first_name}`, `{account.name}` ...

    Unknown or empty placeholders become "" (a script never fails to render); other
    braces are left alone.
    """
    if not template:
        return None

    def sub(m: re.Match[str]) -> str:
        v = namespaces.get(m.group(1).lower(), {}).get(m.group(2))
        return "" if v is None else str(v)

    return _PLACEHOLDER.sub(sub, template)


def customer_number(direction: Direction | None, from_number: str | None, to_number: str | None) -> str | None:
    """The number on the customer's side of the call."""
    return to_number if direction is Direction.OUTBOUND else from_number


class _PopIndex:
    """Pops by (call_id, agent), indexed by call and by agent: snapshots and per-call
    updates must not scan every pop of a busy site."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], dict[str, Any]] = {}
        self._by_call: dict[str, set[str]] = {}
        self._by_agent: dict[str, dict[str, dict[str, Any]]] = {}

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._by_key

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: tuple[str, str]) -> dict[str, Any] | None:
        return self._by_key.get(key)

    def __setitem__(self, key: tuple[str, str], msg: dict[str, Any]) -> None:
        call_id, agent = key
        self._by_key[key] = msg
        self._by_call.setdefault(call_id, set()).add(agent)
        self._by_agent.setdefault(agent, {})[call_id] = msg

    def __delitem__(self, key: tuple[str, str]) -> None:
        self.pop(key)

    def pop(self, key: tuple[str, str], default: Any = None) -> Any:
        msg = self._by_key.pop(key, None)
        if msg is None:
            return default
        call_id, agent = key
        agents = self._by_call.get(call_id)
        if agents is not None:
            agents.discard(agent)
            if not agents:
                del self._by_call[call_id]
        calls = self._by_agent.get(agent)
        if calls is not None:
            calls.pop(call_id, None)
            if not calls:
                del self._by_agent[agent]
        return msg

    def keys_for_call(self, call_id: str) -> list[tuple[str, str]]:
        return [(call_id, a) for a in sorted(self._by_call.get(call_id, ()))]

    def for_agent(self, agent: str) -> list[dict[str, Any]]:
        return list(self._by_agent.get(agent, {}).values())


@dataclass
class _CallInfo:
    tenant: str = "default"
    direction: Direction | None = None
    from_number: str | None = None
    to_number: str | None = None
    queue: str | None = None
    status: str | None = None  # lookup status once known
    matches: list[Contact] = field(default_factory=list)
    lookup_started: bool = False
    prefetched: bool = False
    # (history keys, last calls, last summary) read when the call arrived
    history: tuple[tuple[str, ...], list[dict[str, Any]], dict[str, Any] | None] | None = None
    stopped: set[str] = field(default_factory=set)  # agents whose leg stopped ringing
    answered_by: str | None = None


class ScreenPop:
    def __init__(
        self,
        crm_lookup: CachedLookup,
        engine: Any,
        settings: Any,
        *,
        publish: Publish,
        rules: Rules | None = None,
        history_limit: int = 5,
        history_ttl_s: float = 30.0,
        max_calls: int = 100_000,
        history_timeout_s: float = 0.0,
        history_concurrency: int = 4,
    ) -> None:
        self.lookup = crm_lookup
        self.engine = engine
        self._reads = autocommit_reads(engine)  # the last calls: one statement, no transaction
        self.settings = settings
        self.publish = publish
        self.rules = _as_callable(rules) if rules is not None else rules_from_settings(settings)
        self.history_limit = history_limit
        self.max_calls = max_calls
        self.history_timeout_s = history_timeout_s
        self._history_slots = asyncio.Semaphore(history_concurrency)
        self._history_waiting = 0
        self.history_queue_max = 4 * history_concurrency
        # Last calls are cached briefly: the history query is the slowest part of a pop.
        # Entries go when a call with that number ends (and for a while after, until its
        # activity is written) and when the activity writer reports a change.
        self.history_ttl_s = history_ttl_s
        self._hist: dict[tuple[str, ...], tuple[float, list[dict[str, Any]], dict[str, Any] | None]] = {}
        self._hist_index: dict[str, set[tuple[str, ...]]] = {}
        self._hist_dirty: dict[str, float] = {}
        self._hist_inflight: dict[tuple[str, ...], asyncio.Task[Any]] = {}
        self.region = settings.site.default_region
        self._agents = {a.id: a for a in settings.agents}
        self._queues = {q.name: q for q in settings.queues}
        self._calls: dict[str, _CallInfo] = {}
        self._pops = _PopIndex()  # (call_id, agent) -> last message sent
        self._popping: set[tuple[str, str]] = set()
        # ringing legs popped and calls ended, for a duplicate or a late event of a finished call
        self._seen = RecentIds(SEEN_TTL_S, 30_000, self.lookup.clock.monotonic)
        self._tasks: set[asyncio.Task[None]] = set()  # pending-lookup updates
        self._pop_tasks: set[asyncio.Task[None]] = set()  # pops being built
        self._late: dict[tuple[str, str], asyncio.Task[Any]] = {}  # history still on its way

    # ------------------------------------------------------------------ events

    async def on_event(self, ev: CallEvent) -> None:
        """Feed every call event; never raises on one bad event (the consumer loop goes on)."""
        try:
            await self._on_event(ev)
        except Exception:
            log.exception("screen_pop_event_failed", call_id=ev.call_id, kind=str(ev.kind))

    async def _on_event(self, ev: CallEvent) -> None:
        if ev.kind is EventKind.AGENT_STATE_CHANGED:
            return
        if ev.kind is EventKind.ENDED:
            self._remember(f"ended:{ev.call_id}")
            info = self._calls.get(ev.call_id)
            keys = [phone.normalize(customer_number(ev.direction, ev.from_number, ev.to_number), self.region)]
            if info is not None:
                keys += [self._number(info), *(m.id for m in info.matches)]
            self.invalidate_history(*keys, settle_s=10.0)
            self._forget(ev.call_id)
            return
        if f"ended:{ev.call_id}" in self._seen:
            return  # a late event of a finished call must not pop it again
        info = self._calls.get(ev.call_id)
        if info is None:
            if len(self._calls) >= self.max_calls:
                # a call whose end we never saw: forget the oldest rather than grow forever
                self._forget(next(iter(self._calls)))
            info = self._calls[ev.call_id] = _CallInfo()
        info.tenant = ev.tenant
        info.direction = ev.direction or info.direction
        info.from_number = ev.from_number or info.from_number
        info.to_number = ev.to_number or info.to_number
        info.queue = ev.queue or info.queue
        if ev.kind is EventKind.NO_ANSWER and ev.agent:
            info.stopped.add(ev.agent)
            self._pops.pop((ev.call_id, ev.agent), None)
        elif ev.kind is EventKind.ANSWERED and ev.agent:
            # ring-all: the others' phones stopped ringing, their pops go
            info.answered_by = ev.agent
            for key in self._pops.keys_for_call(ev.call_id):
                if key[1] != ev.agent:
                    del self._pops[key]
        elif ev.kind is EventKind.TRANSFERRED and ev.agent:
            info.stopped.add(ev.agent)
            self._pops.pop((ev.call_id, ev.agent), None)
        elif ev.kind in (EventKind.CREATED, EventKind.QUEUED) and not info.prefetched:
            info.prefetched = True
            self._spawn(self._prefetch(ev.call_id, info), self._tasks)
        elif ev.kind is EventKind.RINGING and ev.agent:
            key = (ev.call_id, ev.agent)
            if ev.event_id in self._seen or key in self._pops or key in self._popping:
                return  # the same ringing twice pops once
            self._remember(ev.event_id)
            self._popping.add(key)
            info.stopped.discard(ev.agent)  # rung again after a no-answer
            if self._pop_is_ready(info):
                # everything is in memory (looked up on arrival, or cached): built and sent
                # now, without a task's extra turn of the event loop
                await self._ringing(ev, info, key)
                return
            # otherwise in its own task: one caller's slow lookup never holds up the next
            # caller's pop (drain() waits for them)
            self._spawn(self._ringing(ev, info, key), self._pop_tasks)

    def _pop_is_ready(self, info: _CallInfo) -> bool:
        """True when the pop can be built without waiting: the caller's match is known (or
        there is nothing to look up) and the last calls are never waited for."""
        if self.history_timeout_s > 0:
            return False
        if info.status in (OK, FAILED):
            return True
        number = self._number(info)
        return number is None or not number.startswith("+") or self.lookup.cached(number) is not None

    def _spawn(self, coro: Any, into: set[asyncio.Task[None]]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        into.add(task)
        task.add_done_callback(into.discard)

    async def drain(self) -> None:
        """Wait until the pops of the events seen so far are published (tests, shutdown)."""
        while self._pop_tasks:
            await asyncio.gather(*list(self._pop_tasks), return_exceptions=True)

    def _follow_late_history(self, key: tuple[str, str]) -> None:
        late = self._late.pop(key, None)
        if late is not None:
            self._spawn(self._history_update(key, late), self._tasks)

    async def _history_update(self, key: tuple[str, str], late: asyncio.Task[Any]) -> None:
        """The last calls came after the pop: send it again with them."""
        try:
            rows, summary = await late
        except Exception:
            return
        msg = self._pops.get(key)
        if msg is None or (not rows and not summary):
            return
        msg = {**msg, "history": rows, "last_summary": summary, "update": True}
        self._pops[key] = msg
        await self.publish(msg)

    async def _prefetch(self, call_id: str, info: _CallInfo) -> None:
        """Look the caller up when the call arrives (IVR, queue), as contact-centre platforms
        do, not when it rings: by the time an agent's phone rings, the CRM match and the last
        calls are in memory and the pop is built without waiting on the CRM or the store."""
        try:
            number = self._number(info)
            if number is None or not number.startswith("+"):
                return
            status, matches, later = await self.lookup.lookup_fast(number)
            if later is not None:
                status, matches = await later
            if status != OK:
                return
            contact = matches[0] if len(matches) == 1 else None
            keys = self._history_keys(number, contact)
            # kept with the call, not only in the shared cache: it is valid for this call's pop
            # however long it queues and even while a previous call's activity is settling
            info.history = (keys, *await self._cached_history(keys, call_id, info.tenant))
        except Exception:  # a prefetch is an optimisation: the pop looks up again
            log.warning("screen_pop_prefetch_failed", call_id=call_id, exc_info=True)

    def _still_ringing(self, call_id: str, agent: str) -> bool:
        info = self._calls.get(call_id)
        return (
            info is not None and agent not in info.stopped and (info.answered_by is None or info.answered_by == agent)
        )

    async def _ringing(self, ev: CallEvent, info: _CallInfo, key: tuple[str, str]) -> None:
        try:
            number = self._number(info)
            later = None
            if info.status in (OK, FAILED):
                status, matches = info.status, info.matches  # another agent of a ring-all got it
            elif number is None or not number.startswith("+"):
                status, matches = OK, []  # anonymous / internal: nothing to look up
            else:
                status, matches, later = await self.lookup.lookup_fast(number)
            if status != PENDING:
                info.status, info.matches = status, matches
            msg = await self.build(ev.call_id, key[1], info, status, matches, update=False)
            if not self._still_ringing(*key):
                self._late.pop(key, None)
                return  # answered elsewhere, stopped ringing or ended while we looked up
            self._pops[key] = msg
        except Exception:
            log.exception("screen_pop_failed", call_id=ev.call_id, agent=key[1])
            return
        finally:
            self._popping.discard(key)
        await self.publish(msg)
        log.info("screen_pop_sent", call_id=ev.call_id, agent=key[1], lookup=status, matches=len(matches))
        self._follow_late_history(key)
        if later is not None and not info.lookup_started:
            info.lookup_started = True
            self._spawn(self._update_later(ev.call_id, later), self._tasks)

    async def _update_later(self, call_id: str, later: asyncio.Future[tuple[str, list[Contact]]]) -> None:
        status, matches = await later
        info = self._calls.get(call_id)
        if info is None:
            return
        info.status, info.matches = status, matches
        for cid, agent in self._pops.keys_for_call(call_id):
            try:
                msg = await self.build(call_id, agent, info, status, matches, update=True)
                if (cid, agent) not in self._pops:
                    continue
                self._pops[(cid, agent)] = msg
                await self.publish(msg)
                self._follow_late_history((cid, agent))
                log.info("screen_pop_updated", call_id=call_id, agent=agent, lookup=status, matches=len(matches))
            except Exception:
                log.exception("screen_pop_update_failed", call_id=call_id, agent=agent)

    # ------------------------------------------------------------------ message

    def _number(self, info: _CallInfo) -> str | None:
        return phone.normalize(customer_number(info.direction, info.from_number, info.to_number), self.region)

    async def build(
        self, call_id: str, agent: str, info: _CallInfo, status: str, matches: list[Contact], *, update: bool
    ) -> dict[str, Any]:
        number = self._number(info)
        contact = matches[0] if len(matches) == 1 else None
        history: list[dict[str, Any]] = []
        last_summary = None
        if number or contact:
            history, last_summary, late = await self._history(call_id, number, contact, info)
            if late is not None:
                self._late[(call_id, agent)] = late
        priority, reasons = self._priority(matches)
        agent_cfg = self._agents.get(agent)
        queue_cfg = self._queues.get(info.queue or "")
        script = fill_script(
            queue_cfg.script if queue_cfg else None, self._namespaces(contact, agent, agent_cfg, info, number)
        )
        from_number = info.from_number
        return {
            "type": "screen_pop",
            "tenant": info.tenant,
            "call_id": call_id,
            "agent": agent,
            "direction": str(info.direction) if info.direction else None,
            "from_number": from_number,
            "from_display": phone.display(from_number, self.region) if from_number else None,
            "to_number": info.to_number,
            "customer_number": number,
            "queue": info.queue,
            "lookup": status,
            "matches": [contact_view(c) for c in matches],
            "contact": contact_view(contact) if contact else None,
            "new_contact": {"phone": number}
            if status == OK and not matches and number and number.startswith("+")
            else None,
            "history": history,
            "last_summary": last_summary,
            "script": script,
            "priority": priority,
            "priority_reasons": reasons,
            "update": update,
        }

    def _history_keys(self, number: str | None, contact: Contact | None) -> tuple[str, ...]:
        return tuple(sorted(
            k
            for k in (
                contact.id if contact and contact.kind == "contact" else None,
                number if number and number.startswith("+") else None,
            )
            if k
        ))

    async def _history(
        self, call_id: str, number: str | None, contact: Contact | None, info: _CallInfo
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None, asyncio.Task[Any] | None]:
        """(last calls, last summary, None), or ([], None, task) when the store is slower than
        `history_timeout_s`: the pop goes without them and an update follows (`_late`).

        By default the pop never waits on the store: the last calls were read when the call
        arrived (prefetch) or are cached; a call that rings with nothing before it (a direct
        dial) pops at once and gets its last calls a few ms later, as a CRM record that is
        still loading does."""
        tenant = info.tenant
        try:
            keys = self._history_keys(number, contact)
            if info.history is not None and info.history[0] == keys:
                return info.history[1], info.history[2], None
            hit = self._history_hit(keys, call_id)
            if hit is not None:  # the common case once prefetched: no task, no timer
                return (*hit, None)
            # the last calls are a nicety: a busy store never holds the pop back. The query is
            # not cancelled on timeout (cancelling a database call mid-flight can wedge the
            # connection pool): it finishes in the background and fills the cache.
            task = asyncio.get_running_loop().create_task(self._cached_history(keys, call_id, tenant))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(_consume_exception)
            # no budget: not even one loop turn, where the query's own start (building and
            # sending the statement) would run before the pop
            done = (await asyncio.wait({task}, timeout=self.history_timeout_s))[0] if self.history_timeout_s > 0 else ()
            if not done:
                log.info("screen_pop_history_late", call_id=call_id, timeout_s=self.history_timeout_s)
                return [], None, task
            rows, summary = task.result()
            return rows, summary, None
        except Exception:
            log.exception("screen_pop_history_failed", call_id=call_id)
            return [], None, None

    def _history_hit(
        self, keys: tuple[str, ...], call_id: str
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None] | None:
        hit = self._hist.get(keys)
        if hit is None or hit[0] <= self.lookup.clock.monotonic():
            return None
        rows = [r for r in hit[1] if r["call_id"] != call_id]
        return rows[: self.history_limit], hit[2]

    async def _cached_history(
        self, keys: tuple[str, ...], call_id: str, tenant: str
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        hit = self._history_hit(keys, call_id)
        if hit is not None:
            return hit
        # the pops of a ring-all and the call's prefetch share one query
        shared = self._hist_inflight.get(keys)
        if shared is None:
            shared = asyncio.get_running_loop().create_task(self._query_history(keys, tenant))
            self._hist_inflight[keys] = shared
            self._tasks.add(shared)  # close() cancels it
            shared.add_done_callback(self._tasks.discard)
            shared.add_done_callback(_consume_exception)  # its waiters may all have gone
            shared.add_done_callback(lambda _t, k=keys: self._hist_inflight.pop(k, None))
        rows, summary = await asyncio.shield(shared)
        rows = [r for r in rows if r["call_id"] != call_id]
        return rows[: self.history_limit], summary

    async def _query_history(
        self, keys: tuple[str, ...], tenant: str
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        now = self.lookup.clock.monotonic()
        # one more row than shown, so the cached answer still has enough after excluding a call;
        # a few queries at a time: a burst of pops must not exhaust the store's connection pool
        if self._history_waiting >= self.history_queue_max:
            # the store is far behind: shed this query rather than pile work up (the pop
            # simply shows no last calls)
            log.warning("screen_pop_history_shed", waiting=self._history_waiting)
            return [], None
        self._history_waiting += 1
        try:
            await self._history_slots.acquire()
        finally:
            self._history_waiting -= 1
        try:
            rows, summary = await local_history(self._reads, list(keys), self.history_limit + 1, tenant=tenant)
        finally:
            self._history_slots.release()
        if self.history_ttl_s > 0 and not any(self._hist_dirty.get(k, 0.0) > now for k in keys):
            if len(self._hist) >= 50_000:
                self._hist.clear()
                self._hist_index.clear()
            self._hist.pop(keys, None)  # re-inserted at the end: the dict stays in expiry order
            self._hist[keys] = (now + self.history_ttl_s, rows, summary)
            for k in keys:
                self._hist_index.setdefault(k, set()).add(keys)
            self._drop_expired_history(now)
        return rows, summary

    def _drop_expired_history(self, now: float) -> None:
        """Expired entries go as new ones come (oldest first), so the cache holds about a TTL's
        worth of callers rather than filling up to its cap over hours."""
        while self._hist:
            keys, (expires, _rows, _summary) = next(iter(self._hist.items()))
            if expires > now:
                return
            del self._hist[keys]
            for k in keys:
                entries = self._hist_index.get(k)
                if entries is not None:
                    entries.discard(keys)
                    if not entries:
                        del self._hist_index[k]

    def invalidate_history(self, *keys: str | None, settle_s: float = 0.0) -> None:
        """Forget cached last calls for these numbers / contact ids (and do not cache them
        for `settle_s` seconds: the activity of a call that just ended is being written)."""
        now = self.lookup.clock.monotonic()
        for k in keys:
            if not k:
                continue
            for entry in self._hist_index.pop(k, ()):
                self._hist.pop(entry, None)
            if settle_s > 0:
                self._hist_dirty[k] = now + settle_s
        if len(self._hist_dirty) > 10_000:
            self._hist_dirty = {k: t for k, t in self._hist_dirty.items() if t > now}

    def _priority(self, matches: list[Contact]) -> tuple[int, list[str]]:
        try:
            if not matches:
                return self.rules(None)
            # several candidates: the caller is at least as important as the best of them
            return max((self.rules(c) for c in matches), key=lambda r: r[0])
        except Exception:
            log.exception("screen_pop_rules_failed")
            return 0, []

    def _namespaces(
        self, contact: Contact | None, agent: str, agent_cfg: Any, info: _CallInfo, number: str | None
    ) -> dict[str, dict[str, Any]]:
        agent_name = getattr(agent_cfg, "name", None) or agent
        first, _, last = agent_name.partition(" ")
        c = contact_view(contact) if contact else {}
        account: dict[str, Any] = {}
        if contact is not None:
            for k, v in contact.fields.items():
                ns, _, name = k.partition(".")
                if ns == "account" and name:
                    account[name] = v
                elif ns == "contact" and name:
                    c.setdefault(name, v)
            account.setdefault("name", contact.account_name)
            account.setdefault("id", contact.account_id)
        return {
            "contact": c,
            "account": account,
            "agent": {"id": agent, "name": agent_name, "first_name": first, "last_name": last},
            "caller": {"number": number, "display": phone.display(number, self.region) if number else None},
            "queue": {"name": info.queue},
        }

    # ------------------------------------------------------------------ state

    def reconfigure(self, settings: Any, rules: Any | None = None) -> None:
        """New scripts, queues, agents and VIP rules (a run-time routing change); pops in
        flight keep what they were built with."""
        self.settings = settings
        self.rules = _as_callable(rules) if rules is not None else rules_from_settings(settings)
        self._agents = {a.id: a for a in settings.agents}
        self._queues = {q.name: q for q in settings.queues}

    def pops_for(self, agent: str) -> list[dict[str, Any]]:
        """Pops of this agent's ringing/active calls (for the WebSocket snapshot)."""
        return self._pops.for_agent(agent)

    def pop_for(self, call_id: str, agent: str) -> dict[str, Any] | None:
        """The pop this agent has for this call, if any (O(1), for per-call views)."""
        return self._pops.get((call_id, agent))

    def match_for(self, call_id: str, contact_id: str) -> Contact | None:
        """One of the call's CRM matches, by id (what the chooser offered)."""
        info = self._calls.get(call_id)
        return next((c for c in (info.matches if info else []) if c.id == contact_id), None)

    async def attach_contact(self, call_id: str, contact: Contact) -> None:
        """The agent picked (chooser) or created (new-contact form) the caller: the pop is
        rebuilt for that contact (card, script, priority, history) and sent again with
        `"update": true`; later snapshots show it."""
        info = self._calls.get(call_id)
        if info is None:
            return
        info.status, info.matches = OK, [contact]
        for key in self._pops.keys_for_call(call_id):
            try:
                msg = await self.build(call_id, key[1], info, OK, [contact], update=True)
            except Exception:
                log.exception("screen_pop_attach_failed", call_id=call_id, agent=key[1])
                continue
            if key in self._pops:
                self._pops[key] = msg
                await self.publish(msg)
                self._follow_late_history(key)

    def _forget(self, call_id: str) -> None:
        self._calls.pop(call_id, None)
        for key in [k for k in self._late if k[0] == call_id]:
            del self._late[key]
        for key in self._pops.keys_for_call(call_id):
            del self._pops[key]

    def _remember(self, event_id: str) -> None:
        self._seen.add(event_id)

    async def close(self) -> None:
        tasks = [*self._tasks, *self._pop_tasks]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
