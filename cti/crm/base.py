"""The CRM connector protocol, its errors, and the registry of implementations.

Every connector answers the same questions:

- `lookup(e164)`: who owns this number (contacts, accounts, leads), whatever format
  the CRM stores the number in;
- `log_activity(activity)`: write the call into the customer's history, idempotent
  by call id (the second call updates the same CRM record and returns its id);
- `log_transcript(call_id, text, summary)`: attach the transcript, idempotent too;
- `history(key, limit)`: the last calls with this number / contact for the pop. All
  connectors read it from the local store (the `activities` + `calls` tables), which
  has every call whatever CRM is configured.

Errors: `CrmUnavailable` (retry later: timeouts, 5xx, rate limit exhausted),
`CrmError` (a request the CRM refused: retrying will not help).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from cti.model import Activity, Contact


class CrmError(Exception):
    """The CRM refused the request (bad data, missing object); retrying will not help."""


class CrmUnavailable(CrmError):
    """The CRM cannot answer now (network, 5xx, rate limit): retry later."""


class CrmAuthError(CrmError):
    """Credentials rejected even after a token refresh."""


@runtime_checkable
class Connector(Protocol):
    name: str

    async def lookup(self, e164: str) -> list[Contact]: ...

    async def log_activity(self, activity: Activity) -> str: ...

    async def log_transcript(
        self, call_id: str, transcript_text: str, summary: dict[str, Any] | None
    ) -> str | None: ...

    async def history(self, key: str, limit: int = 5) -> list[dict[str, Any]]: ...

    async def close(self) -> None: ...


def contact_view(c: Contact) -> dict[str, Any]:
    """ContactView of docs/api.md."""
    return {
        "id": c.id,
        "kind": c.kind,
        "name": c.name,
        "first_name": c.first_name,
        "last_name": c.last_name,
        "account_id": c.account_id,
        "account_name": c.account_name,
        "owner": c.owner,
        "url": c.url,
        "email": c.email,
        "role": c.role,
        "phones": list(c.phones),
    }


def keep_transcript(new_text: Any, old_text: Any, mark: str) -> str | None:
    """`new_text` followed by the transcript section (from `mark` on) of `old_text`, or None
    when the old text has none: an update pushed after the transcription (the wrap-up, say)
    must not erase the transcript attached to the CRM's record meanwhile."""
    old = str(old_text or "")
    if mark not in old:
        return None
    return str(new_text or "") + old[old.index(mark) :]


def full_name(first: str | None, last: str | None, fallback: str = "") -> str:
    name = " ".join(p for p in ((first or "").strip(), (last or "").strip()) if p)
    return name or fallback


# type name -> factory(settings, **deps) -> Connector
_REGISTRY: dict[str, Callable[..., Connector]] = {}


def register(type_name: str) -> Callable[[Callable[..., Connector]], Callable[..., Connector]]:
    def deco(factory: Callable[..., Connector]) -> Callable[..., Connector]:
        _REGISTRY[type_name] = factory
        return factory

    return deco


def open_connector(
    settings: Any,
    *,
    engine: Any,
    region: str = "FR",
    tenant: str = "default",
    base_url: str = "",
    session: Any = None,
    timezone: str | None = None,
) -> Connector:
    """Build the connector named by `settings.type` (CrmSettings); `settings.options` holds
    its type-specific keys. Raises CrmError naming an unknown type or a missing option.
    `timezone`: the site's (IANA name), for CRMs that date a call by day; None is UTC."""
    # import the built-in connectors so they register themselves
    from cti.crm import http, hubspot, local, salesforce  # noqa: F401

    factory = _REGISTRY.get(settings.type)
    if factory is None:
        raise CrmError(f"crm.type: unknown CRM connector {settings.type!r} (known: {', '.join(sorted(_REGISTRY))})")
    return factory(
        settings, engine=engine, region=region, tenant=tenant, base_url=base_url, session=session, timezone=timezone
    )
