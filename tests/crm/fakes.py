"""Faithful fakes of the CRM APIs we talk to, as aiohttp apps on loopback.

Written from the vendors' public REST documentation: request shapes, auth, error
bodies and codes, paging. They keep what a test must check (every request, every
token issued) and can be told to expire tokens, throttle (429 + Retry-After) or fail.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _digits(s: str | None) -> str:
    return re.sub(r"\D", "", s or "")


class _Base:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.tokens: set[str] = set()
        self.issued = 0
        self.throttle: list[str | None] = []  # one entry per request to throttle: its Retry-After (None: no header)
        self.fail_with: int | None = None  # answer every API call with this status (outage)
        self._ids = itertools.count(1)

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def _throttled(self, body: Any) -> web.Response | None:
        if self.throttle:
            ra = self.throttle.pop(0)
            headers = {"Retry-After": ra} if ra is not None else {}
            return web.json_response(body, status=429, headers=headers)
        return None


# --------------------------------------------------------------------------------------------- Salesforce


class FakeSalesforce(_Base):
    """REST API v59.0: OAuth token endpoint, SOSL search, SOQL query, sObject Task/Contact CRUD."""

    TASK_FIELDS = {
        "Subject",
        "Description",
        "TaskSubtype",
        "Type",
        "Status",
        "CallType",
        "CallDurationInSeconds",
        "CallObject",
        "CallDisposition",
        "ActivityDate",
        "WhoId",
        "WhatId",
        "OwnerId",
        "Priority",
    }

    # every phone-typed field of Contact, Lead, Account: SOSL's IN PHONE FIELDS searches them all
    PHONE_FIELDS = ("Phone", "MobilePhone", "HomePhone", "OtherPhone", "AssistantPhone", "Fax")
    # createable but not updateable (Task object reference: no Update property)
    CREATE_ONLY = {"TaskSubtype"}

    def __init__(self, client_id: str = "cid", client_secret: str = "secret") -> None:
        super().__init__()
        self.client_id, self.client_secret = client_id, client_secret
        self.refresh_token = "rt-1"
        self.users = {"agent@example.com": "pw"}
        self.records: dict[str, list[dict[str, Any]]] = {"Contact": [], "Account": [], "Lead": []}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.searches: list[str] = []
        self.base_url = ""
        self.over_limit = False  # the org's API request allocation is spent (403 REQUEST_LIMIT_EXCEEDED)
        self.locked_rows = 0  # the next N Task writes meet a row lock (UNABLE_TO_LOCK_ROW)
        self.create_delay_s = 0.0  # the Task insert commits, then the answer is this late

    def add(self, sobject: str, **fields: Any) -> str:
        prefix = {"Contact": "003", "Account": "001", "Lead": "00Q"}[sobject]
        rid = fields.pop("Id", None) or f"{prefix}{next(self._ids):015d}"
        self.records[sobject].append({"Id": rid, **fields})
        return rid

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._mw])
        app.router.add_post("/services/oauth2/token", self.token)
        v = "/services/data/v59.0"
        app.router.add_get(f"{v}/search", self.search)
        app.router.add_get(f"{v}/query", self.query)
        app.router.add_post(f"{v}/sobjects/Task", self.create_task)
        app.router.add_patch(v + "/sobjects/Task/{id}", self.update_task)
        app.router.add_get(v + "/sobjects/Task/{id}", self.get_task)
        app.router.add_post(f"{v}/sobjects/Contact", self.create_contact)
        return app

    @web.middleware
    async def _mw(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.path.startswith("/services/data/"):
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
                return web.json_response(
                    [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], status=401
                )
            if self.fail_with:
                return web.json_response(
                    [{"message": "Service Unavailable", "errorCode": "SERVER_UNAVAILABLE"}], status=self.fail_with
                )
            if self.over_limit:
                # Salesforce answers a spent allocation with 403, not 429
                return web.json_response(
                    [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}], status=403
                )
            limited = self._throttled(
                [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
            )
            if limited:
                return limited
        return await handler(request)

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant = form.get("grant_type")
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return web.json_response(
                {"error": "invalid_client", "error_description": "invalid client credentials"}, status=400
            )
        if grant == "password":
            if self.users.get(str(form.get("username"))) != form.get("password"):
                return web.json_response(
                    {"error": "invalid_grant", "error_description": "authentication failure"}, status=400
                )
        elif grant == "refresh_token":
            if form.get("refresh_token") != self.refresh_token:
                return web.json_response(
                    {"error": "invalid_grant", "error_description": "expired access/refresh token"}, status=400
                )
        elif grant != "client_credentials":
            return web.json_response(
                {"error": "unsupported_grant_type", "error_description": "grant type not supported"}, status=400
            )
        self.issued += 1
        tok = f"00D000000000001!tok{self.issued}"
        self.tokens.add(tok)
        return web.json_response(
            {
                "access_token": tok,
                "instance_url": str(request.url.origin()),
                "id": f"{request.url.origin()}/id/00D000000000001/005000000000001",
                "token_type": "Bearer",
                "issued_at": "1700000000000",
                "signature": "sig",
            }
        )

    def _project(self, sobject: str, rec: dict[str, Any], fields: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "attributes": {"type": sobject, "url": f"/services/data/v59.0/sobjects/{sobject}/{rec['Id']}"}
        }
        for f in fields:
            if "." in f:
                rel, sub = f.split(".", 1)
                if rel == "Account":
                    acc = next((a for a in self.records["Account"] if a["Id"] == rec.get("AccountId")), None)
                    out["Account"] = (
                        None
                        if acc is None
                        else {
                            "attributes": {
                                "type": "Account",
                                "url": f"/services/data/v59.0/sobjects/Account/{acc['Id']}",
                            },
                            sub: acc.get(sub),
                        }
                    )
                continue
            out[f] = rec.get(f)
        return out

    async def search(self, request: web.Request) -> web.Response:
        q = request.query.get("q", "")
        self.searches.append(q)
        m = re.match(r"^FIND \{(.+?)\} IN PHONE FIELDS RETURNING (.+?)(?: LIMIT (\d+))?$", q)
        if not m:
            return web.json_response(
                [{"message": f"unexpected token: {q[:40]}", "errorCode": "MALFORMED_SEARCH"}], status=400
            )
        terms = [t.strip().strip('"') for t in m.group(1).split(" OR ")]
        if any(re.search(r"[?&|!{}\[\]()^~*:\\\"'+\-]", t) for t in terms):
            return web.json_response(
                [{"message": "reserved character not escaped", "errorCode": "MALFORMED_SEARCH"}], status=400
            )
        results = []
        for obj, flds in re.findall(r"(\w+)\(([^)]*)\)", m.group(2)):
            fields = [f.strip() for f in flds.split(",")]
            for rec in self.records.get(obj, []):
                nums = [_digits(rec.get(f)) for f in self.PHONE_FIELDS]
                # Salesforce phone search ignores formatting; a term matches a number ending with it
                if any(n and len(t) >= 7 and (n == t or n.endswith(t)) for n in nums for t in terms):
                    results.append(self._project(obj, rec, fields))
        return web.json_response({"searchRecords": results})

    async def query(self, request: web.Request) -> web.Response:
        q = request.query.get("q", "")
        m = re.match(r"^SELECT Id FROM Task WHERE CallObject = '([^'\\]*)' LIMIT 1$", q)
        if not m:
            return web.json_response([{"message": "unsupported query", "errorCode": "MALFORMED_QUERY"}], status=400)
        recs = [
            {"attributes": {"type": "Task", "url": f"/services/data/v59.0/sobjects/Task/{tid}"}, "Id": tid}
            for tid, t in self.tasks.items()
            if t.get("CallObject") == m.group(1)
        ][:1]
        return web.json_response({"totalSize": len(recs), "done": True, "records": recs})

    def _bad_fields(self, body: dict[str, Any]) -> web.Response | None:
        for k in body:
            if k not in self.TASK_FIELDS:
                return web.json_response(
                    [{"message": f"No such column '{k}' on sobject of type Task", "errorCode": "INVALID_FIELD"}],
                    status=400,
                )
        if "WhoId" in body and not str(body["WhoId"]).startswith(("003", "00Q")):
            return web.json_response(
                [
                    {
                        "message": "Name ID: id value of incorrect type",
                        "errorCode": "FIELD_INTEGRITY_EXCEPTION",
                        "fields": ["WhoId"],
                    }
                ],
                status=400,
            )
        return None

    def _lock_busy(self) -> web.Response | None:
        if self.locked_rows:
            self.locked_rows -= 1
            return web.json_response(
                [
                    {
                        "message": "unable to obtain exclusive access to this record",
                        "errorCode": "UNABLE_TO_LOCK_ROW",
                        "fields": [],
                    }
                ],
                status=400,
            )
        return None

    async def create_task(self, request: web.Request) -> web.Response:
        body = await request.json()
        bad = self._bad_fields(body) or self._lock_busy()
        if bad:
            return bad
        tid = f"00T{next(self._ids):015d}"
        self.tasks[tid] = dict(body)
        if self.create_delay_s:
            await asyncio.sleep(self.create_delay_s)  # committed; the client may give up waiting
        return web.json_response({"id": tid, "success": True, "errors": []}, status=201)

    async def update_task(self, request: web.Request) -> web.Response:
        tid = request.match_info["id"]
        if tid not in self.tasks:
            return web.json_response(
                [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}], status=404
            )
        body = await request.json()
        bad = self._bad_fields(body) or self._create_only(body) or self._lock_busy()
        if bad:
            return bad
        self.tasks[tid].update(body)
        return web.Response(status=204)

    def _create_only(self, body: dict[str, Any]) -> web.Response | None:
        stuck = sorted(self.CREATE_ONLY & set(body))
        if stuck:
            return web.json_response(
                [
                    {
                        "message": f"Unable to create/update fields: {', '.join(stuck)}. Please check the security "
                        "settings of this field and verify that it is read/write for your profile or permission set.",
                        "errorCode": "INVALID_FIELD_FOR_INSERT_UPDATE",
                        "fields": stuck,
                    }
                ],
                status=400,
            )
        return None

    async def get_task(self, request: web.Request) -> web.Response:
        tid = request.match_info["id"]
        if tid not in self.tasks:
            return web.json_response(
                [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}], status=404
            )
        fields = request.query.get("fields", "").split(",")
        return web.json_response(
            {"attributes": {"type": "Task"}, "Id": tid, **{f: self.tasks[tid].get(f) for f in fields if f}}
        )

    async def create_contact(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not body.get("LastName"):
            return web.json_response(
                [
                    {
                        "message": "Required fields are missing: [LastName]",
                        "errorCode": "REQUIRED_FIELD_MISSING",
                        "fields": ["LastName"],
                    }
                ],
                status=400,
            )
        rid = self.add("Contact", **body)
        return web.json_response({"id": rid, "success": True, "errors": []}, status=201)


# --------------------------------------------------------------------------------------------- HubSpot


def _hs_searchable(number: str | None) -> str:
    """HubSpot's hs_searchable_calculated_*: the number's digits without country code or trunk 0."""
    d = _digits(number)
    if number and number.strip().startswith("+"):
        for cc in ("33", "44", "1"):
            if d.startswith(cc):
                return d[len(cc) :]
    return d[1:] if d.startswith("0") else d


class FakeHubSpot(_Base):
    """CRM API v3: contacts search (filterGroups, paging `after`), calls objects + search, OAuth refresh."""

    def __init__(self) -> None:
        super().__init__()
        self.contacts: list[dict[str, Any]] = []
        self.calls: dict[str, dict[str, Any]] = {}
        self.associations: dict[str, list[dict[str, Any]]] = {}
        self.call_properties = {
            "hs_timestamp",
            "hs_call_title",
            "hs_call_body",
            "hs_call_direction",
            "hs_call_duration",
            "hs_call_from_number",
            "hs_call_to_number",
            "hs_call_status",
            "hs_call_recording_url",
            "hs_call_disposition",
            "cti_call_id",
        }
        self.client_id, self.client_secret, self.refresh_token = "hcid", "hsecret", "hrt-1"
        self.search_bodies: list[dict[str, Any]] = []
        self.create_delay_s = 0.0  # the engagement is created, then the answer is this late

    def add_contact(self, **props: Any) -> str:
        cid = str(100 + next(self._ids))
        self.contacts.append({"id": cid, "properties": {k: str(v) for k, v in props.items()}})
        return cid

    def give_token(self, token: str = "pat-na1-static") -> str:
        self.tokens.add(token)
        return token

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._mw])
        app.router.add_post("/oauth/v1/token", self.oauth)
        app.router.add_post("/crm/v3/objects/contacts/search", self.search_contacts)
        app.router.add_post("/crm/v3/objects/contacts", self.create_contact)
        app.router.add_post("/crm/v3/objects/calls", self.create_call)
        app.router.add_post("/crm/v3/objects/calls/search", self.search_calls)
        app.router.add_patch("/crm/v3/objects/calls/{id}", self.update_call)
        app.router.add_get("/crm/v3/objects/calls/{id}", self.get_call)
        return app

    @web.middleware
    async def _mw(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.path.startswith("/crm/"):
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
                return web.json_response(
                    {
                        "status": "error",
                        "message": "Authentication credentials not found.",
                        "correlationId": "c0",
                        "category": "INVALID_AUTHENTICATION",
                    },
                    status=401,
                )
            if self.fail_with:
                return web.json_response(
                    {"status": "error", "message": "internal error", "category": "INTERNAL_ERROR"},
                    status=self.fail_with,
                )
            limited = self._throttled(
                {
                    "status": "error",
                    "message": "You have reached your secondly limit.",
                    "errorType": "RATE_LIMIT",
                    "correlationId": "c1",
                    "policyName": "SECONDLY",
                }
            )
            if limited:
                return limited
        return await handler(request)

    async def oauth(self, request: web.Request) -> web.Response:
        form = await request.post()
        if (
            form.get("grant_type") != "refresh_token"
            or form.get("client_id") != self.client_id
            or form.get("client_secret") != self.client_secret
            or form.get("refresh_token") != self.refresh_token
        ):
            return web.json_response(
                {"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token"}, status=400
            )
        self.issued += 1
        tok = f"hs-access-{self.issued}"
        self.tokens.add(tok)
        return web.json_response(
            {"token_type": "bearer", "refresh_token": self.refresh_token, "access_token": tok, "expires_in": 1800}
        )

    def _validate_search(self, body: dict[str, Any]) -> web.Response | None:
        groups = body.get("filterGroups") or []
        total = sum(len(g.get("filters") or []) for g in groups)
        if len(groups) > 5 or any(len(g.get("filters") or []) > 6 for g in groups) or total > 18:
            return web.json_response(
                {"status": "error", "message": "Too many filter groups or filters", "category": "VALIDATION_ERROR"},
                status=400,
            )
        if int(body.get("limit", 10)) > 200:
            return web.json_response(
                {"status": "error", "message": "limit must be <= 200", "category": "VALIDATION_ERROR"}, status=400
            )
        return None

    @staticmethod
    def _match(props: dict[str, Any], groups: list[dict[str, Any]]) -> bool:
        if not groups:
            return True

        def ok(f: dict[str, Any]) -> bool:
            if f.get("operator") != "EQ":
                return False
            name = f["propertyName"]
            if name == "hs_searchable_calculated_phone_number":
                val = _hs_searchable(props.get("phone"))
            elif name == "hs_searchable_calculated_mobile_number":
                val = _hs_searchable(props.get("mobilephone"))
            else:
                val = props.get(name)
            return val is not None and str(val).lower() == str(f.get("value")).lower()

        return any(all(ok(f) for f in g.get("filters") or []) for g in groups)

    def _page(self, items: list[dict[str, Any]], body: dict[str, Any]) -> dict[str, Any]:
        limit = int(body.get("limit", 10))
        start = int(body.get("after") or 0)
        page = items[start : start + limit]
        wanted = body.get("properties") or []
        results = [
            {
                "id": it["id"],
                "properties": {**{p: it["properties"].get(p) for p in wanted}, "hs_object_id": it["id"]},
                "createdAt": "2026-01-01T00:00:00Z",
                "updatedAt": "2026-01-01T00:00:00Z",
                "archived": False,
            }
            for it in page
        ]
        out: dict[str, Any] = {"total": len(items), "results": results}
        if start + limit < len(items):
            out["paging"] = {"next": {"after": str(start + limit), "link": f"?after={start + limit}"}}
        return out

    async def search_contacts(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.search_bodies.append(body)
        bad = self._validate_search(body)
        if bad:
            return bad
        hits = [c for c in self.contacts if self._match(c["properties"], body.get("filterGroups") or [])]
        return web.json_response(self._page(hits, body))

    async def create_contact(self, request: web.Request) -> web.Response:
        body = await request.json()
        cid = self.add_contact(**body.get("properties", {}))
        return web.json_response({"id": cid, "properties": body.get("properties", {})}, status=201)

    def _bad_props(self, props: dict[str, Any]) -> web.Response | None:
        for k in props:
            if k not in self.call_properties:
                return web.json_response(
                    {
                        "status": "error",
                        "message": f'Property "{k}" does not exist',
                        "category": "VALIDATION_ERROR",
                        "errors": [{"code": "PROPERTY_DOESNT_EXIST", "context": {"propertyName": [k]}}],
                    },
                    status=400,
                )
        return None

    async def create_call(self, request: web.Request) -> web.Response:
        body = await request.json()
        props = body.get("properties") or {}
        bad = self._bad_props(props)
        if bad:
            return bad
        if not props.get("hs_timestamp"):
            return web.json_response(
                {"status": "error", "message": "hs_timestamp is required", "category": "VALIDATION_ERROR"}, status=400
            )
        cid = str(9000 + next(self._ids))
        self.calls[cid] = {"id": cid, "properties": dict(props)}
        self.associations[cid] = list(body.get("associations") or [])
        if self.create_delay_s:
            await asyncio.sleep(self.create_delay_s)  # created; the client may give up waiting
        return web.json_response({"id": cid, "properties": props, "archived": False}, status=201)

    async def search_calls(self, request: web.Request) -> web.Response:
        body = await request.json()
        bad = self._validate_search(body)
        if bad:
            return bad
        hits = [c for c in self.calls.values() if self._match(c["properties"], body.get("filterGroups") or [])]
        return web.json_response(self._page(hits, body))

    async def get_call(self, request: web.Request) -> web.Response:
        cid = request.match_info["id"]
        if cid not in self.calls:
            return web.json_response(
                {"status": "error", "message": "resource not found", "category": "OBJECT_NOT_FOUND"}, status=404
            )
        wanted = [p for p in request.query.get("properties", "").split(",") if p]
        props = self.calls[cid]["properties"]
        return web.json_response(
            {"id": cid, "properties": {**{p: props.get(p) for p in wanted}, "hs_object_id": cid}, "archived": False}
        )

    async def update_call(self, request: web.Request) -> web.Response:
        cid = request.match_info["id"]
        if cid not in self.calls:
            return web.json_response(
                {"status": "error", "message": "resource not found", "category": "OBJECT_NOT_FOUND"}, status=404
            )
        props = (await request.json()).get("properties") or {}
        bad = self._bad_props(props)
        if bad:
            return bad
        self.calls[cid]["properties"].update(props)
        return web.json_response(self.calls[cid])


# --------------------------------------------------------------------------------------------- in-house CRM


class FakeInHouse(_Base):
    """A typical in-house REST CRM: GET /api/people?phone=..., PUT /api/calls/{id} (upsert)."""

    def __init__(self, token: str = "inhouse-token") -> None:
        super().__init__()
        self.tokens.add(token)
        self.people: list[dict[str, Any]] = []
        self.calls: dict[str, dict[str, Any]] = {}
        self.transcripts: dict[str, dict[str, Any]] = {}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._mw])
        app.router.add_get("/api/people", self.people_search)
        app.router.add_put("/api/calls/{id}", self.put_call)
        app.router.add_put("/api/calls/{id}/transcript", self.put_transcript)
        return app

    @web.middleware
    async def _mw(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, str(request.rel_url)))
        if request.headers.get("Authorization", "")[7:] not in self.tokens:
            return web.json_response({"detail": "bad token"}, status=401)
        if self.fail_with:
            return web.json_response({"detail": "down"}, status=self.fail_with)
        limited = self._throttled({"detail": "slow down"})
        return limited or await handler(request)

    async def people_search(self, request: web.Request) -> web.Response:
        # deliberately loose, like many in-house searches: the last 9 digits
        want = _digits(request.query.get("phone"))[-9:]
        hits = [p for p in self.people if any(_digits(n).endswith(want) for n in p.get("phones", []))]
        return web.json_response({"data": hits, "count": len(hits)})

    async def put_call(self, request: web.Request) -> web.Response:
        cid = request.match_info["id"]
        body = json.loads(await request.text())
        created = cid not in self.calls
        self.calls[cid] = body
        return web.json_response({"id": f"CALL-{cid}"}, status=201 if created else 200)

    async def put_transcript(self, request: web.Request) -> web.Response:
        self.transcripts[request.match_info["id"]] = await request.json()
        return web.json_response({"ok": True})
