"""API tokens and who may see what (DESIGN principle 7: authorization in the service layer).

Tokens are stored as SHA-256 hashes. A request carries `Authorization: Bearer <token>`
(browsers' WebSockets, which cannot set headers, pass `?token=`). What a principal
may not see is reported as "not found" (404), never "forbidden".
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from cti.model import Role


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    user: str
    role: Role
    tenant: str = "default"
    teams: frozenset[str] = field(default_factory=frozenset)
    token_hash: str = ""

    @property
    def agent_id(self) -> str | None:
        """Agents act as themselves; supervisors/admins may also be agents (same id)."""
        return self.user

    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def can_see_agent(self, agent_id: str | None, agent_team: str | None, tenant: str | None = None) -> bool:
        if tenant is not None and tenant != self.tenant:
            return False
        if self.role is Role.ADMIN:
            return True
        if self.role is Role.SUPERVISOR:
            return agent_id == self.user or (agent_team is not None and agent_team in self.teams)
        return agent_id is not None and agent_id == self.user

    def can_control_call(self, call_agent: str | None, agent_team: str | None, tenant: str) -> bool:
        """Agents: only their own calls. Supervisors: their teams'. Admin: the tenant's."""
        return self.can_see_agent(call_agent, agent_team, tenant)

    def can_monitor(self) -> bool:
        return self.role in (Role.SUPERVISOR, Role.ADMIN)


@dataclass
class TokenRecord:
    principal: Principal
    expires_at: datetime | None = None
    revoked: bool = False


class TokenStore:
    """In-memory index of token hashes (loaded from config and the api_tokens table)."""

    def __init__(self, records: Iterable[TokenRecord] = ()) -> None:
        self._by_hash: dict[str, TokenRecord] = {}
        for r in records:
            self.add(r)

    def add(self, record: TokenRecord) -> None:
        self._by_hash[record.principal.token_hash] = record

    def revoke(self, token_hash: str) -> bool:
        r = self._by_hash.get(token_hash)
        if r is None:
            return False
        r.revoked = True
        return True

    def lookup(self, token: str | None, now: datetime) -> Principal | None:
        if not token:
            return None
        h = hash_token(token)
        r = self._by_hash.get(h)
        # compare_digest: the dict lookup already matched; this keeps timing uniform-ish
        if r is None or not hmac.compare_digest(r.principal.token_hash, h):
            return None
        if r.revoked or (r.expires_at is not None and r.expires_at <= now):
            return None
        return r.principal

    def is_valid_hash(self, token_hash: str, now: datetime) -> bool:
        r = self._by_hash.get(token_hash)
        return r is not None and not r.revoked and (r.expires_at is None or r.expires_at > now)


def bearer_token(headers: dict[str, str] | object, query: dict[str, str] | object) -> str | None:
    auth = headers.get("Authorization", "")  # type: ignore[attr-defined]
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return query.get("token") or None  # type: ignore[attr-defined]
