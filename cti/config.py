"""One settings object, loaded once: defaults <- TOML file <- environment.

Every key can be overridden by `CTI_<SECTION>__<KEY>` (values parsed as TOML
literals when they look like one, e.g. `CTI_SERVER__PORT=9000`,
`CTI_SERVER__ALLOWED_ORIGINS='["https://a"]'`). Secrets are never inline:
`<key>_env` names an environment variable, `<key>_file` a file.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(Exception):
    """Invalid configuration; the message names the file and the key."""


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteSettings(_Base):
    tenant: str = "default"
    default_region: str = "FR"
    timezone: str = "Europe/Paris"
    language: str = "en"  # default UI language (en | fr)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(v)
        except Exception:
            raise ValueError(f"unknown time zone {v!r}") from None
        return v


class ServerSettings(_Base):
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    allowed_origins: list[str] = Field(default_factory=list)
    ws_queue_max: int = 256          # pending messages per browser socket before it is dropped
    shutdown_grace_s: float = 10.0
    # stable name of this node (bus consumer name): a restarted node re-reads its own pending
    # entries at once instead of waiting for another to claim them; default hostname-pid
    node_id: str | None = None
    # false: this node only does real-time work (providers, routing, pops, sockets, API) and
    # `cti worker --store` processes fold events and write activities, stats and the agent
    # log (needs a shared bus: Redis). Keeps store work off the loop that pushes pops.
    store_writers: bool = True
    # the event loop of `cti serve` and `cti worker`: "auto" = uvloop when it is installed
    # (a node at 100 calls/s used ~10% less CPU), "asyncio" = the standard library's (what
    # cti.diagnostics.SlowSteps instruments), "uvloop" = uvloop or a start-up error
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"


class StoreSettings(_Base):
    url: str = "sqlite+aiosqlite:///./cti.db"
    echo: bool = False


class BusSettings(_Base):
    url: str = "memory://"
    claim_idle_ms: int = 30_000      # XAUTOCLAIM entries idle longer than this
    max_deliveries: int = 5          # then the entry goes to the dead-letter stream
    block_ms: int = 1_000
    batch: int = 256
    socket_timeout_s: float = 5.0
    health_check_interval_s: int = 10
    # store writers (events, activities, stats, agent log) wait this long after a short batch:
    # under load they read and write in fewer, larger batches; the browser-facing stages
    # (routing, pops, live updates) never wait
    store_linger_ms: int = Field(default=50, ge=0, le=5_000)


class TokenSettings(_Base):
    user: str
    role: str = "agent"
    teams: list[str] = Field(default_factory=list)
    tenant: str | None = None
    token: str | None = None          # resolved from token_env / token_file; never inline in files
    token_sha256: str | None = None

    @field_validator("role")
    @classmethod
    def _role(cls, v: str) -> str:
        if v not in ("agent", "supervisor", "admin"):
            raise ValueError(f"role must be agent, supervisor or admin, not {v!r}")
        return v


class AuthSettings(_Base):
    tokens: list[TokenSettings] = Field(default_factory=list)
    click_to_call_per_minute: int = 20
    failed_auth_per_minute: int = 10


class ProviderSettings(_Base):
    """One [[providers]] table; type-specific keys are kept in `options`."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    type: str

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class CrmSettings(_Base):
    model_config = ConfigDict(extra="allow", frozen=True)
    type: str = "local"
    lookup_timeout_s: float = 0.5
    cache_ttl_s: float = 300.0
    negative_ttl_s: float = 60.0
    # pushes a second to work off activities the CRM missed (outage, refusal); new calls go at once
    retry_per_s: float = Field(default=20.0, gt=0, le=10_000)

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class AgentSettings(_Base):
    id: str
    name: str
    team: str | None = None
    skills: dict[str, int] = Field(default_factory=dict)
    endpoints: dict[str, str] = Field(default_factory=dict)
    capacity: int = 1
    monitor_endpoint: str | None = None  # for supervisors who are also listed as agents

    @field_validator("skills")
    @classmethod
    def _levels(cls, v: dict[str, int]) -> dict[str, int]:
        for k, level in v.items():
            if not 0 <= level <= 10:
                raise ValueError(f"skill {k!r} level {level} is outside 0-10")
        return v


class OverflowSettings(_Base):
    after_s: float = 60.0
    widen: str | None = None
    then: str | None = None  # voicemail | callback | queue:<name> | None
    target: str | None = None  # then = voicemail: where to transfer (voicemail box endpoint/number)
    prompt: str | None = None  # then = callback: media offering a callback (caller presses 1)


