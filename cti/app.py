"""Wiring: build the components from the settings, own and supervise their tasks.

Event flow (all through the bus, so one process can become many nodes):

    adapters --EVENTS--> pipeline (group "store": fold -> calls table) --CALLS--> activity, stats, websockets
             \\--EVENTS--> router (group "routing-<node>": agent states, queue decisions -> commands)
             \\--EVENTS--> screen pop (group "pop": CRM lookup) --POPS--> websockets

Every long-lived task is started by `CtiApp.start()` under a supervisor that
logs a crash and restarts the task with backoff, and is cancelled and awaited
by `CtiApp.stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
import structlog

from cti.adapters.base import AdapterContext, Capability, Command, CommandResult, adapter_class
from cti.bus import Message, open_bus
from cti.bus import streams as S
from cti.calls.control import CallControl, ControlError, MonitorSession, RateLimiter
from cti.clock import Clock, SystemClock
from cti.config import Settings
from cti.gc_policy import freeze_loop, tune_gc
from cti.loop_lag import watch_loop_lag
from cti.metrics import Metrics
from cti.model import AgentState, Call, CallEvent, EventKind, Role
from cti.services import Services
from cti.store import tables as t
from cti.web.auth import Principal, TokenRecord, TokenStore, hash_token
from cti.web.common import load_call_row
from cti.web.ws import Hub
from cti.yielding import in_steps, step_aside

log = structlog.get_logger(__name__)

POP_DELIVERED_BY = "delivered_by"  # on the POPS stream: the node that pushed it to its own sockets


# ---- agent directory ---------------------------------------------------------------

class Directory:
    """Agents from the configuration plus their live state and calls (fed by events)."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.tenant = settings.site.tenant
        self.clock = clock
        self.agents = {a.id: a for a in settings.agents}
        self._state: dict[str, dict[str, Any]] = {
            a: {"state": AgentState.OFFLINE.value, "reason": None, "since": None} for a in self.agents
        }
        self._calls: dict[str, set[str]] = {}
        self._by_call: dict[str, set[str]] = {}  # call -> agents it rang or reached
        self.router: Any = None

    def team_of(self, agent: str | None) -> str | None:
        a = self.agents.get(agent or "")
        return a.team if a else None

    def endpoints_of(self, agent: str) -> dict[str, str]:
        a = self.agents.get(agent)
        return dict(a.endpoints) if a else {}

    def endpoint_index(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for a in self.agents.values():
            for ep in a.endpoints.values():
                out[ep] = a.id
        return out

    def state_of(self, agent: str) -> dict[str, Any]:
        if self.router is not None and agent in self.agents:
            try:
                view = self.router.agent_state(agent)
            except Exception:  # unknown to the router (config reload): fall back to events
                view = None
            if view is not None:
                since = self._state.get(agent, {}).get("since")
                return {"state": view["state"], "reason": view.get("reason"), "since": since}
        return dict(self._state.get(agent) or {"state": AgentState.OFFLINE.value, "reason": None, "since": None})

    def calls_of(self, agent: str) -> list[str]:
        return sorted(self._calls.get(agent, ()))

    def on_event(self, e: CallEvent) -> dict[str, Any] | None:
        """Track states and calls; returns an `agent_state` message when a state changed."""
        if e.kind is EventKind.AGENT_STATE_CHANGED and e.agent:
            st = {"state": e.data.get("state"), "reason": e.data.get("reason"), "since": e.occurred_at.isoformat()}
            self._state[e.agent] = st
            return {"type": "agent_state", "agent": e.agent, **st}
        if e.agent and e.kind in (EventKind.RINGING, EventKind.ANSWERED):
            self._calls.setdefault(e.agent, set()).add(e.call_id)
            self._by_call.setdefault(e.call_id, set()).add(e.agent)
        elif e.kind is EventKind.NO_ANSWER and e.agent:
            self._calls.get(e.agent, set()).discard(e.call_id)
            self._by_call.get(e.call_id, set()).discard(e.agent)
        elif e.kind in (EventKind.ENDED, EventKind.NO_ANSWER):
            # the call's agents from the reverse index: not a walk over every agent per ending
            for a in self._by_call.pop(e.call_id, ()):
                self._calls.get(a, set()).discard(e.call_id)
        return None


# ---- the application ----------------------------------------------------------------

def _node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _backoff(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    return min(cap, base * 2**attempt) * (0.5 + random.random() / 2)


# the match the activity went to is also the call's (stats list callers by contact): one
# statement per bus batch, for the calls still without a contact whose activity has one.
# `coalesce(...) = ''` rather than `IS NULL`: where most calls have a contact, PostgreSQL's
# statistics made `contact_id IS NULL` look rarer than a primary-key match and it walked
# ix_calls_contact_id over every unmatched call instead (seen with auto_explain); a
# non-indexable test leaves it the primary key. Unknown callers are not written at all.
def call_contact_from_activity(ended: Any = None) -> sa.Update:
    return (
        sa.update(t.calls)
        .where(
            t.calls.c.call_id.in_(sa.bindparam("ended", expanding=True) if ended is None else ended),
            t.calls.c.call_id == t.activities.c.call_id,
            sa.func.coalesce(t.calls.c.contact_id, "") == "",
            t.activities.c.contact_id.is_not(None),
        )
        .values(contact_id=t.activities.c.contact_id, account_id=t.activities.c.account_id)
    )


_CALL_CONTACT_FROM_ACTIVITY = call_contact_from_activity()

# Each agent state change ends that agent's open spell (read through ix_agent_state_log_open).
CLOSE_OPEN_SPELLS = (
    sa.update(t.agent_state_log)
    .where(t.agent_state_log.c.agent == sa.bindparam("b_agent"), t.agent_state_log.c.ended_at.is_(None),
           t.agent_state_log.c.started_at <= sa.bindparam("b_at"))
    .values(ended_at=sa.bindparam("b_at"))
)


PUMP_BATCH = 200  # provider events held between an adapter and the bus, and the most sent at once


def _take_queued(queue: asyncio.Queue[Any], batch: list[Any], limit: int) -> list[Any]:
    """Add what is already queued to `batch`, up to `limit` items in all, without waiting."""
    while not queue.empty() and len(batch) < limit:
        batch.append(queue.get_nowait())
    return batch


async def _take_batch(queue: asyncio.Queue[Any], limit: int) -> list[Any]:
    """Wait for one item, then take what else is already queued, up to `limit` in all."""
    return _take_queued(queue, [await queue.get()], limit)


class CtiApp:
    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        node_id: str | None = None,
        # gateway: providers, routing, pops, sockets, API; store: the store writers (event
        # fold, activities, stats, agent log); worker: transcription
        roles: tuple[str, ...] = ("gateway", "store"),
        migrate: bool = False,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.node_id = node_id or settings.server.node_id or _node_id()
        self.roles = roles
        self.migrate = migrate
        self.metrics = Metrics()
        self.directory = Directory(settings, self.clock)
        self.bus = open_bus(
            settings.bus.url,
            max_deliveries=settings.bus.max_deliveries,
            claim_idle_ms=settings.bus.claim_idle_ms,
            batch=settings.bus.batch,
            block_ms=settings.bus.block_ms,
            socket_timeout_s=settings.bus.socket_timeout_s,
            health_check_interval_s=settings.bus.health_check_interval_s,
        )
        self.tokens = TokenStore(self._config_tokens())
        self.hub = Hub(queue_max=settings.server.ws_queue_max, team_of=self.directory.team_of, metrics=self.metrics)
        self.adapters: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._decisions: asyncio.Queue[Any] = asyncio.Queue(10_000)
        self._pops_out: asyncio.Queue[dict[str, Any]] = asyncio.Queue(10_000)
        self._stopping = asyncio.Event()
        self.db: Any = None
        self.router: Any = None
        self.screen_pop: Any = None
        self.activity: Any = None
        self.stats: Any = None
        self.pipeline: Any = None
        self.services: Services | None = None
        self.web_app: Any = None
        self._routing_settings = settings
        self._live_last: str = ""
        self.active_calls: dict[str, dict[str, Any]] = {}  # call_id -> latest record, for live walls
        self.failed_auth = RateLimiter(settings.auth.failed_auth_per_minute)
        self._callbacks: dict[str, tuple[Any, str]] = {}  # id -> (CallbackRequest, last stored state)
        self.config_path: str | None = None  # set by `cti serve`, for SIGHUP reloads

    # ---- construction -----------------------------------------------------------
    def _config_tokens(self) -> list[TokenRecord]:
        out = []
        teams_all = frozenset(a.team for a in self.settings.agents if a.team)
        for tok in self.settings.auth.tokens:
            h = tok.token_sha256 or (hash_token(tok.token) if tok.token else None)
            if not h:
                continue
            teams = frozenset(tok.teams) if tok.teams != ["*"] else teams_all
            out.append(TokenRecord(Principal(tok.user, Role(tok.role), tok.tenant or self.settings.site.tenant,
                                             teams, h)))
        return out

    def _adapter_context(self) -> AdapterContext:
        queue_numbers: dict[str, str] = {}
        from cti.phone import normalize

        for q in self.settings.queues:
            for n in q.numbers:
                queue_numbers[n] = q.name
                e164 = normalize(n, self.settings.site.default_region)
                if e164:
                    queue_numbers[e164] = q.name
        return AdapterContext(
            tenant=self.settings.site.tenant,
            default_region=self.settings.site.default_region,
            clock=self.clock,
            agent_endpoints=self.directory.endpoint_index(),
            queue_numbers=queue_numbers,
            public_url=self.settings.server.public_url,
            storage_dir=self.settings.transcribe.storage,
        )

    def _build_adapters(self) -> None:
        ctx = self._adapter_context()
        for p in self.settings.providers:
            cls = adapter_class(p.type)
            adapter = cls(p, ctx)
            with contextlib.suppress(AttributeError):
                adapter.metrics = self.metrics
            self.adapters[p.name] = adapter

    async def _open_store(self) -> None:
        from cti.store.db import Database

        if self.migrate:
            from cti.store.migrate import upgrade_async

            await upgrade_async(self.settings.store.url)
        self.db = Database(self.settings.store.url)
        await self.db.connect()

    def _build_router(self) -> None:
        from cti.routing.acd import Router, crm_lookup
        from cti.routing.reservations import open_reservations

        self.router = Router(
            self._routing_settings,
            clock=self.clock,
            dispatch=self.dispatch,
            reservations=open_reservations(self.settings.bus.url),
            publish_event=self.publish_event,
            publish_events=self.publish_events,
            record_decision=self._record_decision,
            lookup=crm_lookup(self.lookup),
            node_id=self.node_id,
        )

    async def _record_decision(self, d: Any) -> None:
        """Each assignment's candidates, choice and reasons, for the call detail API.

        Queued for `_decision_writer`: the router awaits this between two offers, and one
        store round trip per decision capped routing far below the arrival rate under load.
        """
        try:
            self._decisions.put_nowait(d)
        except asyncio.QueueFull:
            log.warning("routing_decision_not_recorded", call_id=d.call_id, reason="writer_behind")

    async def _decision_writer(self) -> None:
        # lingers like the store writers: at 100 calls/s each write carried one or two
        # decisions, a transaction (and a pool checkout) per call for an audit record
        linger_s = self.settings.bus.store_linger_ms / 1000
        while True:
            batch = await _take_batch(self._decisions, 500)
            try:
                async with self.db.engine.begin() as conn:
                    await conn.execute(t.routing_decisions.insert(), [d.to_row() for d in batch])
                    for d in batch:
                        if d.priority or d.rules:
                            await conn.execute(sa.update(t.calls).where(t.calls.c.call_id == d.call_id).values(
                                priority=d.priority, priority_reason=", ".join(d.rules) or None))
            except Exception:  # the decisions are lost, routing goes on
                log.exception("routing_decisions_write_failed", decisions=len(batch))
            if linger_s > 0 and len(batch) < 500:
                await asyncio.sleep(linger_s)

    def _build_crm(self) -> None:
        from cti.crm import build_connector
        from cti.crm.cache import CachedLookup

        self.crm = build_connector(self.settings, self.db.engine)
        c = self.settings.crm
        self.lookup = CachedLookup(self.crm, self.clock, ttl=c.cache_ttl_s, negative_ttl=c.negative_ttl_s,
                                   timeout=c.lookup_timeout_s)

    def _build_screen_pop(self) -> None:
        from cti.routing.rules import compile_rules
        from cti.routing.screen_pop import ScreenPop

        rules = compile_rules(self._routing_settings.priority_rules)
        self.screen_pop = ScreenPop(self.lookup, self.db.engine, self._routing_settings,
                                    publish=self._publish_pop, rules=rules)

    def _build_activity(self) -> None:
        from cti.calls.activity import ActivityWriter

        pop = self.screen_pop
        self.activity = ActivityWriter(self.db.engine, self.crm, self.clock, tenant=self.settings.site.tenant,
                                       region=self.settings.site.default_region, lookup=self.lookup,
                                       retry_per_s=self.settings.crm.retry_per_s,
                                       on_change=pop.invalidate_history if pop is not None else None)

    def _build_stats(self) -> None:
        from cti.stats.aggregate import StatsRollup

        self.stats = StatsRollup(self.db.engine, self.settings)

    # ---- start / stop ---------------------------------------------------------------
    async def start(self) -> None:
        from cti.security.logs import protect_stdlib_loggers

        # library loggers (aiohttp's access log prints /ws?token=...) never see a secret
        protect_stdlib_loggers()
        log.info("app_starting", node=self.node_id, roles=list(self.roles), bus=self.settings.bus.url.split("@")[-1],
                 event_loop=type(asyncio.get_running_loop()).__module__.split(".")[0])
        await self.bus.start()
        await self._open_store()
        await self._load_db_tokens()
        gateway, store = "gateway" in self.roles, "store" in self.roles
        if gateway:
            self._build_adapters()
        if gateway or store:
            self._build_crm()
        if gateway:
            self._build_router()
            self.directory.router = self.router
            self._build_screen_pop()
        if gateway or store:
            self._build_activity()  # a gateway's wrap-up API writes activities too
        if store:
            self._build_stats()
            from cti.calls.pipeline import EventPipeline

            self.pipeline = EventPipeline(self.bus, self.db, consumer=self.node_id, metrics=self.metrics,
                                          linger_ms=self.settings.bus.store_linger_ms)
        self.control = CallControl(
            settings=self.settings,
            adapters=self.adapters,
            dispatch=self.dispatch,
            load_call=self.load_call,
            team_of=self.directory.team_of,
            endpoints_of=self.directory.endpoints_of,
            monitor_endpoint_of=self._monitor_endpoint_of,
            audit=self.audit,
            notify=self._notify_monitor,
        )
        self.services = Services(
            settings=self.settings, metrics=self.metrics, clock=self.clock, bus=self.bus, db=self.db,
            tokens=self.tokens, node_id=self.node_id, adapters=self.adapters, router=self.router,
            crm=getattr(self, "crm", None), screen_pop=self.screen_pop, control=self.control, hub=self.hub,
            extra={
                "directory": self.directory,
                "set_agent_state": self.set_agent_state,
                "routing_settings": lambda: self._routing_settings,
                "live": self.live_snapshot,
                "wrap_up": self.wrap_up,
                "audit": self.audit,
                "snapshot": self.ws_snapshot,
                "readiness": self.readiness,
                "refresh_metrics": self.refresh_metrics,
                "failed_auth_limit": self.failed_auth,
                "app": self,
                "routing_config": self.routing_config,
                "reconfigure": self.reconfigure,
            },
        )
        if "gateway" in self.roles:
            for name, adapter in self.adapters.items():
                await adapter.start()
                self._spawn(f"adapter-pump-{name}", lambda a=adapter, n=name: self._pump(n, a))
                self._spawn(f"commands-{name}", lambda n=name: self.bus.consume(
                    S.commands(n), "cmd", self.node_id, self._on_commands))
            self._spawn("routing", lambda: self.bus.consume(S.EVENTS, f"routing-{self.node_id}", self.node_id,
                                                            self._on_routing_events))
            self._spawn("screen-pop", lambda: self.bus.consume(S.EVENTS, "pop", self.node_id, self._on_pop_events))
            self._spawn("pops-publisher", self._pops_publisher)
            self._spawn("ws-calls", lambda: self.bus.consume(S.CALLS, f"ws-{self.node_id}", self.node_id,
                                                             self._on_calls_ws, from_start=False))
            self._spawn("ws-pops", lambda: self.bus.consume(S.POPS, f"ws-{self.node_id}", self.node_id,
                                                            self._on_pops_ws, from_start=False))
            self._spawn("router-loop", self._router_loop)
            self._spawn("live", self._live_loop)
            self._spawn("decision-writer", self._decision_writer)
        if "store" in self.roles:
            self._spawn_store_writers()
        if self.settings.transcribe.enabled and ("worker" in self.roles or "gateway" in self.roles):
            self._start_transcription()
        from cti.web.server import build_web_app

        extra_routes = []
        for adapter in self.adapters.values():
            if hasattr(adapter, "routes"):
                extra_routes.append(adapter.routes())
        self.web_app = build_web_app(self.services, extra_routes)
        tune_gc()
        self._spawn("gc-freeze", freeze_loop)
        self._spawn("loop-lag", lambda: watch_loop_lag(self.metrics))
        log.info("app_started", node=self.node_id, adapters=list(self.adapters))

    def _spawn_store_writers(self) -> None:
        """The consumer groups that write the store; any number of processes may share them."""
        self._spawn("pipeline", self.pipeline.run)
        # an outage delays their entries, it must not dead-letter them
        linger = self.settings.bus.store_linger_ms
        self._spawn("activity", lambda: self.bus.consume(
            S.CALLS, "activity", self.node_id, self._outage_tolerant("activity", self._on_calls_activity),
            linger_ms=linger))
        self._spawn("stats", lambda: self.bus.consume(S.CALLS, "stats", self.node_id,
                                                      self._outage_tolerant("stats", self._on_calls_stats),
                                                      linger_ms=linger))
        self._spawn("agent-log", lambda: self.bus.consume(S.EVENTS, "agent-log", self.node_id,
                                                          self._outage_tolerant("agent-log", self._on_agent_log_events),
                                                          linger_ms=linger))
        if hasattr(self.activity, "run_retries"):
            self._spawn("crm-retries", self.activity.run_retries)

    def _start_transcription(self) -> None:
        from cti.transcribe.worker import RecordingIngest, TranscriptionWorker

        if "gateway" in self.roles:
            # a consumer name per node: two gateways named alike would share one pending list
            ingest = RecordingIngest(self.bus, self.db.engine, self.settings, consumer=self.node_id)
            self._spawn("recording-ingest", ingest.run)
        if "worker" not in self.roles and not self.settings.transcribe.gateway_worker:
            return  # dedicated `cti worker`s transcribe; this gateway only ingests recordings
        worker = TranscriptionWorker(self.bus, self.db.engine, self.settings, consumer=self.node_id,
                                     crm=getattr(self, "crm", None), metrics=self.metrics,
                                     lease_s=self.settings.transcribe.lease_s)
        self._spawn("transcription-worker", worker.run)

    async def stop(self) -> None:
        self._stopping.set()
        log.info("app_stopping", node=self.node_id)
        await self.hub.close_all()
        for task in self._tasks:
            task.cancel()
        # bounded: a task that swallows its cancellation must not hold the shutdown forever
        _done, stuck = await asyncio.wait(self._tasks, timeout=self.settings.server.shutdown_grace_s) \
            if self._tasks else (set(), set())
        for task in stuck:
            log.warning("task_did_not_stop", task=task.get_name())
        self._tasks.clear()
        for adapter in self.adapters.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(adapter.stop(), 10)
        for closable in (self.screen_pop, getattr(self, "lookup", None), getattr(self, "crm", None)):
            if closable is not None and hasattr(closable, "close"):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(closable.close(), 5)
        with contextlib.suppress(Exception):
            await self.bus.close()
        if self.db is not None:
            with contextlib.suppress(Exception):
                await self.db.close()
        log.info("app_stopped", node=self.node_id)

    def _outage_tolerant(self, stage: str, handler: Callable[[list[Message]], Awaitable[None]]
                         ) -> Callable[[list[Message]], Awaitable[None]]:
        """The handler, retried here with backoff while the store is unreachable.

        The bus retries a failing entry `max_deliveries` times within milliseconds and then
        dead-letters it: right for a poison entry, wrong for a store restart (the activity
        of every call ending meanwhile would be lost). Transient errors (connection refused
        or reset, OperationalError: `is_transient`) hold the batch until the store is back;
        any other error still goes to the bus. Handlers are idempotent (at-least-once).
        """
        from cti.store.db import is_transient

        async def run(batch: list[Message]) -> None:
            attempt = 0
            while True:
                try:
                    await handler(batch)
                    return
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    delay = _backoff(attempt, base=0.2, cap=5.0)
                    attempt += 1
                    log.warning("store_unavailable", stage=stage, attempt=attempt, retry_in_s=round(delay, 2),
                                error=repr(exc)[:200])
                    await asyncio.sleep(delay)

        return run

    def _spawn(self, name: str, factory: Callable[[], Awaitable[Any]]) -> None:
        async def supervised() -> None:
            attempt = 0
            while not self._stopping.is_set():
                try:
                    await factory()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("task_crashed", task=name, attempt=attempt)
                    await asyncio.sleep(_backoff(attempt))
                    attempt += 1

        self._tasks.append(asyncio.create_task(supervised(), name=name))

    # ---- adapters -> bus ------------------------------------------------------------
    async def _pump(self, name: str, adapter: Any) -> None:
        """Adapter -> bus. What arrived while the last publish was on its way goes out in one
        round trip (at 200 calls/s, a thousand XADDs a second became a few hundred batches)."""
        counter = self.metrics.events_in.labels(name)
        waiting: asyncio.Queue[CallEvent] = asyncio.Queue(maxsize=PUMP_BATCH)

        async def take() -> None:
            # a full queue holds the adapter back (its own queue buffers meanwhile)
            async for event in adapter.events():
                counter.inc()
                await waiting.put(event)

        reader = asyncio.create_task(take(), name=f"adapter-read-{name}")
        getter: asyncio.Future[CallEvent] | None = None
        batch: list[CallEvent] = []
        try:
            while True:
                if waiting.empty():
                    if reader.done():
                        reader.result()  # the adapter's stream ended or failed (after all it gave went out)
                        return
                    getter = asyncio.ensure_future(waiting.get())
                    await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()  # a cancelled get leaves its item in the queue
                        continue
                    batch.append(getter.result())
                    getter = None
                await self._publish_held(name, _take_queued(waiting, batch, PUMP_BATCH))
                batch = []
        finally:
            reader.cancel()
            if getter is not None and not getter.done():
                getter.cancel()  # not left pending when the pump stops
            elif getter is not None and not getter.cancelled():
                batch.append(getter.result())  # taken from the queue just as we were stopped
            # taken from the adapter but not yet on the bus: one last try, then they are lost
            # as the adapter's own queue is on a stop (a provider replays on reconnect)
            rest = _take_queued(waiting, batch, len(batch) + waiting.qsize())
            if rest:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.bus.publish_many(S.EVENTS, [e.to_dict() for e in rest]), 1.0)

    async def _publish_held(self, name: str, batch: list[CallEvent]) -> None:
        # the adapter will not yield these events again: hold them (and the adapter, whose
        # queue buffers meanwhile) until the bus takes them, however long the bus is down
        items = [e.to_dict() for e in batch]
        attempt = 0
        while True:
            try:
                await self.bus.publish_many(S.EVENTS, items)
                return
            except Exception as exc:
                delay = _backoff(attempt, base=0.2, cap=5.0)
                attempt += 1
                log.warning("event_publish_retry", provider=name, attempt=attempt, retry_in_s=round(delay, 2),
                            error=repr(exc)[:200])
                await asyncio.sleep(delay)

    async def publish_event(self, event: CallEvent) -> None:
        await self.bus.publish(S.EVENTS, event.to_dict())

    async def publish_events(self, events: list[CallEvent]) -> None:
        await self.bus.publish_many(S.EVENTS, [e.to_dict() for e in events])

    async def dispatch(self, provider: str, command: Command) -> CommandResult:
        adapter = self.adapters.get(provider)
        if adapter is not None:
            return await adapter.execute(command)
        # another node holds this provider: hand the command over through the bus
        from dataclasses import asdict

        await self.bus.publish(S.commands(provider), {"name": command.name, "type": type(command).__name__,
                                                      "args": asdict(command)})
        return CommandResult(ok=True, detail={"queued": True})

    async def _on_commands(self, batch: list[Message]) -> None:
        import cti.adapters.base as base

        for m in batch:
            cls = getattr(base, m.data.get("type", ""), None)
            provider = m.stream.split(":", 1)[1]
            if cls is None or provider not in self.adapters:
                log.warning("command_rejected", entry=m.id, data=str(m.data)[:200])
                continue
            args = m.data.get("args", {})
            if "targets" in args:
                args["targets"] = tuple(tuple(x) for x in args["targets"])
            try:
                await self.adapters[provider].execute(cls(**args))
            except Exception as exc:  # a command that fails is reported, not retried forever
                log.warning("remote_command_failed", provider=provider, command=m.data.get("name"), error=str(exc))

    # ---- consumers --------------------------------------------------------------------
    @staticmethod
    def _events(batch: list[Message]) -> list[CallEvent]:
        out = []
        for m in batch:
            try:
                out.append(CallEvent.from_dict(m.data))
            except ValueError:
                continue  # the pipeline dead-letters it; other consumers just skip
        return out

    async def _on_routing_events(self, batch: list[Message]) -> None:
        events = self._events(batch)
        await self._prefetch_callers(events)
        routed: list[CallEvent] = []
        for e in events:
            msg = self.directory.on_event(e)
            if msg is not None:
                self.hub.to_agent(e.tenant, e.agent or "", msg, watchers=True)
            if self.router is None:
                continue
            if e.kind is EventKind.AGENT_STATE_CHANGED:
                routed.append(e)
            elif e.provider in self.adapters:
                # providers that ring their agent themselves (a SIP line) are not queued by us,
                # but their ringing/answered/ended facts still keep agent states right
                if e.kind is EventKind.QUEUED and Capability.CONNECT not in self.adapters[e.provider].capabilities:
                    continue
                routed.append(e)
        if routed and self.router is not None:
            await self.router.on_events(routed)

    async def _prefetch_callers(self, events: list[CallEvent]) -> None:
        """Look up a batch's new callers at once: the router awaits each queued call's CRM match in
        turn, and one store round trip per call, in series, capped routing below the arrival rate.
        The lookups land in the CRM cache the router then reads; past the timeout it routes without."""
        numbers = {e.from_number for e in events
                   if e.kind is EventKind.QUEUED and e.from_number and e.provider in self.adapters}
        lookup = getattr(self, "lookup", None)
        if len(numbers) < 2 or lookup is None:
            return
        tasks = [asyncio.ensure_future(lookup.lookup(n)) for n in numbers]
        for task in tasks:  # a failed lookup is the router's to report, when it asks again
            task.add_done_callback(lambda tk: tk.cancelled() or tk.exception())
        await asyncio.wait(tasks, timeout=self.settings.crm.lookup_timeout_s)

    async def _on_agent_log_events(self, batch: list[Message]) -> None:
        """agent_state_log: one row per state spell (time per state, occupancy, logged-in time).

        One transaction and three statements per bus batch, whatever its size: a select of the
        batch's already-logged event ids, one executemany UPDATE closing the stored open spells
        (in batch order, as before) and one executemany INSERT of the new spells, whose own
        ends inside the batch are computed here. Per change select+update+insert (3-4 changes
        per call) was most of the store work at 200 calls/s.
        """
        # most events are call events: skip them before parsing (this consumer sees them all)
        mine = [m for m in batch if isinstance(m.data, dict) and m.data.get("kind") == EventKind.AGENT_STATE_CHANGED]
        changes = [e for e in self._events(mine) if e.agent]
        if not changes:
            return
        c = t.agent_state_log.c
        async with self.db.engine.begin() as conn:
            ids = list({e.event_id for e in changes})
            seen: set[str] = set()
            for i in range(0, len(ids), 500):  # bounded IN lists
                seen.update((await conn.execute(sa.select(c.event_id).where(c.event_id.in_(ids[i:i + 500])))).scalars())
            fresh: list[CallEvent] = []
            for e in changes:
                if e.event_id not in seen:  # redelivered (or twice in this batch): already logged
                    seen.add(e.event_id)
                    fresh.append(e)
            if not fresh:
                return
            # the stored spells each change ends (the first change, in batch order, that comes after them)
            await conn.execute(CLOSE_OPEN_SPELLS, [{"b_agent": e.agent, "b_at": e.occurred_at} for e in fresh])
            # the batch's own spells: ended by the first later change of that agent starting after them
            rows = []
            for k, e in enumerate(fresh):
                ended = next((n.occurred_at for n in fresh[k + 1:]
                              if n.agent == e.agent and e.occurred_at <= n.occurred_at), None)
                rows.append({"event_id": e.event_id, "tenant": e.tenant, "agent": e.agent,
                             "state": e.data.get("state") or "offline", "reason": e.data.get("reason"),
                             "started_at": e.occurred_at, "ended_at": ended})
            await conn.execute(t.agent_state_log.insert(), rows)

    async def _on_pop_events(self, batch: list[Message]) -> None:
        events = self._events(batch)
        last = len(events) - 1
        for i, e in enumerate(events):
            await self.screen_pop.on_event(e)
            if i < last and e.kind is EventKind.RINGING:
                # the socket writer of the pop just queued runs before the next event is
                # worked on: a burst of ringing phones would otherwise hold every pop of the
                # batch until the last one is built
                await asyncio.sleep(0)

    async def _publish_pop(self, message: dict[str, Any]) -> None:
        # the agent's sockets on this node get the pop at once, without a round trip through
        # the bus; the bus carries it to the other nodes (an agent may be signed in on any),
        # and this node's consumer skips what it delivered already
        agent = message.get("agent")
        if agent:
            self.hub.to_agent(message.get("tenant") or self.settings.site.tenant, agent, message)
        # queued for one publisher task, in order: the screen pop goes on with the next event
        # at once instead of waiting a Redis round trip per pop
        try:
            self._pops_out.put_nowait({**message, POP_DELIVERED_BY: self.node_id})
        except asyncio.QueueFull:
            log.warning("pop_not_forwarded", call_id=message.get("call_id"), reason="publisher_behind")

    async def _pops_publisher(self) -> None:
        """Forward this node's pops to the other nodes (POPS stream), many per round trip."""
        while True:
            batch = await _take_batch(self._pops_out, 500)
            while True:
                try:
                    await self.bus.publish_many(S.POPS, batch)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:  # the bus is down: keep them (in order) until it is back
                    log.warning("pops_publish_failed", pops=len(batch), exc_info=True)
                    await asyncio.sleep(0.5)

    async def _on_pops_ws(self, batch: list[Message]) -> None:
        for m in batch:
            d = m.data
            if d.get(POP_DELIVERED_BY) == self.node_id:
                continue
            agent = d.get("agent")
            if agent:
                msg = {k: v for k, v in d.items() if k != POP_DELIVERED_BY}
                self.hub.to_agent(d.get("tenant") or self.settings.site.tenant, agent, msg)

    async def _on_calls_ws(self, batch: list[Message]) -> None:
        async for m in in_steps(batch):  # a batch of updates to many agents: not all in one step
            call = m.data.get("call") or {}
            if call.get("state") == "ended":
                self.active_calls.pop(call.get("call_id"), None)
                # monitoring sessions live on the node that started them: every node closes its own
                if self.control.monitors:
                    await self.control.on_call_ended(Call.from_dict(call))
            elif call.get("call_id"):
                self.active_calls[call["call_id"]] = call
            agent = call.get("agent")
            tenant = call.get("tenant") or self.settings.site.tenant
            msg = {"type": "call_update", "call": call}
            if agent:
                self.hub.to_agent(tenant, agent, msg, watchers=True)
            else:
                self.hub.to_watchers(tenant, msg)
            if call.get("state") == "ended" and agent and call.get("outcome") == "answered":
                wrap_s = self._wrap_up_seconds(call.get("queue"))
                until = (self.clock.now() + timedelta(seconds=wrap_s)).isoformat()
                self.hub.to_agent(tenant, agent, {
                    "type": "wrap_up", "call_id": call.get("call_id"), "agent": agent, "until": until,
                    "dispositions": list(self._routing_settings.dispositions),
                })

    def _wrap_up_seconds(self, queue: str | None) -> float:
        for q in self._routing_settings.queues:
            if q.name == queue:
                return float(getattr(q, "wrap_up_s", 30.0))
        return 30.0

    async def _on_calls_activity(self, batch: list[Message]) -> None:
        records = [Call.from_dict(call) for m in batch
                   if (call := m.data.get("call")) and call.get("state") == "ended"]
        if not records:
            return
        await step_aside()
        await self.activity.on_calls(records)
        ended = [r.call_id for r in records]
        async with self.db.engine.begin() as conn:
            await conn.execute(_CALL_CONTACT_FROM_ACTIVITY, {"ended": ended})

    async def _on_calls_stats(self, batch: list[Message]) -> None:
        # one transaction (two statements) per bus batch, not per ended call: a burst of
        # endings otherwise queued hundreds of small transactions behind each other
        ended = [Call.from_dict(call) for m in batch
                 if (call := m.data.get("call")) and call.get("state") == "ended"]
        if ended:
            await step_aside()
            await self.stats.apply_batch(ended)

    async def _router_loop(self) -> None:
        if self.router is None:
            return
        run = getattr(self.router, "run", None)
        if run is not None:
            await run()
            return
        while True:
            await self.router.tick()
            await self.clock.sleep(0.25)

    # ---- live dashboards ------------------------------------------------------------------
    def live_snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = {}
        if self.router is not None:
            try:
                snap = dict(self.router.snapshot())
            except Exception:
                log.exception("router_snapshot_failed")
        agents = []
        for a in self.directory.agents.values():
            st = self.directory.state_of(a.id)
            agents.append({"id": a.id, "name": a.name, "team": a.team, **st, "calls": self.directory.calls_of(a.id)})
        snap.setdefault("queues", [])
        snap["agent_states"] = snap.get("agents") if isinstance(snap.get("agents"), dict) else {}
        snap["agents"] = agents
        snap["calls"] = [self._with_contact(c) for c in
                         sorted(self.active_calls.values(), key=lambda c: c.get("created_at") or "")]
        snap["at"] = self.clock.now().isoformat()
        return snap

    def _with_contact(self, call: dict[str, Any]) -> dict[str, Any]:
        """The CRM name the agent's pop shows, for the supervisors' call wall."""
        agent = call.get("agent")
        if not agent or self.screen_pop is None:
            return call
        pop = self.screen_pop.pop_for(call.get("call_id"), agent)
        c = pop.get("contact") if pop else None
        if not c:
            return call
        return {**call, "contact": {"id": c.get("id"), "name": c.get("name"), "account_name": c.get("account_name")}}

    async def _sync_callbacks(self) -> None:
        """Persist callback requests (stats count requested/done). The routing engine mutates its
        CallbackRequest objects in place, so holding them lets us see their final state even
        after the engine let go of the waiting item."""
        engine = getattr(self.router, "engine", None)
        if engine is None:
            return
        for item in list(engine.items.values()):
            cb = getattr(item, "callback", None)
            if cb is not None and cb.id not in self._callbacks:
                self._callbacks[cb.id] = (cb, "")
        changed = [(cid, cb) for cid, (cb, last) in self._callbacks.items() if cb.state != last]
        if not changed:
            return
        c = t.callbacks.c
        async with self.db.engine.begin() as conn:
            for cid, cb in changed:
                row = cb.to_row()
                res = await conn.execute(sa.update(t.callbacks).where(c.id == cid).values(**row))
                if res.rowcount == 0:
                    await conn.execute(t.callbacks.insert().values(**row))
        for cid, cb in changed:
            if cb.state in ("done", "failed"):
                self._callbacks.pop(cid, None)
            else:
                self._callbacks[cid] = (cb, cb.state)

    async def _live_loop(self) -> None:
        import json

        while True:
            await asyncio.sleep(0.5)
            try:
                await self._sync_callbacks()
            except Exception:  # the store may be restarting: next tick
                log.warning("callbacks_sync_failed", exc_info=True)
            if not self.hub.has_watchers():
                continue  # nobody watches: do not rebuild the wall
            snap = self.live_snapshot()
            key = json.dumps({k: v for k, v in snap.items() if k != "at"}, sort_keys=True, default=str)
            if key != self._live_last:
                self._live_last = key
                self.hub.to_watchers(self.settings.site.tenant, {"type": "live", **snap})

    # ---- services used by the API ----------------------------------------------------------
    async def load_call(self, call_id: str, viewer: str | None = None) -> Call | None:
        """The stored call. With `viewer`: a call on that user's screen whose row the store has
        not written yet is waited for (`load_call_row`; 503 if it never comes)."""
        async def fetch() -> Call | None:
            async with self.db.engine.connect() as conn:
                row = (await conn.execute(sa.select(t.calls).where(t.calls.c.call_id == call_id))).first()
            return Call.from_dict(dict(row._mapping)) if row else None

        pop = self.screen_pop
        on_screen = bool(viewer) and pop is not None and pop.pop_for(call_id, viewer) is not None
        return await load_call_row(fetch, on_screen=on_screen)

    def _monitor_endpoint_of(self, user: str) -> str | None:
        a = self.directory.agents.get(user)
        if a is None:
            return None
        if a.monitor_endpoint:
            return a.monitor_endpoint
        return next(iter(a.endpoints.values()), None)

    async def set_agent_state(self, agent: str, state: str, reason: str | None) -> dict[str, Any]:
        from cti.routing import InvalidTransition, UnknownAgent

        try:
            await self.router.set_agent_state(agent, AgentState(state), reason)
        except UnknownAgent:
            raise ControlError(404, f"agent {agent} not found") from None
        except InvalidTransition as exc:
            current = getattr(exc, "current", None)
            current = getattr(current, "value", current)
            raise ControlError(409, f"cannot go from {current} to {state}", current=str(current)) from None
        except ValueError as exc:  # e.g. away without a reason
            raise ControlError(422, str(exc), field="reason") from None
        st = self.directory.state_of(agent)
        st.update({"state": state, "reason": reason})
        return st

    # ---- run-time configuration (queues, skills, strategies, rules, scripts, dispositions) ----------
    ROUTING_SECTIONS = ("queues", "agents", "priority_rules", "dispositions")

    def routing_config(self) -> dict[str, Any]:
        d = self._routing_settings.model_dump()
        return {k: d[k] for k in self.ROUTING_SECTIONS}

    async def reconfigure(self, sections: dict[str, Any], actor: Principal | None = None) -> dict[str, Any]:
        """Apply new routing sections at run time, whole or not at all.

        Calls in progress keep going (the router carries them over); a bad change raises
        ControlError(422) with every problem and the running configuration stays.
        """
        from pydantic import ValidationError

        from cti.config import ConfigError, Settings
        from cti.routing.queues import validate_routing_config
        from cti.routing.rules import compile_rules

        unknown = set(sections) - set(self.ROUTING_SECTIONS)
        if unknown:
            raise ControlError(422, f"only {', '.join(self.ROUTING_SECTIONS)} can change at run time; "
                                    f"not {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
        try:
            new = Settings.model_validate({**self._routing_settings.model_dump(), **sections})
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise ControlError(422, f"{loc}: {err['msg']}", field=loc) from None
        errors = validate_routing_config(new)
        if errors:
            raise ControlError(422, "; ".join(errors), problems=errors)
        try:
            self.router.reconfigure(new)
        except ConfigError as exc:
            raise ControlError(422, str(exc)) from None
        self._routing_settings = new
        self.directory.agents = {a.id: a for a in new.agents}
        if self.screen_pop is not None:
            self.screen_pop.reconfigure(new, compile_rules(new.priority_rules))
        await self.audit(actor, "routing_reconfigured", None,
                         {"queues": len(new.queues), "agents": len(new.agents), "rules": len(new.priority_rules)})
        return {"ok": True, "queues": [q.name for q in new.queues], "agents": len(new.agents)}

    async def reload(self) -> bool:
        """SIGHUP: re-read the config file and apply its routing sections (nothing else changes
        without a restart). A bad file is logged and refused whole."""
        from cti.config import ConfigError, load_settings

        if not self.config_path:
            log.warning("reload_ignored", reason="no config file")
            return False
        try:
            fresh = load_settings(self.config_path)
            d = fresh.model_dump()
            await self.reconfigure({k: d[k] for k in self.ROUTING_SECTIONS})
        except (ConfigError, ControlError) as exc:
            log.error("reload_refused", file=str(self.config_path), error=str(exc))
            return False
        log.info("reload_applied", file=str(self.config_path))
        return True

    async def wrap_up(self, p: Principal, call_id: str, disposition: str | None, notes: str | None) -> dict[str, Any]:
        call = await self.load_call(call_id, p.user)
        if call is None or not p.can_control_call(call.agent, self.directory.team_of(call.agent), call.tenant):
            raise ControlError(404, "call not found")
        async with self.db.engine.begin() as conn:
            await conn.execute(sa.update(t.calls).where(t.calls.c.call_id == call_id)
                               .values(disposition=disposition, notes=notes))
        await self.activity.wrap_up(call_id, disposition, notes)
        if call.agent:
            with contextlib.suppress(Exception):
                await self.router.end_wrap_up(call.agent)
        return {"ok": True, "call_id": call_id, "disposition": disposition}

    async def audit(self, p: Principal | None, action: str, target: str | None, detail: dict[str, Any]) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(t.audit_log.insert().values(
                tenant=p.tenant if p else self.settings.site.tenant, at=self.clock.now(),
                actor=p.user if p else "system", action=action, target=target, detail=detail))
        log.info("audit", action=action, actor=p.user if p else "system", target=target)

    async def _notify_monitor(self, tenant: str, session: MonitorSession, *, active: bool) -> None:
        now = self.clock.now()
        async with self.db.engine.begin() as conn:
            row = (await conn.execute(sa.select(t.monitor_sessions.c.modes)
                                      .where(t.monitor_sessions.c.id == session.id))).first()
            if row is None:
                await conn.execute(t.monitor_sessions.insert().values(
                    id=session.id, tenant=tenant, call_id=session.call_id, supervisor=session.supervisor,
                    agent=session.agent, endpoint=session.endpoint, mode=session.mode,
                    modes=[{"mode": session.mode, "at": now.isoformat()}],
                    provider_session=session.provider_session, started_at=now))
            else:
                modes = list(row.modes or [])
                values: dict[str, Any] = {"mode": session.mode}
                if active:
                    modes.append({"mode": session.mode, "at": now.isoformat()})
                else:
                    values["ended_at"] = now
                values["modes"] = modes
                await conn.execute(sa.update(t.monitor_sessions)
                                   .where(t.monitor_sessions.c.id == session.id).values(**values))
        msg = {"type": "monitor", "call_id": session.call_id, "agent": session.agent, "supervisor": session.supervisor,
               "mode": session.mode, "active": active, "session_id": session.id}
        self.hub.to_user(tenant, session.supervisor, msg)
        show = session.mode in ("whisper", "barge", "takeover") or self.settings.security.show_listen_to_agent
        if session.agent and (show or not active):
            self.hub.to_user(tenant, session.agent, msg)

    async def ws_snapshot(self, p: Principal) -> dict[str, Any]:
        from cti.web.api import agent_view, call_row_view, contact_names

        c = t.calls.c
        q = sa.select(t.calls).where(c.tenant == p.tenant, t.CALL_OPEN)
        if p.role is Role.AGENT:
            # an agent sees only their own calls: no walk over the directory, which made a shift's
            # sign-in storm quadratic (2,000 agents connecting = 4 million visibility checks)
            q = q.where(c.agent == p.user)
        elif p.role is not Role.ADMIN:
            visible = [a.id for a in self.directory.agents.values()
                       if p.can_see_agent(a.id, a.team, p.tenant)]
            q = q.where(c.agent.in_(visible))
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(q.limit(500))).all()
            names = await contact_names(conn, {r.contact_id for r in rows if r.contact_id})
        pops = self.screen_pop.pops_for(p.user) if self.screen_pop is not None else []
        return {
            "type": "snapshot",
            "me": {"user": p.user, "role": p.role.value, "teams": sorted(p.teams), "tenant": p.tenant},
            "agent": agent_view(self.services, p.user),
            "calls": [call_row_view(r, names) for r in rows],
            "pops": pops,
            "live": self.live_snapshot() if p.can_monitor() else None,
            "monitors": [vars(s) for s in self.control.monitors.values()
                         if s.agent == p.user or s.supervisor == p.user],
        }

    async def readiness(self) -> dict[str, bool]:
        checks: dict[str, bool] = {}
        try:
            checks["bus"] = bool(await asyncio.wait_for(self.bus.ping(), 2))
        except Exception:
            checks["bus"] = False
        try:
            checks["store"] = bool(await asyncio.wait_for(self.db.ping(), 2))
        except Exception:
            checks["store"] = False
        for name, adapter in self.adapters.items():
            checks[f"provider:{name}"] = bool(adapter.ready)
        return checks

    async def refresh_metrics(self) -> None:
        with contextlib.suppress(Exception):
            for stream, group in ((S.EVENTS, "store"), (S.CALLS, "activity"), (S.CALLS, "stats")):
                self.metrics.bus_lag.labels(stream, group).set(await self.bus.lag(stream, group))
        self.metrics.calls_active.set(sum(len(self.directory.calls_of(a)) for a in self.directory.agents))
        self.metrics.heap_blocks.set(sys.getallocatedblocks())

    async def _load_db_tokens(self) -> None:
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(t.api_tokens))).all()
        for r in rows:
            self.tokens.add(TokenRecord(
                Principal(r.user, Role(r.role), r.tenant, frozenset(r.teams or []), r.token_sha256),
                expires_at=r.expires_at, revoked=r.revoked))
