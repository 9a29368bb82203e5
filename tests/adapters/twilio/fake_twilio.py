"""A fake Twilio: the Programmable Voice REST API plus a driver that sends signed webhooks.

Modelled on Twilio's public docs (API version 2010-04-01):
- REST: HTTP basic auth AccountSid:AuthToken (401 code 20003 otherwise), form-encoded
  requests, JSON responses (snake_case resources), errors as
  `{"code", "message", "more_info", "status"}`: unknown resource 404 code 20404,
  rate limit 429 code 20429 (injected with `fail_next`).
- Resources: Calls (create, fetch, update with Twiml/Url/Status, list by Status, in pages of
  `PageSize`, at most `max_page_size`, linked by `next_page_uri`),
  Conferences (list by FriendlyName and Status),
  Calls/{sid}/Recordings (create, update Status=paused|in-progress|stopped, `Twilio.CURRENT`),
  Conferences/{name or sid}/Participants (create, update by CallSid or label).
- Webhooks: form-encoded POSTs signed with `X-Twilio-Signature` (HMAC-SHA1 of URL +
  sorted params, twilio's own RequestValidator computes it), carrying
  `I-Twilio-Idempotency-Token`, with the fields Twilio documents for voice, status,
  recording and conference callbacks. Callback URLs are the ones the adapter handed
  over in TwiML or REST forms, so the adapter's URL building is exercised for real.

The fake does not run calls by itself: tests drive a scenario step by step
(`inbound`, `leg_status`, `conference_event`, `recording_status`), the way the
real Twilio would report what phones did.
"""

from __future__ import annotations

import email.utils
import itertools
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator
from yarl import URL

API = "/2010-04-01/Accounts/{account}"
FORM = web.RequestKey("form", list)


def _sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def _now_rfc2822() -> str:
    return email.utils.format_datetime(datetime.now(UTC).replace(microsecond=0))


def _events(form: list[tuple[str, str]], key: str) -> tuple[str, ...]:
    return tuple(v for k, v in form if k == key) or ("completed",)


def _failure(status: int, html: bool) -> web.Response:
    if html:
        return web.Response(status=status, content_type="text/html",
                            text=f"<html><body><h1>{status} Internal Server Error</h1></body></html>")
    resp = _error(status, 20429 if status == 429 else 20500,
                  "Too Many Requests" if status == 429 else "Service Unavailable")
    if status == 429:
        resp.headers["Retry-After"] = "0"
    return resp


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"code": code, "message": message,
                              "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status},
                             status=status)


@dataclass
class FakeCall:
    sid: str
    from_: str
    to: str
    direction: str
    status: str = "queued"
    parent: str | None = None
    status_callback: str | None = None
    status_events: tuple[str, ...] = ("completed",)
    twiml: str | None = None
    label: str | None = None
    seq: itertools.count = field(default_factory=itertools.count)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    def resource(self, account: str) -> dict[str, Any]:
        return {
            "sid": self.sid, "account_sid": account, "parent_call_sid": self.parent,
            "from": self.from_, "to": self.to, "status": self.status, "direction": self.direction,
            "duration": str(int((datetime.now(UTC) - self.started).total_seconds())),
            "api_version": "2010-04-01", "date_created": email.utils.format_datetime(self.started),
            "uri": f"/2010-04-01/Accounts/{account}/Calls/{self.sid}.json",
        }


@dataclass
class FakeRecording:
    sid: str
    call_sid: str
    status: str
    callback: str | None
    events: tuple[str, ...]


