"""HubSpot connector (CRM API v3).

Auth: a private-app access token (`access_token`, static bearer) or OAuth
(`client_id`, `client_secret`, `refresh_token`: POST /oauth/v1/token with
grant_type=refresh_token; a 401 refreshes once and replays).

Lookup: POST /crm/v3/objects/contacts/search, one filter group per rendering of the
number (filter groups are ORed): phone / mobilephone equal to the E.164 or national
form, and HubSpot's own `hs_searchable_calculated_phone_number` /
`..._mobile_number` (digits without country code). Pages are followed with
`paging.next.after`; each hit is re-checked in E.164.

Activity: a call engagement (POST /crm/v3/objects/calls) with hs_timestamp (when the call
started, ISO 8601 UTC, which the calls API takes as well as Unix ms: the record sits on the
timeline at the call, not at a push made late by an outage),
hs_call_title, hs_call_body, hs_call_direction, hs_call_duration (ms),
hs_call_from_number, hs_call_to_number, hs_call_status, hs_call_recording_url and
associations to the contact (type 194) and company (182). Idempotent through a
custom call property (`id_property`, default `cti_call_id`, created once in the
portal; see docs/salesforce.md's HubSpot note): search it first, PATCH if found. A
create whose answer was lost is not replayed (the next push searches first), and an
update keeps an attached transcript, and hs_timestamp too unless it has the call's own time.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aiohttp

from cti.crm.base import CrmAuthError, CrmError, CrmUnavailable, full_name, keep_transcript, register
from cti.crm.numbers import same_number, variants
from cti.crm.rest import RemoteConnector, RestClient, TokenCache
from cti.model import Activity, Contact, Direction, Outcome

PROPERTIES = [
    "firstname",
    "lastname",
    "email",
    "phone",
    "mobilephone",
    "jobtitle",
    "company",
    "hubspot_owner_id",
    "associatedcompanyid",
]
CALL_TO_CONTACT = 194
CALL_TO_COMPANY = 182
TRANSCRIPT_MARK = "<hr><p><b>Transcript</b></p>"

_STATUS = {
    Outcome.ANSWERED: "COMPLETED",
    Outcome.MISSED: "NO_ANSWER",
    Outcome.ABANDONED: "CANCELED",
    Outcome.VOICEMAIL: "COMPLETED",
    Outcome.BUSY: "BUSY",
    Outcome.FAILED: "FAILED",
    Outcome.CANCELED: "CANCELED",
}


def _html(text: str) -> str:
    import html

    return "<p>" + html.escape(text).replace("\n", "<br>") + "</p>"


def call_properties(a: Activity, id_property: str, at: datetime) -> dict[str, Any]:
    """Pure: hs_call_* properties of an activity."""
    body = []
    if a.disposition:
        body.append(f"Disposition: {a.disposition}")
    if a.notes:
        body.append(a.notes)
    if a.summary and a.summary.get("key_points"):
        body.append("Summary:\n" + "\n".join(f"- {p}" for p in a.summary["key_points"]))
    props: dict[str, Any] = {
        "hs_timestamp": at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "hs_call_title": a.subject[:255],
        "hs_call_body": _html("\n\n".join(body)) if body else "",
        "hs_call_direction": "OUTBOUND" if a.direction is Direction.OUTBOUND else "INBOUND",
        "hs_call_duration": str(int((a.duration_s or 0) * 1000)),
        "hs_call_from_number": a.from_number or "",
        "hs_call_to_number": a.to_number or "",
        "hs_call_status": _STATUS.get(a.outcome, "COMPLETED") if a.outcome else "COMPLETED",
        id_property: a.call_id,
    }
    if a.recording_url and a.recording_url.startswith(("http://", "https://")):
        props["hs_call_recording_url"] = a.recording_url
    return props


class HubSpotConnector(RemoteConnector):
    name = "hubspot"

    def __init__(
        self,
        options: dict[str, Any],
        *,
        engine: Any = None,
        region: str = "FR",
        tenant: str = "default",
        session: aiohttp.ClientSession | None = None,
        sleep: Any = asyncio.sleep,
        clock: Any = None,
    ) -> None:
        self.options = options
        self.engine = engine
        self.region = region
        self.tenant = tenant
        self.clock = clock
        self.base = str(options.get("base_url") or "https://api.hubapi.com").rstrip("/")
        self.id_property = str(options.get("id_property") or "cti_call_id")
        self.portal_url = str(options.get("portal_url") or "https://app.hubspot.com").rstrip("/")
        self.portal_id = options.get("portal_id")
        self.page_limit = int(options.get("page_size", 100))
        self.max_pages = int(options.get("max_pages", 10))
        self.extra: dict[str, str] = dict(options.get("fields") or {"contact.role": "jobtitle"})
        self._refresh_token = options.get("refresh_token")
        self.tokens = TokenCache(self._fetch_token, options.get("access_token"))
        self.http = RestClient(
            "hubspot",
            self.tokens.headers,
            session=session,
            timeout_s=float(options.get("timeout_s", 10)),
            sleep=sleep,
            max_wait_s=float(options.get("max_retry_wait_s", 30)),
        )
        self._locks: dict[str, asyncio.Lock] = {}

    async def _fetch_token(self) -> str:
        if not self._refresh_token:
            raise CrmAuthError("hubspot: access token rejected and no refresh_token configured")
        data = {
            "grant_type": "refresh_token",
            "client_id": str(self.options.get("client_id") or ""),
            "client_secret": str(self.options.get("client_secret") or ""),
            "refresh_token": self._refresh_token,
        }
        try:
            _, body = await self.http.request("POST", f"{self.base}/oauth/v1/token", data=data, authenticated=False)
        except CrmUnavailable:
            raise
        except CrmError as exc:
            raise CrmAuthError(f"hubspot: token refresh refused: {exc}") from None
        if not isinstance(body, dict) or not body.get("access_token"):
            raise CrmAuthError("hubspot: token answer without access_token")
        self._refresh_token = body.get("refresh_token") or self._refresh_token
        return str(body["access_token"])

    async def _api(self, method: str, path: str, *, replay: bool = True, **kw: Any) -> Any:
        _, body = await self.http.request(method, f"{self.base}{path}", replay=replay, **kw)
        return body

    # ---------------------------------------------------------------- lookup

    def filter_groups(self, e164: str) -> list[dict[str, Any]]:
        v = variants(e164, self.region)
        eq = lambda prop, val: {"filters": [{"propertyName": prop, "operator": "EQ", "value": val}]}  # noqa: E731
        return [
            eq("phone", e164),
            eq("mobilephone", e164),
            eq("phone", v["national_formatted"]),
            eq("hs_searchable_calculated_phone_number", v["nsn"]),
            eq("hs_searchable_calculated_mobile_number", v["nsn"]),
        ]

    async def lookup(self, e164: str) -> list[Contact]:
        props = list(dict.fromkeys(PROPERTIES + list(self.extra.values())))
        body: dict[str, Any] = {
            "filterGroups": self.filter_groups(e164),
            "properties": props,
            "limit": self.page_limit,
            "sorts": [{"propertyName": "lastname", "direction": "ASCENDING"}],
        }
        out: list[Contact] = []
        seen: set[str] = set()
        for _ in range(self.max_pages):
            page = await self._api("POST", "/crm/v3/objects/contacts/search", json=body)
            for r in (page or {}).get("results", []):
                p = r.get("properties") or {}
                if r.get("id") in seen:
                    continue
                if not (
                    same_number(p.get("phone"), e164, self.region)
                    or same_number(p.get("mobilephone"), e164, self.region)
                ):
                    continue
                seen.add(str(r["id"]))
                out.append(self._contact(r, e164))
            after = (((page or {}).get("paging") or {}).get("next") or {}).get("after")
            if not after:
                break
            body = {**body, "after": after}
        return out

    def _contact(self, r: dict[str, Any], e164: str) -> Contact:
        p = r.get("properties") or {}
        cid = str(r["id"])
        fields = {ours: p[theirs] for ours, theirs in self.extra.items() if p.get(theirs) not in (None, "")}
        if p.get("company"):
            fields.setdefault("account.name", p["company"])
        url = f"{self.portal_url}/contacts/{self.portal_id}/contact/{cid}" if self.portal_id else None
        return Contact(
            id=cid,
            name=full_name(p.get("firstname"), p.get("lastname"), p.get("email") or cid),
            phones=(e164,),
            first_name=p.get("firstname"),
            last_name=p.get("lastname"),
            email=p.get("email"),
            role=p.get("jobtitle"),
            account_id=p.get("associatedcompanyid"),
            account_name=p.get("company"),
            owner=p.get("hubspot_owner_id"),
            url=url,
            kind="contact",
            fields=fields,
        )

    # ---------------------------------------------------------------- activities

    async def _call_id(self, call_id: str) -> tuple[str, dict[str, Any]] | None:
        body = {
            "filterGroups": [{"filters": [{"propertyName": self.id_property, "operator": "EQ", "value": call_id}]}],
            "properties": [self.id_property, "hs_call_body"],
            "limit": 1,
        }
        page = await self._api("POST", "/crm/v3/objects/calls/search", json=body)
        results = (page or {}).get("results") or []
        return (str(results[0]["id"]), results[0].get("properties") or {}) if results else None

    def _now(self) -> datetime:
        return self.clock.now() if self.clock is not None else datetime.now(UTC)

    async def log_activity(self, activity: Activity) -> str:
        lock = self._locks.setdefault(activity.call_id, asyncio.Lock())
        try:
            async with lock:
                return await self._upsert_call(activity)
        finally:
            if not lock.locked():
                self._locks.pop(activity.call_id, None)

    async def _upsert_call(self, activity: Activity) -> str:
        # the push time only for an activity that does not know when its call started
        dated = activity.started_at is not None
        props = call_properties(activity, self.id_property, activity.started_at or self._now())
        if activity.crm_ref:
            # known id: no search (HubSpot's search index lags a few seconds behind writes)
            try:
                page = await self._api(
                    "GET", f"/crm/v3/objects/calls/{activity.crm_ref}", params={"properties": "hs_call_body"}
                )
                await self._update_call(activity.crm_ref, props, (page or {}).get("properties") or {}, dated=dated)
                return activity.crm_ref
            except CrmError as exc:
                if isinstance(exc, CrmUnavailable) or ": 404 " not in str(exc):
                    raise
        found = await self._call_id(activity.call_id)
        if found:
            await self._update_call(found[0], props, found[1], dated=dated)
            return found[0]
        assoc = []
        if activity.contact_id:
            assoc.append(
                {
                    "to": {"id": activity.contact_id},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": CALL_TO_CONTACT}],
                }
            )
        if activity.account_id:
            assoc.append(
                {
                    "to": {"id": activity.account_id},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": CALL_TO_COMPANY}],
                }
            )
        body = await self._api(
            "POST", "/crm/v3/objects/calls", json={"properties": props, "associations": assoc}, replay=False
        )
        if not isinstance(body, dict) or not body.get("id"):
            raise CrmError("hubspot: call engagement not created")
        return str(body["id"])

    async def _update_call(self, hs_id: str, props: dict[str, Any], old: dict[str, Any], *, dated: bool) -> None:
        """PATCH an engagement, keeping a transcript attached since the last push (the wrap-up
        often comes after the transcription). `dated`: hs_timestamp is the call's own time and
        replaces the engagement's (one dated at a push fixes itself); otherwise it is the push
        time and the engagement keeps the time it was logged with."""
        if not dated:
            props = {k: v for k, v in props.items() if k != "hs_timestamp"}
        body = keep_transcript(props.get("hs_call_body"), old.get("hs_call_body"), TRANSCRIPT_MARK)
        if body is not None:
            props["hs_call_body"] = body
        await self._api("PATCH", f"/crm/v3/objects/calls/{hs_id}", json={"properties": props})

    async def log_transcript(self, call_id: str, transcript_text: str, summary: dict[str, Any] | None) -> str | None:
        found = await self._call_id(call_id)
        if found is None:
            raise CrmUnavailable(f"hubspot: no call engagement for call {call_id} yet")
        hs_id, props = found
        base = str(props.get("hs_call_body") or "").split(TRANSCRIPT_MARK)[0]
        await self._api(
            "PATCH",
            f"/crm/v3/objects/calls/{hs_id}",
            json={"properties": {"hs_call_body": base + TRANSCRIPT_MARK + _html(transcript_text)}},
        )
        return hs_id

    async def create_contact(
        self,
        *,
        phone: str,
        first_name: str | None = None,
        last_name: str | None = None,
        email: str | None = None,
        account_name: str | None = None,
        **_: Any,
    ) -> Contact:
        props = {
            k: v
            for k, v in {
                "firstname": first_name,
                "lastname": last_name,
                "email": email,
                "phone": phone,
                "company": account_name,
            }.items()
            if v
        }
        body = await self._api("POST", "/crm/v3/objects/contacts", json={"properties": props})
        return self._contact({"id": body["id"], "properties": props}, phone)



@register("hubspot")
def _factory(
    settings: Any, *, engine: Any, region: str, tenant: str, session: Any = None, **_: Any
) -> HubSpotConnector:
    opts = settings.options
    if not opts.get("access_token") and not opts.get("refresh_token"):
        raise CrmError("crm: hubspot needs access_token_env (private app) or client_id/client_secret/refresh_token")
    return HubSpotConnector(opts, engine=engine, region=region, tenant=tenant, session=session)
