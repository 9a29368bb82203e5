"""Routing: screen-pop lookup (screen_pop.py) and skill-based ACD.

Public surface of the ACD (import from the submodules or from here):

- `Router` (acd.py): the runtime - `on_event`, `tick`/`run`, `set_agent_state`, `snapshot`,
  `decisions_for`, `reconfigure`, `request_callback`, `agent_state`, `agents`.
- `validate_routing_config(settings) -> list[str]`, `compile_routing(settings)` (queues.py).
- `Engine`, `CallIn` (engine.py): the pure decision core; `Decision`, `Candidate` (decision.py).
- `transition`, `InvalidTransition`, `UnknownAgent` (states.py): agent state table.
- `compile_expr`, `compile_skills`, `ExprError` (expr.py); `apply_rules`, `compile_rules` (rules.py);
  `parse_hours` (hours.py); `MemoryReservations`, `RedisReservations` (reservations.py).
"""

from cti.routing.acd import Router
from cti.routing.decision import Candidate, Decision
from cti.routing.engine import CallIn, Engine
from cti.routing.expr import ExprError, compile_expr, compile_skills
from cti.routing.hours import HoursError, parse_hours
from cti.routing.queues import compile_routing, validate_routing_config
from cti.routing.reservations import MemoryReservations, RedisReservations
from cti.routing.rules import apply_rules, compile_rules
from cti.routing.states import InvalidTransition, UnknownAgent, transition

__all__ = [
    "CallIn", "Candidate", "Decision", "Engine", "ExprError", "HoursError", "InvalidTransition",
    "MemoryReservations", "RedisReservations", "Router", "UnknownAgent", "apply_rules", "compile_expr",
    "compile_routing", "compile_rules", "compile_skills", "parse_hours", "transition", "validate_routing_config",
]