class FakeTwilio:
    def __init__(self, account_sid: str = "AC" + "0" * 32, auth_token: str = "secret-token") -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.calls: dict[str, FakeCall] = {}
        self.recordings: dict[str, FakeRecording] = {}
        self.before_participant_answer: Any = None  # async (leg) -> None, awaited before the create answers
        self.participants: dict[str, dict[str, FakeCall]] = {}   # conference name -> label/sid -> leg
        self.conference_sids: dict[str, str] = {}
        self.requests: list[tuple[str, str, list[tuple[str, str]]]] = []
        self.fail_next: list[tuple[int, int]] = []                # (HTTP status, Twilio code)
        self.failures: list[tuple[re.Pattern[str], int, bool]] = []  # see `fail`
        self.max_page_size = 1000                                 # Twilio's cap on PageSize
        self.voice_url: str | None = None                       # the number's VoiceUrl
        self.status_url: str | None = None                      # the number's StatusCallback
        self.webhook_results: list[tuple[str, int, str]] = []
        self._validator = RequestValidator(auth_token)
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.url = ""

    # ---- server ------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        base = API.format(account="{account}")
        app.router.add_post(base + "/Calls.json", self._create_call)
        app.router.add_get(base + "/Calls.json", self._list_calls)
        app.router.add_get(base + "/Calls/{sid}.json", self._fetch_call)
        app.router.add_post(base + "/Calls/{sid}.json", self._update_call)
        app.router.add_post(base + "/Calls/{sid}/Recordings.json", self._create_recording)
        app.router.add_post(base + "/Calls/{sid}/Recordings/{rsid}.json", self._update_recording)
        app.router.add_get(base + "/Conferences.json", self._list_conferences)
        app.router.add_post(base + "/Conferences/{conf}/Participants.json", self._create_participant)
        app.router.add_post(base + "/Conferences/{conf}/Participants/{who}.json", self._update_participant)
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._http = aiohttp.ClientSession()
        return self.url

    async def close(self) -> None:
        if self._http:
            await self._http.close()
        if self._runner:
            await self._runner.cleanup()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        try:
            creds = aiohttp.BasicAuth.decode(auth) if auth else None
        except ValueError:
            creds = None
        if creds is None or (creds.login, creds.password) != (self.account_sid, self.auth_token):
            return _error(401, 20003, "Authenticate")
        if request.match_info.get("account") != self.account_sid:
            return _error(404, 20404, "The requested resource was not found")
        form = list(parse_qsl(await request.text(), keep_blank_values=True))
        self.requests.append((request.method, request.path, form))
        for i, (pattern, status, html) in enumerate(self.failures):
            if pattern.search(f"{request.method} {request.path_qs}"):
                del self.failures[i]
                return _failure(status, html)
        if self.fail_next:
            status, code = self.fail_next.pop(0)
            resp = _error(status, code, "Too Many Requests" if status == 429 else "Service Unavailable")
            if status == 429:
                resp.headers["Retry-After"] = "0"
            return resp
        request[FORM] = form
        return await handler(request)

    def fail(self, pattern: str, status: int, *, html: bool = False) -> None:
        """The next request whose `METHOD /path?query` matches `pattern` fails with `status`: a
        Twilio error (429 with Retry-After: 0), or with `html` the HTML page that the load
        balancers in front of the API serve for a 5xx."""
        self.failures.append((re.compile(pattern), status, html))

    def _call(self, request: web.Request) -> FakeCall | None:
        return self.calls.get(request.match_info["sid"])

    async def _create_call(self, request: web.Request) -> web.Response:
        form = request[FORM]
        f = dict(form)
        for key in ("To", "From"):
            if not f.get(key):
                return _error(400, 21201 if key == "To" else 21213, f"No '{key}' number is specified")
        if not (f.get("Twiml") or f.get("Url")):
            return _error(400, 21205, "Url parameter is required")
        call = FakeCall(sid=_sid("CA"), from_=f["From"], to=f["To"], direction="outbound-api",
                        status="queued", status_callback=f.get("StatusCallback"),
                        status_events=_events(form, "StatusCallbackEvent"),
                        twiml=f.get("Twiml"))
        self.calls[call.sid] = call
        return web.json_response(call.resource(self.account_sid), status=201)

    async def _list_calls(self, request: web.Request) -> web.Response:
        status = request.query.get("Status")
        calls = [c.resource(self.account_sid) for c in self.calls.values() if status in (None, c.status)]
        size = min(int(request.query.get("PageSize", 50)), self.max_page_size)
        page = int(request.query.get("Page", 0))
        start = page * size
        nxt = None
        if start + size < len(calls):  # Twilio links the next page with a token (the last sid)
            query = {**({"Status": status} if status else {}), "PageSize": str(size),
                     "Page": str(page + 1), "PageToken": "PA" + calls[start + size - 1]["sid"]}
            nxt = f"{request.path}?{urlencode(query)}"
        return web.json_response({"calls": calls[start:start + size], "page": page, "page_size": size,
                                  "next_page_uri": nxt, "first_page_uri": request.path_qs,
                                  "previous_page_uri": None})

    async def _fetch_call(self, request: web.Request) -> web.Response:
        call = self._call(request)
        if call is None:
            return _error(404, 20404, "The requested resource was not found")
        return web.json_response(call.resource(self.account_sid))

    async def _update_call(self, request: web.Request) -> web.Response:
        call = self._call(request)
        if call is None:
            return _error(404, 20404, "The requested resource was not found")
        f = dict(request[FORM])
        if "Twiml" in f:
            try:
                ET.fromstring(f["Twiml"])
            except ET.ParseError as exc:
                return _error(400, 12100, f"Document parse failure: {exc}")
            call.twiml = f["Twiml"]
            self._join_conference(call)
        if f.get("Status") in ("completed", "canceled"):
            call.status = f["Status"]
        return web.json_response(call.resource(self.account_sid))

    def _join_conference(self, call: FakeCall) -> None:
        """TwiML `<Dial><Conference participantLabel=..>name</Conference>` makes the call a participant."""
        conf = ET.fromstring(call.twiml or "<Response/>").find("./Dial/Conference")
        if conf is None:
            return
        self.conference_sids.setdefault(conf.text or "", _sid("CF"))
        parts = self.participants.setdefault(conf.text or "", {})
        parts[call.sid] = call
        if conf.get("participantLabel"):
            call.label = conf.get("participantLabel")
            parts[call.label] = call  # type: ignore[index]

    async def _create_recording(self, request: web.Request) -> web.Response:
        call = self._call(request)
        if call is None:
            return _error(404, 20404, "The requested resource was not found")
        form = request[FORM]
        f = dict(form)
        rec = FakeRecording(sid=_sid("RE"), call_sid=call.sid, status="in-progress",
                            callback=f.get("RecordingStatusCallback"),
                            events=tuple(v for k, v in form if k == "RecordingStatusCallbackEvent")
                            or ("completed",))
        self.recordings[rec.sid] = rec
        return web.json_response(self._rec_resource(rec), status=201)

    def _rec_resource(self, rec: FakeRecording) -> dict[str, Any]:
        return {"sid": rec.sid, "call_sid": rec.call_sid, "account_sid": self.account_sid,
                "status": rec.status, "channels": 2, "source": "StartCallRecordingAPI",
                "uri": f"/2010-04-01/Accounts/{self.account_sid}/Recordings/{rec.sid}.json"}

    async def _update_recording(self, request: web.Request) -> web.Response:
        sid, rsid = request.match_info["sid"], request.match_info["rsid"]
        if rsid == "Twilio.CURRENT":
            live = [r for r in self.recordings.values() if r.call_sid == sid and r.status != "stopped"]
            rec = live[-1] if live else None
        else:
            rec = self.recordings.get(rsid)
        if rec is None or rec.call_sid != sid:
            return _error(404, 20404, "The requested resource was not found")
        status = dict(request[FORM]).get("Status")
        if status not in ("paused", "in-progress", "stopped"):
            return _error(400, 21220, f"Invalid Status {status!r}")
        rec.status = status
        return web.json_response(self._rec_resource(rec))

    async def _list_conferences(self, request: web.Request) -> web.Response:
        """Conferences list, filtered by FriendlyName and Status (all fake conferences are in progress)."""
        name, status = request.query.get("FriendlyName"), request.query.get("Status")
        confs = [{"sid": csid, "friendly_name": cname, "status": "in-progress", "account_sid": self.account_sid}
                 for cname, csid in self.conference_sids.items()
                 if name in (None, cname) and status in (None, "in-progress")]
        return web.json_response({"conferences": confs, "page": 0, "page_size": 50, "next_page_uri": None})

    async def _create_participant(self, request: web.Request) -> web.Response:
        conf = request.match_info["conf"]
        form = request[FORM]
        f = dict(form)
        if f.get("CallSidToCoach") and f.get("Coaching") != "true":
            return _error(400, 21640, "CallSidToCoach requires Coaching=true")
        leg = FakeCall(sid=_sid("CA"), from_=f.get("From", ""), to=f.get("To", ""), direction="outbound-api",
                       status="queued", status_callback=f.get("StatusCallback"),
                       status_events=_events(form, "StatusCallbackEvent"),
                       label=f.get("Label"))
        self.calls[leg.sid] = leg
        conf_sid = self.conference_sids.setdefault(conf, _sid("CF"))
        parts = self.participants.setdefault(conf, {})
        parts[leg.sid] = leg
        if leg.label:
            parts[leg.label] = leg
        if self.before_participant_answer is not None:  # a test's chance to race the create
            await self.before_participant_answer(leg)
        return web.json_response({
            "call_sid": leg.sid, "conference_sid": conf_sid, "account_sid": self.account_sid,
            "label": leg.label, "coaching": f.get("Coaching") == "true",
            "call_sid_to_coach": f.get("CallSidToCoach"),
            "muted": f.get("Muted") == "true", "hold": False, "status": "queued",
        }, status=201)

    async def _update_participant(self, request: web.Request) -> web.Response:
        conf, who = request.match_info["conf"], request.match_info["who"]
        by_sid = {v: k for k, v in self.conference_sids.items()}
        if conf not in by_sid:  # updates name the conference by its sid (CF...), as Twilio's docs show
            return _error(404, 20404, "The requested resource was not found")
        conf = by_sid[conf]
        leg = self.participants.get(conf, {}).get(who)
        if leg is None:
            return _error(404, 20404, "The requested resource was not found")
        f = dict(request[FORM])
        return web.json_response({"call_sid": leg.sid, "conference_sid": self.conference_sids[conf],
                                  "label": leg.label, "hold": f.get("Hold") == "true",
                                  "muted": f.get("Muted") == "true", "coaching": f.get("Coaching") == "true",
                                  "status": "connected"})

    # ---- webhooks ----------------------------------------------------------------------

    async def post(self, url: str, params: dict[str, str], *, sign: bool = True, token: str | None = None,
                   signature: str | None = None, idempotency: str | None = None) -> tuple[int, str]:
        """POST a form-encoded webhook, signed as Twilio signs it."""
        assert self._http is not None
        headers = {"User-Agent": "TwilioProxy/1.1",
                   "I-Twilio-Idempotency-Token": idempotency or str(uuid.uuid4())}
        if sign:
            validator = RequestValidator(token) if token else self._validator
            headers["X-Twilio-Signature"] = signature or validator.compute_signature(url, params)
        # Twilio requests the URL it was given byte for byte (the one it signs); aiohttp
        # would re-quote it (`%40` -> `@`) unless told it is already encoded.
        async with self._http.post(URL(url, encoded=True), data=params, headers=headers) as resp:
            text = await resp.text()
        self.webhook_results.append((url, resp.status, text))
        return resp.status, text

    def _base_params(self, call: FakeCall) -> dict[str, str]:
        p = {
            "AccountSid": self.account_sid, "ApiVersion": "2010-04-01", "CallSid": call.sid,
            "CallStatus": call.status, "Called": call.to, "Caller": call.from_, "Direction": call.direction,
            "From": call.from_, "To": call.to, "CallerCountry": "FR", "CalledCountry": "FR",
        }
        if call.parent:
            p["ParentCallSid"] = call.parent
        return p

    async def inbound(self, from_: str, to: str) -> tuple[str, int, str]:
        """A customer calls one of the account's numbers: the voice webhook. -> (sid, status, TwiML)."""
        assert self.voice_url
        call = FakeCall(sid=_sid("CA"), from_=from_, to=to, direction="inbound", status="ringing",
                        status_callback=self.status_url, status_events=("completed",))
        self.calls[call.sid] = call
        status, text = await self.post(self.voice_url, self._base_params(call))
        if status == 200:
            call.twiml = text
            call.status = "in-progress"
        return call.sid, status, text

    async def leg_status(self, sid: str, status: str, *, duration: int | None = None,
                         sip_code: str | None = None) -> tuple[int, str] | None:
        """A call (or leg) changes status: the status callback, if it subscribed to that event."""
        call = self.calls[sid]
        call.status = status
        event = {"in-progress": "answered"}.get(status, status)
        if status in ("busy", "no-answer", "failed", "canceled"):
            event = "completed"
        if call.status_callback is None or event not in call.status_events:
            return None
        p = self._base_params(call)
        p.update({"Timestamp": _now_rfc2822(), "CallbackSource": "call-progress-events",
                  "SequenceNumber": str(next(call.seq))})
        if status in ("completed", "busy", "no-answer", "failed", "canceled"):
            p["CallDuration"] = str(duration if duration is not None else 0)
            p["Duration"] = str(((duration or 0) + 59) // 60)
        if sip_code:
            p["SipResponseCode"] = sip_code
        return await self.post(call.status_callback, p)

    def dial_leg(self, parent_sid: str) -> FakeCall:
        """The child leg of a `<Dial><Number|Client>` in the parent's TwiML (with its callback)."""
        parent = self.calls[parent_sid]
        root = ET.fromstring(parent.twiml or "<Response/>")
        noun = root.find("./Dial/*")
        assert noun is not None, f"no <Dial> noun in {parent.twiml}"
        to = noun.text or ""
        if noun.tag == "Client":
            to = "client:" + to
        leg = FakeCall(sid=_sid("CA"), from_=parent.from_, to=to, direction="outbound-dial", status="queued",
                       parent=parent_sid, status_callback=noun.get("statusCallback"),
                       status_events=tuple((noun.get("statusCallbackEvent") or "completed").split()))
        self.calls[leg.sid] = leg
        return leg

    def conference_of(self, sid: str) -> tuple[str, str, str]:
        """(name, statusCallback, participantLabel) from a call's `<Dial><Conference>` TwiML."""
        root = ET.fromstring(self.calls[sid].twiml or "<Response/>")
        conf = root.find("./Dial/Conference")
        assert conf is not None, f"call {sid} was not put into a conference: {self.calls[sid].twiml}"
        return conf.text or "", conf.get("statusCallback") or "", conf.get("participantLabel") or ""

    async def conference_event(self, conf_name: str, event: str, call_sid: str, label: str | None = None,
                               **flags: str) -> tuple[int, str]:
        """A conference status callback (participant-join/leave/hold/unhold, conference-end...)."""
        owner = next(c for c in self.calls.values() if c.twiml and f">{conf_name}</Conference>" in c.twiml)
        _, url, _ = self.conference_of(owner.sid)
        conf_sid = self.conference_sids.setdefault(conf_name, _sid("CF"))
        seq = self.__dict__.setdefault("_conf_seq", {}).setdefault(conf_name, itertools.count(1))
        p = {
            "AccountSid": self.account_sid, "ConferenceSid": conf_sid, "FriendlyName": conf_name,
            "StatusCallbackEvent": event, "CallSid": call_sid, "SequenceNumber": str(next(seq)),
            "Timestamp": _now_rfc2822(), "Muted": "false", "Hold": str(event == "participant-hold").lower(),
            "Coaching": "false", "EndConferenceOnExit": "false", "StartConferenceOnEnter": "true",
        }
        if label:
            p["ParticipantLabel"] = label
        p.update(flags)
        return await self.post(url, p)

    async def recording_status(self, rsid: str, status: str, duration: int = 0) -> tuple[int, str] | None:
        rec = self.recordings[rsid]
        if rec.callback is None or status not in rec.events:
            return None
        p = {
            "AccountSid": self.account_sid, "CallSid": rec.call_sid, "RecordingSid": rec.sid,
            "RecordingStatus": status, "RecordingChannels": "2", "RecordingSource": "StartCallRecordingAPI",
            "RecordingTrack": "both", "RecordingStartTime": _now_rfc2822(),
            "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{self.account_sid}/Recordings/{rec.sid}",
        }
        if status == "completed":
            p["RecordingDuration"] = str(duration)
        return await self.post(rec.callback, p)

    def last(self, method: str, path_suffix: str) -> list[tuple[str, str]]:
        """The form of the last request whose path ends with `path_suffix`."""
        for m, path, form in reversed(self.requests):
            if m == method and path.endswith(path_suffix):
                return form
        raise AssertionError(f"no {method} ...{path_suffix} among {[(m, p) for m, p, _ in self.requests]}")