class QueueSettings(_Base):
    name: str
    numbers: list[str] = Field(default_factory=list)
    requires: str | None = None
    strategy: str = "longest_idle"
    priority: int = 0
    ring_timeout_s: float = 15.0
    max_wait_s: float = 300.0
    max_length: int | None = None
    overflow: OverflowSettings | None = None
    script: str | None = None
    service_level_s: float = 20.0
    short_abandon_s: float = 5.0
    hours: str | None = None
    holidays: list[str] = Field(default_factory=list)
    recording: str = "never"  # always | on_demand | never
    consent_media: str | None = None
    preferred_agent_s: float = 0.0  # offer to the CRM owner first for this long
    dispositions: list[str] = Field(default_factory=list)
    aliases: list[str] = Field(default_factory=list)  # provider queue names / IVR choices entering it
    wrap_up_s: float = 0.0  # after-call work before the agent is offered the next call


class PriorityRuleSettings(_Base):
    name: str
    when: str
    boost: int = 10


class TranscribeSettings(_Base):
    enabled: bool = False
    backend: str = "faster-whisper"
    model: str = "tiny.en"
    language: str = "en"
    beam_size: int = 5
    compute_type: str = "int8"
    summary: str = "extractive"
    storage: str = "./recordings"
    redact_emails: bool = False
    max_attempts: int = 3
    cpu_threads: int = 2             # per transcription worker (start more workers to go faster)
    allow_download: bool = False     # let a hub model name be fetched (never by default)
    diarize_mono: bool = False       # guess agent/customer in mono recordings from the voices
    gateway_worker: bool = True      # gateways transcribe too; false when dedicated `cti worker`s do it
    lease_s: float = 60.0            # a crashed worker's job is taken over this long after its last heartbeat
    # openai-compatible summary backend
    base_url: str | None = None
    summary_model: str | None = None
    api_key: str | None = None


class StatsSettings(_Base):
    short_abandon_s: float = 5.0
    service_level_s: float = 20.0


class SecuritySettings(_Base):
    blocked_prefixes: list[str] = Field(default_factory=lambda: ["+3389", "+33 89", "+1900"])
    encryption_key: str | None = None  # resolved from encryption_key_env / _file
    retention_days: int | None = None
    show_listen_to_agent: bool = False

    @field_validator("encryption_key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        # a bad key stops start-up with a message naming the setting (never its value)
        from cti.security.crypto import validate_key

        return validate_key(v, "encryption_key (set by encryption_key_env / encryption_key_file)")


class Settings(_Base):
    site: SiteSettings = Field(default_factory=SiteSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    bus: BusSettings = Field(default_factory=BusSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    providers: list[ProviderSettings] = Field(default_factory=list)
    crm: CrmSettings = Field(default_factory=CrmSettings)
    agents: list[AgentSettings] = Field(default_factory=list)
    queues: list[QueueSettings] = Field(default_factory=list)
    priority_rules: list[PriorityRuleSettings] = Field(default_factory=list)
    dispositions: list[str] = Field(
        default_factory=lambda: ["resolved", "follow_up", "escalated", "sale", "no_sale", "cancelled"]
    )
    transcribe: TranscribeSettings = Field(default_factory=TranscribeSettings)
    stats: StatsSettings = Field(default_factory=StatsSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)


def source_of(where: str) -> str:
    return f"{where}." if where else ""


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _resolve_secrets(node: Any, where: str, environ: dict[str, str]) -> Any:
    """Replace `<key>_env` / `<key>_file` by `<key>` with the secret's value."""
    if isinstance(node, list):
        return [_resolve_secrets(x, f"{where}[{i}]", environ) for i, x in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.endswith("_env") and isinstance(value, str):
            base = key[: -len("_env")]
            secret = environ.get(value)
            if secret is None:
                raise ConfigError(f"{source_of(where)}{key}: environment variable {value} is not set")
            out[base] = secret
        elif key.endswith("_file") and isinstance(value, str):
            base = key[: -len("_file")]
            try:
                out[base] = Path(value).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{source_of(where)}{key}: cannot read {value}: {exc.strerror}") from None
        else:
            out[key] = _resolve_secrets(value, f"{where}.{key}" if where else key, environ)
    return out


def _apply_env(data: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    for name, raw in environ.items():
        if not name.startswith("CTI_") or "__" not in name:
            continue
        section, _, key = name[4:].lower().partition("__")
        value = _parse_env_value(raw)
        target = data.setdefault(section, {})
        if isinstance(target, dict):
            target[key] = value
    return data


def load_settings(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Settings:
    """Load and validate. Raises ConfigError whose message names the file and key."""
    environ = dict(os.environ if environ is None else environ)
    source = str(path) if path else "<defaults>"
    data: dict[str, Any] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{source}: file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    data = _apply_env(data, environ)
    try:
        data = _resolve_secrets(data, "", environ)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{source}: {loc}: {err['msg']}") from None
