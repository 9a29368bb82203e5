"""SQLAlchemy Core tables (one metadata; Alembic migrations are generated from it).

Timestamps are stored timezone-aware (UTC). JSON columns hold provider or
connector specific extras; anything queried by stats or routing is a column.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    literal_column,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TS = DateTime(timezone=True)

calls = Table(
    "calls",
    metadata,
    Column("call_id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("provider", String(64), nullable=False),
    Column("provider_call_id", String(128), nullable=False),
    Column("direction", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("from_number", String(32)),
    Column("to_number", String(32)),
    Column("queue", String(64), index=True),
    Column("agent", String(64), index=True),
    Column("outcome", String(16)),
    Column("end_cause", String(32)),
    Column("created_at", TS, index=True),
    Column("queued_at", TS),
    Column("ringing_at", TS),
    Column("answered_at", TS),
    Column("ended_at", TS),
    Column("ring_s", Float, nullable=False, default=0.0),
    Column("talk_s", Float, nullable=False, default=0.0),
    Column("hold_s", Float, nullable=False, default=0.0),
    Column("wait_s", Float, nullable=False, default=0.0),
    Column("recording", Text),
    Column("recording_state", String(16)),
    Column("transferred_to", String(128)),
    Column("agents_rung", JSON),
    Column("events", Integer, nullable=False, default=0),
    Column("last_event_at", TS),
    # set by other stages (screen pop / routing / wrap-up)
    Column("contact_id", String(64), index=True),
    Column("account_id", String(64), index=True),
    Column("priority", Integer, nullable=False, default=0),
    Column("priority_reason", Text),
    Column("disposition", String(64)),
    Column("notes", Text),
    Column("error", Text),  # last processing error visible in the API (transcription, CRM push)
    UniqueConstraint("tenant", "provider", "provider_call_id", name="uq_calls_provider_call"),
)
Index("ix_calls_tenant_created", calls.c.tenant, calls.c.created_at)

# A call still in progress. A literal, not a bound parameter: a partial index serves only
# queries whose WHERE visibly implies its own, which a parameter (`state != ?`) cannot.
CALL_OPEN = calls.c.state != literal_column("'ended'")
# an agent's calls in progress (the socket snapshot at every connect, migration 0003)
Index("ix_calls_open_agent", calls.c.agent, postgresql_where=CALL_OPEN, sqlite_where=CALL_OPEN)

call_events = Table(
    "call_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("call_id", String(64), nullable=False, index=True),
    Column("tenant", String(64), nullable=False),
    Column("provider", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("occurred_at", TS, nullable=False),
    Column("seq", Integer, nullable=False, default=0),
    Column("payload", JSON, nullable=False),  # CallEvent.to_dict()
)

agents = Table(
    "agents",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False, default="default"),
    Column("name", String(200), nullable=False),
    Column("team", String(64), index=True),
    Column("skills", JSON, nullable=False, default=dict),
    Column("endpoints", JSON, nullable=False, default=dict),
    Column("capacity", Integer, nullable=False, default=1),
    Column("state", String(16), nullable=False, default="offline"),
    Column("state_reason", String(64)),
    Column("state_since", TS),
)

agent_state_log = Table(
    "agent_state_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("tenant", String(64), nullable=False),
    Column("agent", String(64), nullable=False, index=True),
    Column("state", String(16), nullable=False),
    Column("reason", String(64)),
    Column("started_at", TS, nullable=False),
    Column("ended_at", TS),
)

# time per state and occupancy read an agent's spells in a time range
Index("ix_agent_state_log_agent_started", agent_state_log.c.agent, agent_state_log.c.started_at)
# each state change closes the agent's open spell: only open spells in it (migration 0003)
Index("ix_agent_state_log_open", agent_state_log.c.agent, agent_state_log.c.started_at,
      postgresql_where=agent_state_log.c.ended_at.is_(None), sqlite_where=agent_state_log.c.ended_at.is_(None))

queues = Table(
    "queues",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False, default="default"),
    Column("config", JSON, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False, default="default"),
    Column("name", String(200), nullable=False),
    Column("phone", String(32), index=True),
    Column("owner", String(64)),
    Column("fields", JSON, nullable=False, default=dict),
)

contacts = Table(
    "contacts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False, default="default"),
    Column("account_id", String(64), ForeignKey("accounts.id"), index=True),
    Column("first_name", String(100)),
    Column("last_name", String(100)),
    Column("email", String(200)),
    Column("role", String(100)),
    Column("owner", String(64)),
    Column("fields", JSON, nullable=False, default=dict),
)

# one row per (contact, number) so lookups are an indexed equality on E.164
contact_phones = Table(
    "contact_phones",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("contact_id", String(64), ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("e164", String(32), nullable=False, index=True),
    Column("raw", String(64)),
    Column("label", String(32)),
)

activities = Table(
    "activities",
    metadata,
    Column("call_id", String(64), primary_key=True),  # one activity per call, by construction
    Column("tenant", String(64), nullable=False),
    Column("contact_id", String(64), index=True),
    Column("account_id", String(64), index=True),
    Column("agent", String(64)),
    Column("subject", String(300), nullable=False),
    Column("direction", String(16), nullable=False),
    # indexed: the screen pop finds a customer's last calls by either number (migration 0003)
    Column("from_number", String(32), index=True),
    Column("to_number", String(32), index=True),
    Column("duration_s", Float, nullable=False, default=0.0),
    Column("outcome", String(16)),
    Column("disposition", String(64)),
    Column("notes", Text),
    Column("recording_url", Text),
    Column("summary", JSON),
    Column("created_at", TS, nullable=False),  # when the row was first written (about the call's end)
    Column("updated_at", TS, nullable=False),
    Column("started_at", TS),  # when the call started: the time the CRMs show (migration 0004)
    Column("crm_ref", String(128)),        # id of the activity in the external CRM
    Column("crm_synced_at", TS),
    Column("crm_attempts", Integer, nullable=False, default=0),
    Column("crm_error", Text),
)

# activities the CRM does not have yet, asked for every second by the retry loop (migration 0003)
Index("ix_activities_crm_pending", activities.c.tenant, activities.c.updated_at,
      postgresql_where=activities.c.crm_synced_at.is_(None), sqlite_where=activities.c.crm_synced_at.is_(None))

recordings = Table(
    "recordings",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("call_id", String(64), nullable=False, index=True),
    Column("tenant", String(64), nullable=False),
    Column("source", Text),        # provider URL or path it came from
    Column("path", Text),          # where we store it
    Column("encrypted", Boolean, nullable=False, default=False),
    Column("duration_s", Float),
    Column("paused", JSON),         # [[start_s, end_s], ...] segments never to transcribe
    Column("channels", JSON),       # ["customer", "agent"]: who is left, right (migration 0005)
    Column("created_at", TS, nullable=False),
)

transcripts = Table(
    "transcripts",
    metadata,
    Column("call_id", String(64), primary_key=True),  # idempotent: one transcript per call
    Column("tenant", String(64), nullable=False),
    Column("status", String(16), nullable=False),     # pending | done | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("model", String(100)),
    Column("language", String(8)),
    Column("text", Text),
    Column("text_encrypted", LargeBinary),
    Column("segments", JSON),
    Column("summary", JSON),
    Column("audio_s", Float),
    Column("processing_s", Float),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False, default="default"),
    Column("user", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("teams", JSON, nullable=False, default=list),
    Column("expires_at", TS),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("created_at", TS, nullable=False),
)

monitor_sessions = Table(
    "monitor_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("call_id", String(64), nullable=False, index=True),
    Column("supervisor", String(64), nullable=False),
    Column("agent", String(64)),
    Column("endpoint", String(128)),
    Column("mode", String(16), nullable=False),
    Column("modes", JSON, nullable=False, default=list),  # [{"mode", "at"}]
    Column("provider_session", String(128)),
    Column("started_at", TS, nullable=False),
    Column("ended_at", TS),
)

routing_decisions = Table(
    "routing_decisions",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("call_id", String(64), nullable=False, index=True),
    Column("tenant", String(64), nullable=False),
    Column("queue", String(64)),
    Column("decided_at", TS, nullable=False),
    Column("chosen", String(64)),
    Column("reason", Text),
    Column("candidates", JSON),  # [{"agent", "score", "parts": {...}}]
)

callbacks = Table(
    "callbacks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("queue", String(64), nullable=False),
    Column("number", String(32), nullable=False),
    Column("call_id", String(64)),             # the call that asked for it
    Column("requested_at", TS, nullable=False),
    Column("position_at", TS, nullable=False),  # keeps the caller's place in the queue
    Column("state", String(16), nullable=False),  # waiting | dialing | done | failed
    Column("done_call_id", String(64)),
    Column("agent", String(64)),
)

# Rollups maintained as calls end: one row per (tenant, hour, queue, agent, direction).
stats_hourly = Table(
    "stats_hourly",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("hour", TS, primary_key=True),
    Column("queue", String(64), primary_key=True),      # "" when none
    Column("agent", String(64), primary_key=True),      # "" when none
    Column("direction", String(16), primary_key=True),
    Column("offered", Integer, nullable=False, default=0),
    Column("answered", Integer, nullable=False, default=0),
    Column("missed", Integer, nullable=False, default=0),
    Column("abandoned", Integer, nullable=False, default=0),
    Column("short_abandoned", Integer, nullable=False, default=0),
    Column("answered_in_sl", Integer, nullable=False, default=0),
    Column("talk_s", Float, nullable=False, default=0.0),
    Column("hold_s", Float, nullable=False, default=0.0),
    Column("ring_s", Float, nullable=False, default=0.0),
    Column("wait_s", Float, nullable=False, default=0.0),
    Column("wait_answered_s", Float, nullable=False, default=0.0),
    Column("max_wait_s", Float, nullable=False, default=0.0),
)

# which call ids were already counted into stats_hourly (idempotent rollup)
stats_applied = Table(
    "stats_applied",
    metadata,
    Column("call_id", String(64), primary_key=True),
    Column("hour", TS, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("tenant", String(64), nullable=False),
    Column("at", TS, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", Text),
    Column("detail", JSON),
)
