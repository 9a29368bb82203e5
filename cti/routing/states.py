"""Agent states: the pure transition table.

    offline  -> available | away
    available-> ringing | on_call | away | offline
    ringing  -> on_call | available | away | offline     (no answer: back to available)
    on_call  -> wrap_up | available | on_call            (blended: more than one call)
    wrap_up  -> available | away | offline | on_call     (a follow-up call from wrap-up)
    away     -> available | offline | away (new reason) | on_call (click-to-call while away)

Everything else (e.g. wrap_up -> ringing, offline -> on_call) raises
`InvalidTransition(current, target)`; the HTTP API answers 409 with the current
state. Call events are facts, though: the router applies what the PBX reports
even when the table would refuse it (and logs it), because the phone rang
whether we agreed or not.
"""

from __future__ import annotations

from cti.model import AgentState

S = AgentState

TRANSITIONS: dict[AgentState, frozenset[AgentState]] = {
    S.OFFLINE: frozenset({S.OFFLINE, S.AVAILABLE, S.AWAY}),
    S.AVAILABLE: frozenset({S.AVAILABLE, S.RINGING, S.ON_CALL, S.AWAY, S.OFFLINE}),
    S.RINGING: frozenset({S.RINGING, S.ON_CALL, S.AVAILABLE, S.AWAY, S.OFFLINE}),
    S.ON_CALL: frozenset({S.ON_CALL, S.WRAP_UP, S.AVAILABLE}),
    S.WRAP_UP: frozenset({S.WRAP_UP, S.AVAILABLE, S.AWAY, S.OFFLINE, S.ON_CALL}),
    S.AWAY: frozenset({S.AWAY, S.AVAILABLE, S.OFFLINE, S.ON_CALL}),
}

# states an agent (or supervisor) may ask for; ringing / on_call only come from calls
MANUAL_TARGETS = frozenset({S.AVAILABLE, S.AWAY, S.OFFLINE, S.WRAP_UP})


class InvalidTransition(Exception):
    """The agent cannot go from `current` to `target` (the API answers 409 with `current`)."""

    def __init__(self, current: AgentState, target: AgentState | str | None = None, detail: str = "") -> None:
        self.current = current
        self.target = target
        msg = f"cannot change agent state from {current} to {target}"
        super().__init__(msg + (f": {detail}" if detail else ""))


class UnknownAgent(KeyError):
    """No such agent (the API answers 404)."""

    def __init__(self, agent: str) -> None:
        self.agent = agent
        super().__init__(f"unknown agent {agent!r}")

    def __str__(self) -> str:
        return self.args[0]


def parse_state(value: AgentState | str) -> AgentState:
    try:
        return AgentState(value)
    except ValueError:
        names = ", ".join(s.value for s in AgentState)
        raise ValueError(f"unknown agent state {value!r} (one of {names})") from None


def transition(current: AgentState, target: AgentState | str, reason: str | None = None) -> AgentState:
    """The state after asking `current` -> `target`, or raise InvalidTransition(current).

    `reason` is required for away (a reason code such as "lunch" or "training");
    it is ignored by the table otherwise. Missing reason for away: ValueError (a 400).
    """
    tgt = parse_state(target)
    if tgt not in TRANSITIONS[current]:
        raise InvalidTransition(current, tgt)
    if tgt is S.AWAY and not (reason and reason.strip()):
        raise ValueError("away needs a reason code (e.g. lunch, training)")
    return tgt
