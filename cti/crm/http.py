"""Generic REST connector for in-house CRMs, configured instead of coded.

    [crm]
    type = "http"
    lookup_url = "https://crm.internal/api/people?phone={e164}"   # also {national}, {nsn}, {e164_digits}
    results_path = "data"                  # where the list is in the answer ("" = the answer itself)
    activity_url = "https://crm.internal/api/calls/{call_id}"      # PUT: idempotent by URL
    activity_method = "PUT"
    transcript_url = "https://crm.internal/api/calls/{call_id}/transcript"
    token_env = "CRM_TOKEN"                # sent as Authorization: Bearer ...
    [crm.mapping]                          # our field = path in their record
    id = "id"
    first_name = "first"
    last_name = "last"
    account_name = "company.name"
    phones = "phones"
    [crm.mapping.fields]
    "account.won_amount_24m" = "company.revenue_24m"

The activity's JSON body has every field of the call (`activity_json`), among them
`started_at`: when the call started, ISO 8601 UTC, for the CRM to date the record with
(not the time of the PUT, which a CRM outage can make hours late).

Idempotence comes from the URL: the activity is PUT to a URL keyed by our call id
(with POST, the body carries `call_id` and the CRM must upsert on it). Every hit is
re-checked in E.164 when the mapping gives phones.
"""

from __future__ import annotations

import asyncio
from datetime import UTC
from typing import Any
from urllib.parse import quote

import aiohttp

from cti.crm.base import CrmError, full_name, register
from cti.crm.numbers import same_number, variants
from cti.crm.rest import RemoteConnector, RestClient
from cti.model import Activity, Contact

DEFAULT_MAPPING = {
    "id": "id",
    "name": "name",
    "first_name": "first_name",
    "last_name": "last_name",
    "email": "email",
    "role": "role",
    "account_id": "account_id",
    "account_name": "account_name",
    "owner": "owner",
    "url": "url",
    "kind": "kind",
    "phones": "phones",
}


def dig(record: Any, path: str) -> Any:
    """Value at a dotted path (`company.name`, `items.0.id`); None when absent."""
    cur = record
    if not path:
        return cur
    for part in path.split("."):
        if isinstance(cur, dict):
            cur = cur.get(part)
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return None
    return cur


def activity_json(a: Activity) -> dict[str, Any]:
    return {
        "call_id": a.call_id,
        "subject": a.subject,
        "direction": str(a.direction),
        "from_number": a.from_number,
        "to_number": a.to_number,
        "duration_s": a.duration_s,
        "outcome": str(a.outcome) if a.outcome else None,
        "contact_id": a.contact_id,
        "account_id": a.account_id,
        "agent": a.agent,
        "disposition": a.disposition,
        "notes": a.notes,
        "recording_url": a.recording_url,
        "summary": a.summary,
        "started_at": a.started_at.astimezone(UTC).isoformat() if a.started_at else None,
    }


class HttpConnector(RemoteConnector):
    name = "http"

    def __init__(
        self,
        options: dict[str, Any],
        *,
        engine: Any = None,
        region: str = "FR",
        tenant: str = "default",
        session: aiohttp.ClientSession | None = None,
        sleep: Any = asyncio.sleep,
    ) -> None:
        if not options.get("lookup_url"):
            raise CrmError("crm: type http needs lookup_url")
        self.options = options
        self.engine = engine
        self.region = region
        self.tenant = tenant
        self.mapping = {**DEFAULT_MAPPING, **(options.get("mapping") or {})}
        headers = {str(k): str(v) for k, v in (options.get("headers") or {}).items()}
        if options.get("token"):
            headers["Authorization"] = f"Bearer {options['token']}"
        self.headers = headers

        async def auth(_force: bool) -> dict[str, str]:
            return headers

        self.http = RestClient(
            "http",
            auth,
            session=session,
            timeout_s=float(options.get("timeout_s", 10)),
            sleep=sleep,
            max_wait_s=float(options.get("max_retry_wait_s", 30)),
        )

    async def lookup(self, e164: str) -> list[Contact]:
        v = {k: quote(val, safe="") for k, val in variants(e164, self.region).items()}
        url = str(self.options["lookup_url"]).format(**v)
        _, body = await self.http.request(str(self.options.get("lookup_method", "GET")).upper(), url)
        items = dig(body, str(self.options.get("results_path", "")))
        if isinstance(items, dict):
            items = [items]
        out: list[Contact] = []
        for r in items or []:
            c = self._contact(r, e164)
            if c is not None:
                out.append(c)
        return out

    def _contact(self, r: dict[str, Any], e164: str) -> Contact | None:
        m = self.mapping
        get = lambda key: dig(r, m[key]) if m.get(key) else None  # noqa: E731
        cid = get("id")
        if cid is None:
            return None
        phones = get("phones")
        if isinstance(phones, str):
            phones = [phones]
        if phones and not any(same_number(str(p), e164, self.region) for p in phones):
            return None  # the CRM's search was looser than ours
        fields = {ours: dig(r, theirs) for ours, theirs in (m.get("fields") or {}).items()}
        fields = {k: val for k, val in fields.items() if val is not None}
        first, last = get("first_name"), get("last_name")
        return Contact(
            id=str(cid),
            name=str(get("name") or full_name(first, last, str(cid))),
            phones=(e164,),
            first_name=first,
            last_name=last,
            email=get("email"),
            role=get("role"),
            account_id=_str(get("account_id")),
            account_name=get("account_name"),
            owner=get("owner"),
            url=get("url"),
            kind=str(get("kind") or "contact"),
            fields=fields,
        )

    async def log_activity(self, activity: Activity) -> str:
        url = self.options.get("activity_url")
        if not url:
            return f"local:{activity.call_id}"  # this CRM takes no activities: the local store has it
        method = str(self.options.get("activity_method", "PUT")).upper()
        _, body = await self.http.request(
            method, str(url).format(call_id=quote(activity.call_id, safe="")), json=activity_json(activity)
        )
        ref = dig(body, str(self.options.get("id_path", "id"))) if isinstance(body, (dict, list)) else None
        return str(ref or activity.call_id)

    async def log_transcript(self, call_id: str, transcript_text: str, summary: dict[str, Any] | None) -> str | None:
        url = self.options.get("transcript_url")
        if not url:
            return None
        await self.http.request(
            "PUT",
            str(url).format(call_id=quote(call_id, safe="")),
            json={"call_id": call_id, "text": transcript_text, "summary": summary},
        )
        return call_id



def _str(v: Any) -> str | None:
    return None if v is None else str(v)


@register("http")
def _factory(settings: Any, *, engine: Any, region: str, tenant: str, session: Any = None, **_: Any) -> HttpConnector:
    return HttpConnector(settings.options, engine=engine, region=region, tenant=tenant, session=session)
