"""Routing configuration: validated and compiled once (expressions, hours, entry numbers).

`validate_routing_config(settings)` lists every problem, each naming the queue
(or rule) and what is wrong; the app refuses to start (or a reload is refused)
when the list is not empty. `compile_routing(settings)` raises `ConfigError`
with those messages, or returns a `RoutingConfig` the engine can use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from cti.config import ConfigError, Settings
from cti.routing.expr import Expr, ExprError, compile_expr, compile_skills
from cti.routing.hours import Hours, HoursError, parse_hours
from cti.routing.rules import Rule
from cti.routing.strategies import STRATEGIES

OVERFLOW_ACTIONS = ("voicemail", "callback")


@dataclass(frozen=True, slots=True)
class AgentConfig:
    id: str
    name: str
    team: str | None
    skills: Mapping[str, int]
    endpoints: Mapping[str, str]
    capacity: int
    order: int  # position in the configuration (linear / ring-all hunt order, tie-breaks)


@dataclass(frozen=True, slots=True)
class QueueConfig:
    name: str
    numbers: tuple[str, ...]
    aliases: tuple[str, ...]
    requires: Expr
    widened: Expr | None          # requires OR overflow.widen (only ever wider)
    strategy: str
    priority: int
    ring_timeout_s: float
    max_wait_s: float
    max_length: int | None
    widen_after_s: float | None   # when the requirement widens
    then: str | None              # voicemail | callback | queue:<name> | None
    then_after_s: float | None    # when `then` happens (after_s, or max_wait_s when widening first)
    overflow_target: str | None
    callback_prompt: str | None
    hours: Hours
    preferred_agent_s: float
    wrap_up_s: float
    service_level_s: float
    script: str | None
    dispositions: tuple[str, ...]
    skill_names: frozenset[str]   # skills best_skill scores on
    index: int


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    tenant: str
    tz: ZoneInfo
    agents: tuple[AgentConfig, ...]
    queues: tuple[QueueConfig, ...]
    rules: tuple[Rule, ...]
    by_number: Mapping[str, str] = field(default_factory=dict)   # DID / extension -> queue
    by_alias: Mapping[str, str] = field(default_factory=dict)    # provider queue / IVR choice -> queue

    def queue(self, name: str) -> QueueConfig | None:
        for q in self.queues:
            if q.name == name:
                return q
        return None


def _expr_errors(where: str, what: str, text: str | None, known_skills: set[str] | None,
                 skills: bool) -> tuple[Expr | None, list[str]]:
    if text is None:
        return None, []
    try:
        e = compile_skills(text) if skills else compile_expr(text)
    except ExprError as exc:
        return None, [f"{where}: {what} {text!r} does not parse: {exc}"]
    errs: list[str] = []
    if skills and known_skills is not None:
        for name in sorted(e.names - known_skills):
            errs.append(f"{where}: {what} uses unknown skill {name!r} (no agent has it)")
    return e, errs


def _build(settings: Settings) -> tuple[RoutingConfig | None, list[str]]:
    errors: list[str] = []
    agents: list[AgentConfig] = []
    seen_agents: set[str] = set()
    for i, a in enumerate(settings.agents):
        if a.id in seen_agents:
            errors.append(f"agent {a.id!r}: defined twice")
        seen_agents.add(a.id)
        if a.capacity < 1:
            errors.append(f"agent {a.id!r}: capacity must be at least 1, not {a.capacity}")
        agents.append(AgentConfig(a.id, a.name, a.team, dict(a.skills), dict(a.endpoints), max(1, a.capacity), i))
    known_skills: set[str] | None = {s for a in settings.agents for s in a.skills} if settings.agents else None

    names = [q.name for q in settings.queues]
    queues: list[QueueConfig] = []
    by_number: dict[str, str] = {}
    by_alias: dict[str, str] = {}
    seen: set[str] = set()
    for idx, q in enumerate(settings.queues):
        where = f"queue {q.name!r}"
        if not q.name.strip():
            errors.append(f"queue #{idx + 1}: empty name")
        if q.name in seen:
            errors.append(f"{where}: defined twice")
        seen.add(q.name)
        req, errs = _expr_errors(where, "requires", q.requires or "", known_skills, skills=True)
        errors += errs
        if q.strategy not in STRATEGIES:
            errors.append(f"{where}: unknown strategy {q.strategy!r} (one of {', '.join(sorted(STRATEGIES))})")
        if q.ring_timeout_s <= 0:
            errors.append(f"{where}: ring_timeout_s must be positive, not {q.ring_timeout_s}")
        if q.max_wait_s <= 0:
            errors.append(f"{where}: max_wait_s must be positive, not {q.max_wait_s}")
        if q.max_length is not None and q.max_length < 0:
            errors.append(f"{where}: max_length must be 0 or more, not {q.max_length}")
        if q.preferred_agent_s < 0 or q.wrap_up_s < 0:
            errors.append(f"{where}: preferred_agent_s and wrap_up_s must be 0 or more")
        try:
            hours = parse_hours(q.hours, q.holidays)
        except HoursError as exc:
            errors.append(f"{where}: hours: {exc}")
            hours = parse_hours(None)
        for num in q.numbers:
            if num in by_number and by_number[num] != q.name:
                errors.append(f"{where}: number {num!r} also enters queue {by_number[num]!r}")
            by_number.setdefault(num, q.name)
        for alias in (q.name, *q.aliases):
            if alias in by_alias and by_alias[alias] != q.name:
                errors.append(f"{where}: alias {alias!r} also names queue {by_alias[alias]!r}")
            by_alias.setdefault(alias, q.name)

        widened: Expr | None = None
        widen_after = then_after = None
        then = target = prompt = None
        ov = q.overflow
        if ov is not None:
            if ov.after_s <= 0:
                errors.append(f"{where}: overflow.after_s must be positive, not {ov.after_s}")
            w, errs = _expr_errors(where, "overflow.widen", ov.widen, known_skills, skills=True)
            errors += errs
            then, target, prompt = ov.then, ov.target, ov.prompt
            if then is not None and then not in OVERFLOW_ACTIONS:
                if then.startswith("queue:"):
                    other = then[len("queue:"):]
                    if other == q.name:
                        errors.append(f"{where}: overflow.then sends calls to the same queue")
                    elif other not in names:
                        errors.append(f"{where}: overflow.then names unknown queue {other!r}")
                else:
                    errors.append(f"{where}: unknown overflow.then {then!r} "
                                  "(voicemail, callback or queue:<name>)")
            if w is not None and req is not None:
                base, extra = req, w
                widened = Expr(f"({base.source or 'true'}) or ({extra.source})", base.names | extra.names,
                               lambda env, b=base.fn, e=extra.fn: bool(b(env)) or bool(e(env)))
                widen_after = ov.after_s
                if then is not None:
                    then_after = max(ov.after_s, q.max_wait_s)
            elif then is not None:
                then_after = ov.after_s
        if req is None:
            continue
        queues.append(QueueConfig(
            name=q.name, numbers=tuple(q.numbers), aliases=tuple(q.aliases), requires=req, widened=widened,
            strategy=q.strategy, priority=q.priority, ring_timeout_s=q.ring_timeout_s, max_wait_s=q.max_wait_s,
            max_length=q.max_length, widen_after_s=widen_after, then=then, then_after_s=then_after,
            overflow_target=target, callback_prompt=prompt, hours=hours,
            preferred_agent_s=q.preferred_agent_s, wrap_up_s=q.wrap_up_s, service_level_s=q.service_level_s,
            script=q.script, dispositions=tuple(q.dispositions),
            skill_names=frozenset(req.names | (widened.names if widened else frozenset())), index=idx,
        ))

    rules: list[Rule] = []
    seen_rules: set[str] = set()
    for r in settings.priority_rules:
        where = f"priority rule {r.name!r}"
        if r.name in seen_rules:
            errors.append(f"{where}: defined twice")
        seen_rules.add(r.name)
        e, errs = _expr_errors(where, "when", r.when, None, skills=False)
        errors += errs
        if e is not None:
            rules.append(Rule(r.name, e, r.boost))
    if errors:
        return None, errors
    return RoutingConfig(settings.site.tenant, ZoneInfo(settings.site.timezone), tuple(agents), tuple(queues),
                         tuple(rules), by_number, by_alias), []


def validate_routing_config(settings: Settings) -> list[str]:
    """Every routing problem in `settings`, one message each naming the queue/rule/agent."""
    return _build(settings)[1]


def compile_routing(settings: Settings) -> RoutingConfig:
    """Compile, or raise ConfigError listing every problem (the running config is untouched)."""
    cfg, errors = _build(settings)
    if errors or cfg is None:
        raise ConfigError("invalid routing configuration:\n  " + "\n  ".join(errors))
    return cfg


def resolve_queue(cfg: RoutingConfig, *, queue: str | None, to_number: str | None,
                  data: Mapping[str, Any] | None = None) -> str | None:
    """Which queue a call enters: the provider's queue / IVR choice, else the dialled number."""
    for key in (queue, (data or {}).get("ivr_choice"), (data or {}).get("queue")):
        if key and str(key) in cfg.by_alias:
            return cfg.by_alias[str(key)]
    if to_number and to_number in cfg.by_number:
        return cfg.by_number[to_number]
    return None
