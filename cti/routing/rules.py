"""Declarative priority rules (`[[priority_rules]]` name / when / boost).

A VIP is not a flag someone sets by hand: it is a rule over CRM data, computed
when the caller is looked up, e.g.

    [[priority_rules]]
    name = "vip"
    when = "account.won_amount_24m >= 50000 or contact.role in ['CEO', 'CFO']"
    boost = 50

`apply_rules` returns the total boost and the names of the rules that matched;
the names travel with the call (decision, pop, stats) so a supervisor can see
*why* a call jumped the queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cti.routing.expr import Expr, compile_expr


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    when: Expr
    boost: int


def compile_rules(rules: Iterable[Any]) -> tuple[Rule, ...]:
    """Compile `PriorityRuleSettings` (or objects/dicts with name, when, boost). Raises ExprError."""
    out: list[Rule] = []
    for r in rules:
        if isinstance(r, Rule):
            out.append(r)
            continue
        get = r.get if isinstance(r, Mapping) else (lambda k, d=None, r=r: getattr(r, k, d))
        out.append(Rule(str(get("name")), compile_expr(str(get("when"))), int(get("boost", 10) or 0)))
    return tuple(out)


def flatten(fields: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """{"account": {"won_amount_24m": 1}} -> {"account.won_amount_24m": 1}; dotted keys are kept."""
    out: dict[str, Any] = {}
    if not fields:
        return out
    for k, v in fields.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def contact_env(contact: Any | None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Names a rule can read for a `cti.model.Contact` (or None): contact.*, account.*, plus extras.

    `contact.fields` may hold nested dicts or dotted keys; keys without a dot are
    read as `contact.<key>`.
    """
    env: dict[str, Any] = {}
    if contact is not None:
        for attr in ("id", "name", "first_name", "last_name", "email", "role", "owner", "kind"):
            env[f"contact.{attr}"] = getattr(contact, attr, None)
        env["account.id"] = getattr(contact, "account_id", None)
        env["account.name"] = getattr(contact, "account_name", None)
        for k, v in flatten(getattr(contact, "fields", None) or {}).items():
            env[k if "." in k else f"contact.{k}"] = v
    env.update(flatten(extra))
    return env


def apply_rules(rules: Iterable[Rule | Any], contact_fields: Mapping[str, Any] | None) -> tuple[int, list[str]]:
    """Total boost and matched rule names for this caller's CRM data (nested or dotted keys)."""
    compiled = rules if isinstance(rules, tuple) and all(isinstance(r, Rule) for r in rules) else \
        compile_rules(rules)
    env = flatten(contact_fields)
    boost = 0
    reasons: list[str] = []
    for rule in compiled:
        if rule.when.test(env):
            boost += rule.boost
            reasons.append(rule.name)
    return boost, reasons
