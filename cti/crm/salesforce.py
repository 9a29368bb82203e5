"""Salesforce connector (REST API).

Auth (OAuth 2.0 token endpoint `{login_url}/services/oauth2/token`), chosen by the
options present: `refresh_token` -> refresh-token flow; `username` + `password` ->
username-password flow; otherwise client-credentials (needs the org's My Domain as
`login_url`). The token answer gives `instance_url` unless configured. A 401
(`INVALID_SESSION_ID`) fetches a new token once and replays the request.

Lookup: SOSL `FIND {0612345678 OR 33612345678 OR 612345678} IN PHONE FIELDS RETURNING
Contact(...), Account(...), Lead(...)`, then each hit is re-checked in E.164.

Activity: a Task (TaskSubtype Call) with CallType, CallDurationInSeconds,
CallObject = our call id, CallDisposition, Subject, Description, WhoId/WhatId, and
ActivityDate = the day the call started, in the site's time zone (`timezone`; UTC when
none is given): without it the Task has no date and sorts by when it was pushed.
Idempotent: the Task is looked up by CallObject first (SOQL) and updated (PATCH) if
it exists; a per-call lock stops two concurrent pushes from both inserting, and an
insert whose answer was lost is not replayed (the next push finds it by CallObject).
An update leaves out TaskSubtype (insert-only) and keeps an attached transcript.

Errors: 403 REQUEST_LIMIT_EXCEEDED (API allocation spent) and UNABLE_TO_LOCK_ROW are
`CrmUnavailable` (retry later), not refusals.

Options ([crm] with type = "salesforce"): instance_url, login_url, client_id,
client_secret(_env), username, password(_env), refresh_token(_env), api_version,
fields (our name -> Contact field path, e.g. {"account.won_amount_24m" =
"Account.Won_Amount_24m__c"}), timeout_s.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

from cti.crm.base import CrmAuthError, CrmError, CrmUnavailable, full_name, keep_transcript, register
from cti.crm.numbers import same_number, variants
from cti.crm.rest import RemoteConnector, RestClient, TokenCache, error_message
from cti.model import Activity, Contact, Direction, Outcome

CONTACT_FIELDS = [
    "Id",
    "FirstName",
    "LastName",
    "Name",
    "Email",
    "Title",
    "Phone",
    "MobilePhone",
    "HomePhone",
    "OtherPhone",
    "AccountId",
    "Account.Name",
    "OwnerId",
]
ACCOUNT_FIELDS = ["Id", "Name", "Phone", "OwnerId"]
LEAD_FIELDS = ["Id", "FirstName", "LastName", "Name", "Email", "Title", "Phone", "MobilePhone", "Company", "OwnerId"]
# SOSL's IN PHONE FIELDS finds a number in any of these: the E.164 re-check must read them all
PHONE_FIELDS = ("Phone", "MobilePhone", "HomePhone", "OtherPhone")
_SOQL_SAFE = re.compile(r"^[\w\-:.]+$")
TRANSCRIPT_MARK = "\n\n--- Transcript ---\n"
# Task fields Salesforce takes on insert only (no Update property): a PATCH with one is refused
CREATE_ONLY = frozenset({"TaskSubtype"})
# refusals that pass: the org's API allocation or concurrent-request limit is spent (403), a row
# lock held by another transaction (400); the same request succeeds later
TRANSIENT_CODES = ("REQUEST_LIMIT_EXCEEDED", "UNABLE_TO_LOCK_ROW")


def _get(record: dict[str, Any], path: str) -> Any:
    cur: Any = record
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def call_type(direction: Direction) -> str:
    return {Direction.INBOUND: "Inbound", Direction.OUTBOUND: "Outbound"}.get(direction, "Internal")


def activity_date(a: Activity, tz: tzinfo = UTC) -> str | None:
    """Pure: ActivityDate (a date, YYYY-MM-DD) of the call: the day it started where the site is;
    a call at 00:30 in Paris is on the previous day in UTC."""
    return a.started_at.astimezone(tz).date().isoformat() if a.started_at else None


def task_fields(a: Activity, activity_date: str | None = None) -> dict[str, Any]:
    """Pure: the Task body for an activity (who/what ids by Salesforce key prefix)."""
    desc = [a.notes or ""]
    if a.outcome and a.outcome is not Outcome.ANSWERED:
        desc.append(f"Outcome: {a.outcome}")
    if a.recording_url:
        desc.append(f"Recording: {a.recording_url}")
    if a.summary:
        points = a.summary.get("key_points") or []
        if points:
            desc.append("Summary:\n" + "\n".join(f"- {p}" for p in points))
    body: dict[str, Any] = {
        "Subject": a.subject[:255],
        "Description": "\n".join(d for d in desc if d).strip()[:32000],
        "TaskSubtype": "Call",
        "Type": "Call",
        "Status": "Completed",
        "CallType": call_type(a.direction),
        "CallDurationInSeconds": round(a.duration_s or 0),
        "CallObject": a.call_id,
        "CallDisposition": (a.disposition or (str(a.outcome) if a.outcome else ""))[:255],
    }
    if activity_date:
        body["ActivityDate"] = activity_date
    who = a.contact_id
    if who and (who.startswith("003") or who.startswith("00Q")):
        body["WhoId"] = who
    what = a.account_id
    # a Task on a Lead cannot also have a WhatId
    if what and what.startswith("001") and not (who or "").startswith("00Q"):
        body["WhatId"] = what
    return body


class SalesforceConnector(RemoteConnector):
    name = "salesforce"

    def __init__(
        self,
        options: dict[str, Any],
        *,
        engine: Any = None,
        region: str = "FR",
        tenant: str = "default",
        session: aiohttp.ClientSession | None = None,
        sleep: Any = asyncio.sleep,
        timezone: str | None = None,
    ) -> None:
        self.options = options
        self.engine = engine
        self.region = region
        self.tenant = tenant
        self.tz: tzinfo = ZoneInfo(timezone) if timezone else UTC  # the day of ActivityDate
        self.login_url = str(options.get("login_url") or "https://login.salesforce.com").rstrip("/")
        self.instance_url = (options.get("instance_url") or "").rstrip("/") or None
        self.version = str(options.get("api_version") or "59.0").lstrip("v")
        self.extra_fields: dict[str, str] = dict(options.get("fields") or {"contact.role": "Title"})
        self.tokens = TokenCache(self._fetch_token, options.get("access_token"))
        self.http = RestClient(
            "salesforce",
            self.tokens.headers,
            session=session,
            timeout_s=float(options.get("timeout_s", 10)),
            sleep=sleep,
            max_wait_s=float(options.get("max_retry_wait_s", 30)),
        )
        self._locks: dict[str, asyncio.Lock] = {}

    # ---------------------------------------------------------------- auth

    def _grant(self) -> dict[str, str]:
        o = self.options
        base = {"client_id": str(o.get("client_id") or ""), "client_secret": str(o.get("client_secret") or "")}
        if o.get("refresh_token"):
            return {"grant_type": "refresh_token", "refresh_token": str(o["refresh_token"]), **base}
        if o.get("username"):
            return {
                "grant_type": "password",
                "username": str(o["username"]),
                "password": str(o.get("password") or "") + str(o.get("security_token") or ""),
                **base,
            }
        return {"grant_type": "client_credentials", **base}

    async def _fetch_token(self) -> str:
        url = f"{self.login_url}/services/oauth2/token"
        try:
            _, body = await self.http.request("POST", url, data=self._grant(), authenticated=False)
        except CrmUnavailable:
            raise
        except CrmError as exc:
            raise CrmAuthError(f"salesforce: token request refused: {exc}") from None
        if not isinstance(body, dict) or not body.get("access_token"):
            raise CrmAuthError(f"salesforce: token answer without access_token: {error_message(body)}")
        if body.get("instance_url") and not self.options.get("instance_url"):
            self.instance_url = str(body["instance_url"]).rstrip("/")
        return str(body["access_token"])

    async def _api(self, method: str, path: str, *, replay: bool = True, **kw: Any) -> Any:
        if self.instance_url is None:
            await self.tokens.headers(force=False)  # the token answer tells the instance
        if self.instance_url is None:
            raise CrmError("salesforce: instance_url is needed with a static access_token (no token answer tells it)")
        try:
            _, body = await self.http.request(
                method, f"{self.instance_url}/services/data/v{self.version}{path}", replay=replay, **kw
            )
        except CrmError as exc:
            if type(exc) is CrmError and any(code in str(exc) for code in TRANSIENT_CODES):
                raise CrmUnavailable(str(exc)) from None
            raise
        return body

    # ---------------------------------------------------------------- lookup

    def sosl(self, e164: str) -> str:
        v = variants(e164, self.region)
        terms = " OR ".join(dict.fromkeys([v["national"], v["e164_digits"], v["nsn"]]))
        contact = CONTACT_FIELDS + [f for f in self.extra_fields.values() if f not in CONTACT_FIELDS]
        return (
            f"FIND {{{terms}}} IN PHONE FIELDS RETURNING Contact({', '.join(contact)}), "
            f"Account({', '.join(ACCOUNT_FIELDS)}), Lead({', '.join(LEAD_FIELDS)}) LIMIT 50"
        )

    async def lookup(self, e164: str) -> list[Contact]:
        body = await self._api("GET", "/search", params={"q": self.sosl(e164)})
        records = body.get("searchRecords", []) if isinstance(body, dict) else (body or [])
        out: list[Contact] = []
        for r in records:
            kind = str((r.get("attributes") or {}).get("type", "")).lower()
            phones = [r[f] for f in PHONE_FIELDS if r.get(f)]
            if not any(same_number(p, e164, self.region) for p in phones):
                continue
            out.append(self._contact(kind, r, e164))
        order = {"contact": 0, "lead": 1, "account": 2}
        return sorted(out, key=lambda c: (order.get(c.kind, 3), c.name))

    def _contact(self, kind: str, r: dict[str, Any], e164: str) -> Contact:
        rid = str(r.get("Id"))
        url = f"{self.instance_url}/lightning/r/{kind.capitalize()}/{rid}/view" if self.instance_url else None
        fields: dict[str, Any] = {}
        for ours, theirs in self.extra_fields.items():
            val = _get(r, theirs)
            if val is not None:
                fields[ours] = val
        if kind == "account":
            fields.setdefault("account.name", r.get("Name"))
            return Contact(
                id=rid,
                name=str(r.get("Name") or rid),
                phones=(e164,),
                account_id=rid,
                account_name=r.get("Name"),
                owner=r.get("OwnerId"),
                url=url,
                kind="account",
                fields=fields,
            )
        account_name = _get(r, "Account.Name") if kind == "contact" else r.get("Company")
        if account_name:
            fields.setdefault("account.name", account_name)
        return Contact(
            id=rid,
            name=str(r.get("Name") or full_name(r.get("FirstName"), r.get("LastName"), rid)),
            phones=(e164,),
            first_name=r.get("FirstName"),
            last_name=r.get("LastName"),
            email=r.get("Email"),
            role=r.get("Title"),
            account_id=r.get("AccountId"),
            account_name=account_name,
            owner=r.get("OwnerId"),
            url=url,
            kind=kind or "contact",
            fields=fields,
        )

    # ---------------------------------------------------------------- activities

    async def _task_id(self, call_id: str) -> str | None:
        if not _SOQL_SAFE.match(call_id):
            raise CrmError(f"salesforce: call id {call_id!r} has characters SOQL cannot quote safely")
        body = await self._api(
            "GET", "/query", params={"q": f"SELECT Id FROM Task WHERE CallObject = '{call_id}' LIMIT 1"}
        )
        recs = (body or {}).get("records") or []
        return str(recs[0]["Id"]) if recs else None

    async def log_activity(self, activity: Activity) -> str:
        lock = self._locks.setdefault(activity.call_id, asyncio.Lock())
        try:
            async with lock:
                return await self._upsert_task(activity)
        finally:
            if not lock.locked():
                self._locks.pop(activity.call_id, None)

    async def _upsert_task(self, activity: Activity) -> str:
        fields = task_fields(activity, activity_date(activity, self.tz))
        if activity.crm_ref and activity.crm_ref.startswith("00T"):
            try:
                await self._update_task(activity.crm_ref, fields)
                return activity.crm_ref
            except CrmError as exc:
                if isinstance(exc, CrmUnavailable) or ": 404 " not in str(exc):
                    raise  # a deleted Task (404) is looked up / created again below
        existing = await self._task_id(activity.call_id)
        if existing:
            await self._update_task(existing, fields)
            return existing
        body = await self._api("POST", "/sobjects/Task", json=fields, replay=False)
        if not isinstance(body, dict) or not body.get("id"):
            raise CrmError(f"salesforce: Task not created: {error_message(body)}")
        return str(body["id"])

    async def _update_task(self, task_id: str, fields: dict[str, Any]) -> None:
        """PATCH without the insert-only fields, keeping a transcript attached since the last push
        (the wrap-up often comes after the transcription)."""
        fields = {k: v for k, v in fields.items() if k not in CREATE_ONLY}
        task = await self._api("GET", f"/sobjects/Task/{task_id}", params={"fields": "Description"})
        desc = keep_transcript(fields.get("Description"), (task or {}).get("Description"), TRANSCRIPT_MARK)
        if desc is not None:
            fields["Description"] = desc[:32000]
        await self._api("PATCH", f"/sobjects/Task/{task_id}", json=fields)

    async def log_transcript(self, call_id: str, transcript_text: str, summary: dict[str, Any] | None) -> str | None:
        task_id = await self._task_id(call_id)
        if task_id is None:
            raise CrmUnavailable(f"salesforce: no Task for call {call_id} yet")
        task = await self._api("GET", f"/sobjects/Task/{task_id}", params={"fields": "Description"})
        base = str((task or {}).get("Description") or "").split(TRANSCRIPT_MARK)[0]
        extra = ""
        if summary and summary.get("key_points"):
            extra += "Summary:\n" + "\n".join(f"- {p}" for p in summary["key_points"]) + "\n\n"
        desc = (base + TRANSCRIPT_MARK + extra + transcript_text)[:32000]
        await self._api("PATCH", f"/sobjects/Task/{task_id}", json={"Description": desc})
        return task_id

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
        body = await self._api(
            "POST",
            "/sobjects/Contact",
            json={"FirstName": first_name, "LastName": last_name or phone, "Email": email, "Phone": phone},
        )
        cid = str(body["id"])
        return Contact(
            id=cid,
            name=full_name(first_name, last_name, phone),
            phones=(phone,),
            first_name=first_name,
            last_name=last_name,
            email=email,
            account_name=account_name,
        )



@register("salesforce")
def _factory(
    settings: Any, *, engine: Any, region: str, tenant: str, session: Any = None, timezone: str | None = None,
    **_: Any,
) -> SalesforceConnector:
    opts = settings.options
    if not opts.get("client_id") and not opts.get("access_token"):
        raise CrmError("crm: salesforce needs client_id (and client_secret_env) or access_token_env")
    return SalesforceConnector(opts, engine=engine, region=region, tenant=tenant, session=session, timezone=timezone)
