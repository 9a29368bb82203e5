"""Stream names: the contract between stages (one place, so nobody invents a second)."""

EVENTS = "events"            # CallEvent.to_dict() from adapters (and agent_state_changed from routing)
CALLS = "calls"              # {"type": "call_update", "call": Call.to_dict()} after each fold
POPS = "pops"                # {"type": "screen_pop", "agent", "tenant", ...} for agents' browsers
LIVE = "live"                # {"type": "queue_stats" | "agent_state" | ..., "tenant", ...} dashboards
JOBS_TRANSCRIBE = "jobs:transcribe"  # {"call_id", "tenant", "recording_id", "path"}


def commands(provider: str) -> str:
    """Commands for the node that holds this provider's adapter."""
    return f"commands:{provider}"
