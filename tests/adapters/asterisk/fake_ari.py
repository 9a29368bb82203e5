"""A fake Asterisk speaking ARI: REST resources + the `/ari/events` WebSocket.

Written from the ARI reference (channels, bridges, recordings, playbacks, events): the
same paths, query parameters, status codes and JSON shapes, and the event sequences
Asterisk emits for originate / answer / hangup / bridge / snoop / record. It keeps no
event backlog (like Asterisk): an event sent while no application socket is connected
is lost, which is what the reconnect tests rely on.

Endpoint behaviour is scripted per endpoint: `fake.endpoints["PJSIP/alice"] =
Behaviour("answer", delay=0.05)`; actions: answer | noanswer | busy | manual.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import re
import wave
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import WSMsgType, web

CAUSE_TXT = {16: "Normal Clearing", 17: "User busy", 19: "No user responding", 0: "Unknown",
             26: "Answered elsewhere", 34: "Circuit/channel congestion"}


@dataclass
class Behaviour:
    action: str = "answer"   # answer | noanswer | busy | manual
    delay: float = 0.02


@dataclass
class Chan:
    id: str
    name: str
    state: str
    caller: str = ""
    exten: str = ""
    context: str = "from-trunk"
    app_args: list[str] = field(default_factory=list)
    creation: str = ""
    in_stasis: bool = False
    originated: bool = False
    bridge: str | None = None
    snoop_of: str | None = None
    hold: bool = False

    def json(self, app: str) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "state": self.state,
            "protocol_id": "", "caller": {"name": "", "number": self.caller},
            "connected": {"name": "", "number": ""}, "accountcode": "",
            "dialplan": {"context": self.context, "exten": self.exten, "priority": 1,
                         "app_name": "Stasis" if self.in_stasis else "AppDial2",
                         "app_data": app if self.in_stasis else "(Outgoing Line)"},
            "creationtime": self.creation, "language": "en",
        }


class FakeARI:
    def __init__(self, app: str = "cti", username: str = "cti", password: str = "secret") -> None:
        self.app_name = app
        self.username = username
        self.password = password
        self.channels: dict[str, Chan] = {}
        self.bridges: dict[str, list[str]] = {}
        self.live: dict[str, dict[str, Any]] = {}      # recording name -> LiveRecording
        self.stored: set[str] = set()
        self.endpoints: dict[str, Behaviour] = {}
        self.sockets: list[web.WebSocketResponse] = []
        self.ws_auth: list[str] = []  # how each events socket authenticated: "header" or "api_key"
        self.wire_log: list[str] = []                 # every event sent (for fixtures)
        self.requests: list[tuple[str, str]] = []
        self.failures: list[tuple[str, re.Pattern[str], int]] = []
        self._ids = itertools.count(1)
        self._t = datetime(2026, 11, 22, 9, 0, 0, tzinfo=UTC)
        self.skew = timedelta(0)  # how far Asterisk's clock runs ahead of this host's
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.connected = asyncio.Event()

    # ---- server ------------------------------------------------------------------------

    async def start(self, port: int = 0) -> int:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/ari/events", self._events_ws)
        app.router.add_route("*", "/ari/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for ws in list(self.sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        ok = request.query.get("api_key") == f"{self.username}:{self.password}"
        if not ok and request.headers.get("Authorization"):
            import base64
            kind, _, b64 = request.headers["Authorization"].partition(" ")
            ok = kind == "Basic" and base64.b64decode(b64).decode() == f"{self.username}:{self.password}"
        if not ok:
            return web.json_response({"message": "Authentication required"}, status=401)
        return await handler(request)

    async def _events_ws(self, request: web.Request) -> web.StreamResponse:
        self.ws_auth.append("api_key" if "api_key" in request.query else "header")
        if request.query.get("app") != self.app_name:
            return web.json_response({"message": "Invalid application provided in param [app]."}, status=400)
        ws = web.WebSocketResponse(protocols=("ari",))
        await ws.prepare(request)
        self.sockets.append(ws)
        self.connected.set()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            if ws in self.sockets:
                self.sockets.remove(ws)
        return ws

    # ---- event emission ----------------------------------------------------------------

    def _ts(self) -> str:
        # strictly increasing millisecond timestamps, in Asterisk's format
        now = datetime.now(UTC) + self.skew
        self._t = max(now, self._t + timedelta(milliseconds=1))
        return self._t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self._t.microsecond // 1000:03d}+0000"

    def emit(self, etype: str, **body: Any) -> None:
        ev = {"type": etype, "timestamp": self._ts(), **body,
              "asterisk_id": "02:42:ac:11:00:02", "application": self.app_name}
        text = json.dumps(ev)
        self.wire_log.append(text)
        for ws in list(self.sockets):
            if not ws.closed:
                self._spawn(ws.send_str(text))

    def send_raw(self, text: str) -> None:
        for ws in list(self.sockets):
            self._spawn(ws.send_str(text))

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _later(self, delay: float, fn: Any, *args: Any) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            fn(*args)
        self._spawn(run())

    def _cj(self, ch: Chan) -> dict[str, Any]:
        return ch.json(self.app_name)

    def _bj(self, bid: str) -> dict[str, Any]:
        return {"id": bid, "technology": "simple_bridge", "bridge_type": "mixing", "bridge_class": "stasis",
                "creator": "Stasis", "name": "", "channels": list(self.bridges.get(bid, [])),
                "creationtime": self._t.isoformat(), "video_mode": "none"}

    # ---- the telephony world (what tests drive) ----------------------------------------

    def incoming(self, caller: str, exten: str) -> str:
        """A call from the trunk reaches Stasis(app)."""
        n = next(self._ids)
        cid = f"1763802000.{n}"
        ch = Chan(cid, f"PJSIP/trunk-{n:08x}", "Ring", caller=caller, exten=exten, in_stasis=True,
                  creation=self._ts())
        self.channels[cid] = ch
        self.emit("StasisStart", args=[], channel=self._cj(ch))
        return cid

    def hangup(self, channel_id: str, cause: int = 16) -> None:
        ch = self.channels.get(channel_id)
        if ch is None:
            return
        self.emit("ChannelHangupRequest", cause=cause, channel=self._cj(ch))
        self._destroy(ch, cause)

    def press(self, channel_id: str, digit: str) -> None:
        ch = self.channels[channel_id]
        self.emit("ChannelDtmfReceived", digit=digit, duration_ms=120, channel=self._cj(ch))

    def phone_hold(self, channel_id: str, on: bool = True) -> None:
        """The party's own phone puts the call on hold (a re-INVITE with sendonly media)."""
        ch = self.channels[channel_id]
        self.emit("ChannelHold" if on else "ChannelUnhold", channel=self._cj(ch))

    def answer(self, channel_id: str) -> None:
        ch = self.channels.get(channel_id)
        if ch is None or ch.state == "Up":
            return
        self.emit("Dial", dialstatus="ANSWER", forward="", dialstring=ch.name.split("/", 1)[1],
                  peer=self._cj(ch))
        ch.state = "Up"
        self.emit("ChannelStateChange", channel=self._cj(ch))
        if ch.originated:
            ch.in_stasis = True
            self.emit("StasisStart", args=ch.app_args, channel=self._cj(ch))

    def fail(self, method: str, path_regex: str, status: int = 500) -> None:
        """The next request matching (method, path) fails with `status` (0: the connection
        drops before any answer)."""
        self.failures.append((method, re.compile(path_regex), status))

    def snoops(self) -> list[str]:
        return [c.id for c in self.channels.values() if c.snoop_of]

    def _leave_bridge(self, ch: Chan) -> None:
        if ch.bridge and ch.bridge in self.bridges:
            members = self.bridges[ch.bridge]
            if ch.id in members:
                members.remove(ch.id)
            bid, ch.bridge = ch.bridge, None
            self.emit("ChannelLeftBridge", bridge=self._bj(bid), channel=self._cj(ch))

    def _destroy(self, ch: Chan, cause: int) -> None:
        if ch.id not in self.channels:
            return
        self._leave_bridge(ch)
        if ch.in_stasis:
            self.emit("StasisEnd", channel=self._cj(ch))
        del self.channels[ch.id]
        self.emit("ChannelDestroyed", cause=cause, cause_txt=CAUSE_TXT.get(cause, "Unknown"),
                  channel=self._cj(ch))
        for snoop in [c for c in self.channels.values() if c.snoop_of == ch.id]:
            self._destroy(snoop, 16)

    def _ring_outcome(self, cid: str, behaviour: Behaviour, timeout: float) -> None:
        ch = self.channels.get(cid)
        if ch is None or ch.state == "Up":
            return
        if behaviour.action == "answer":
            self.answer(cid)
        elif behaviour.action == "busy":
            self.emit("Dial", dialstatus="BUSY", forward="", dialstring="", peer=self._cj(ch))
            self._destroy(ch, 17)

    def _ring_timeout(self, cid: str) -> None:
        ch = self.channels.get(cid)
        if ch is None or ch.state == "Up":
            return
        self.emit("Dial", dialstatus="NOANSWER", forward="", dialstring="", peer=self._cj(ch))
        self._destroy(ch, 19)

    # ---- REST ----------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        method = request.method
        self.requests.append((method, path))
        for i, (m, rx, status) in enumerate(self.failures):
            if m == method and rx.search(path):
                del self.failures[i]
                if status == 0 and request.transport is not None:
                    request.transport.abort()
                    return web.Response(status=204)  # never reaches the client
                return web.json_response({"message": "injected failure"}, status=status)
        q = request.query
        parts = path.strip("/").split("/")
        try:
            return await self._route(method, parts, q, request)
        except KeyError as exc:
            return web.json_response({"message": f"{exc.args[0]} not found"}, status=404)

    async def _route(self, method: str, parts: list[str], q: Any, request: web.Request) -> web.StreamResponse:
        res = parts[0]
        if res == "channels":
            if len(parts) == 1:
                if method == "GET":
                    return web.json_response([self._cj(c) for c in self.channels.values()])
                if method == "POST":
                    return await self._originate(q, request)
            ch = self.channels.get(parts[1])
            if ch is None:
                return web.json_response({"message": "Channel not found"}, status=404)
            op = parts[2] if len(parts) > 2 else ""
            return self._channel_op(method, op, ch, q)
        if res == "bridges":
            if len(parts) == 1 and method == "GET":
                return web.json_response([self._bj(b) for b in self.bridges])
            bid = parts[1]
            op = parts[2] if len(parts) > 2 else ""
            return self._bridge_op(method, op, bid, q)
        if res == "recordings":
            return self._recording_op(method, parts[1:], q)
        return web.json_response({"message": "Not found"}, status=404)

    async def _originate(self, q: Any, request: web.Request) -> web.StreamResponse:
        endpoint = q.get("endpoint", "")
        if not endpoint or not q.get("app"):
            return web.json_response({"message": "Endpoint and app must be specified"}, status=400)
        behaviour = self.endpoints.get(endpoint) or self.endpoints.get(endpoint.split("@")[0])
        if behaviour is None:
            return web.json_response({"message": f"Allocation failed: endpoint {endpoint} not found"}, status=400)
        cid = q.get("channelId") or f"1763802000.{next(self._ids)}"
        if cid in self.channels:
            return web.json_response({"message": "Channel with given unique ID already exists"}, status=409)
        if request.can_read_body:
            await request.read()
        n = next(self._ids)
        ch = Chan(cid, f"{endpoint.split('@')[0]}-{n:08x}", "Down", caller=q.get("callerId", ""),
                  exten="s", context="default", originated=True,
                  app_args=[a for a in q.get("appArgs", "").split(",") if a], creation=self._ts())
        self.channels[cid] = ch
        body = self._cj(ch)
        timeout = float(q.get("timeout", 30))

        def ringing() -> None:
            if cid not in self.channels:
                return
            self.emit("Dial", dialstatus="", forward="", dialstring=endpoint.split("/", 1)[1], peer=self._cj(ch))
            ch.state = "Ringing"
            self.emit("ChannelStateChange", channel=self._cj(ch))
            self.emit("Dial", dialstatus="RINGING", forward="", dialstring=endpoint.split("/", 1)[1],
                      peer=self._cj(ch))
            if behaviour.action in ("answer", "busy"):
                self._later(behaviour.delay, self._ring_outcome, cid, behaviour, timeout)
            if timeout > 0:
                self._later(timeout, self._ring_timeout, cid)

        self._later(0.001, ringing)
        return web.json_response(body)

    def _channel_op(self, method: str, op: str, ch: Chan, q: Any) -> web.StreamResponse:
        if op == "" and method == "DELETE":
            if ch.state != "Up" and ch.originated:
                self.emit("Dial", dialstatus="CANCEL", forward="", dialstring="", peer=self._cj(ch))
            self._destroy(ch, 16)
            return web.Response(status=204)
        if op == "" and method == "GET":
            return web.json_response(self._cj(ch))
        if op == "answer":
            if ch.state != "Up":
                ch.state = "Up"
                self.emit("ChannelStateChange", channel=self._cj(ch))
            return web.Response(status=204)
        if op == "hold":
            # ARI's hold indicates hold *toward* this channel's device (chan_pjsip plays it music
            # on hold) and publishes no event: ChannelHold/ChannelUnhold only report a device that
            # put itself on hold (see `phone_hold`)
            ch.hold = method == "POST"
            return web.Response(status=204)
        if op == "dtmf":
            return web.Response(status=204)
        if op == "snoop":
            if not ch.in_stasis:
                return web.json_response({"message": "Channel not in Stasis application"}, status=409)
            sid = q.get("snoopId") or f"1763802000.{next(self._ids)}"
            n = next(self._ids)
            snoop = Chan(sid, f"Snoop/{ch.id}-{n:08x}", "Up", in_stasis=True, snoop_of=ch.id,
                         app_args=[a for a in q.get("appArgs", "").split(",") if a], creation=self._ts())
            self.channels[sid] = snoop
            self.emit("StasisStart", args=snoop.app_args, channel=self._cj(snoop))
            return web.json_response(self._cj(snoop))
        if op == "play":
            pid = q.get("playbackId") or f"pb-{next(self._ids)}"
            pb = {"id": pid, "media_uri": q.get("media", ""), "target_uri": f"channel:{ch.id}",
                  "language": "en", "state": "playing"}
            self.emit("PlaybackStarted", playback=pb)
            self._later(0.05, self._playback_done, dict(pb))
            return web.json_response(pb, status=201)
        if op in ("continue", "redirect"):
            if not ch.in_stasis:
                return web.json_response({"message": "Channel not in Stasis application"}, status=409)
            self._leave_bridge(ch)
            ch.in_stasis = False
            self.emit("StasisEnd", channel=self._cj(ch))
            if op == "redirect":
                self._later(0.01, self._destroy, ch, 16)
            else:
                ch.exten = q.get("extension", ch.exten)
                ch.context = q.get("context", ch.context)
            return web.Response(status=204)
        return web.json_response({"message": "Not found"}, status=404)

    def _playback_done(self, pb: dict[str, Any]) -> None:
        pb["state"] = "done"
        self.emit("PlaybackFinished", playback=pb)

    def _bridge_op(self, method: str, op: str, bid: str, q: Any) -> web.StreamResponse:
        if op == "":
            if method == "POST":
                if bid in self.bridges:
                    return web.json_response({"message": f"Bridge with id '{bid}' already exists"}, status=409)
                self.bridges[bid] = []
                return web.json_response(self._bj(bid))
            if bid not in self.bridges:
                return web.json_response({"message": "Bridge not found"}, status=404)
            if method == "DELETE":
                for name, rec in list(self.live.items()):
                    if rec["target_uri"] == f"bridge:{bid}":
                        # the recorder finishes writing after the bridge is gone: the stored
                        # file and RecordingFinished come a little after this reply
                        self._later(0.1, self._finish_recording, name)
                for cid in list(self.bridges[bid]):
                    ch = self.channels.get(cid)
                    if ch is not None:
                        self._leave_bridge(ch)
                del self.bridges[bid]
                return web.Response(status=204)
            return web.json_response(self._bj(bid))
        if bid not in self.bridges:
            return web.json_response({"message": "Bridge not found"}, status=404)
        if op == "addChannel":
            ids = [c for c in q.get("channel", "").split(",") if c]
            missing = [c for c in ids if c not in self.channels]
            if missing:
                return web.json_response({"message": "Channel not found"}, status=400)
            for cid in ids:
                ch = self.channels[cid]
                if not ch.in_stasis:
                    return web.json_response({"message": "Channel not in Stasis application"}, status=422)
                if ch.bridge == bid:
                    continue
                self._leave_bridge(ch)
                ch.bridge = bid
                self.bridges[bid].append(cid)
                self.emit("ChannelEnteredBridge", bridge=self._bj(bid), channel=self._cj(ch))
            return web.Response(status=204)
        if op == "moh":
            return web.Response(status=204)
        if op == "removeChannel":
            ch = self.channels.get(q.get("channel", ""))
            if ch is None or ch.bridge != bid:
                return web.json_response({"message": "Channel not in this bridge"}, status=422)
            self._leave_bridge(ch)
            return web.Response(status=204)
        if op == "record":
            name = q.get("name", "")
            rec = {"name": name, "format": q.get("format", "wav"), "state": "recording",
                   "target_uri": f"bridge:{bid}"}
            self.live[name] = rec
            self.emit("RecordingStarted", recording=dict(rec))
            return web.json_response(rec, status=201)
        return web.json_response({"message": "Not found"}, status=404)

    def _finish_recording(self, name: str) -> None:
        rec = self.live.pop(name, None)
        if rec is None:
            return
        rec.update(state="done", duration=3, talking_duration=2, silence_duration=1)
        self.stored.add(name)
        self.emit("RecordingFinished", recording=rec)

    def _recording_op(self, method: str, parts: list[str], q: Any) -> web.StreamResponse:
        if parts[:1] == ["live"] and len(parts) >= 3:
            name, op = parts[1], parts[2]
            if name not in self.live:
                return web.json_response({"message": "Recording not found"}, status=404)
            if op == "stop":
                self._finish_recording(name)
            elif op == "pause":
                self.live[name]["state"] = "paused" if method == "POST" else "recording"
            return web.Response(status=204)
        if parts[:1] == ["stored"] and len(parts) >= 3 and parts[2] == "file":
            if parts[1] not in self.stored:
                return web.json_response({"message": "Recording not found"}, status=404)
            return web.Response(body=_silence_wav(), content_type="audio/wav")
        return web.json_response({"message": "Not found"}, status=404)


def _silence_wav(seconds: float = 0.2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * int(8000 * seconds))
    return buf.getvalue()
