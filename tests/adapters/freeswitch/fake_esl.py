"""A fake FreeSWITCH speaking mod_event_socket (inbound mode), from the protocol docs.

Per connection: `Content-Type: auth/request`, then `auth <pw>` -> `command/reply`
(`+OK accepted` / `-ERR invalid`); `event json|plain <names>` -> `+OK event listener
enabled json`; `api <cmd>` -> `api/response` with a Content-Length body; `bgapi <cmd>`
(optional `Job-UUID:` header) -> `command/reply` `+OK Job-UUID: <id>` and later a
BACKGROUND_JOB event whose body is the command's output; `exit` -> `+OK bye`, a
`text/disconnect-notice` and close. Events carry the usual headers (Event-Name,
Core-UUID, Event-Date-Timestamp in microseconds, Event-Sequence, Unique-ID,
Caller-*, Channel-*, variable_*). Like FreeSWITCH, nothing is kept for a socket that
is not connected.

An eavesdropper's voice goes where mod_dptools sends it (`eavesdrop_whisper_aleg`: to the
target's peer, `eavesdrop_whisper_bleg`: to the target; DTMF 0-3 switch it, see
`hear_eavesdropper`); `uuid_recv_dtmf` fires a DTMF event per digit, as FreeSWITCH does.

Endpoints are scripted: `fake.endpoints["user/alice"] = Behaviour("answer", 0.03)`;
actions: answer | noanswer | busy | manual; an unknown endpoint fails the originate
with USER_NOT_REGISTERED and no channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from cti.adapters.freeswitch.wire import parse_originate

CORE_UUID = "0b8e4f2a-7c1d-4e11-9a6b-3f5c2d1e0a99"
# what mod_commands answers when the uuid names no channel: the wording differs per command
_NO_CHANNEL = {
    "uuid_hold": "-ERR Operation failed\n", "uuid_record": "-ERR Cannot locate session!\n",
    "uuid_send_dtmf": "-ERR Cannot locate session!\n", "uuid_recv_dtmf": "-ERR Cannot locate session!\n",
    "uuid_broadcast": "-ERR invalid uuid\n",
}


@dataclass
class Behaviour:
    action: str = "answer"
    delay: float = 0.02


@dataclass
class FsChan:
    uuid: str
    name: str
    direction: str
    cid_num: str
    dest: str
    created: float
    state: str = "CS_INIT"
    callstate: str = "DOWN"
    answered: bool = False
    bridged: str | None = None
    app: str = ""
    app_data: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    recording: str | None = None
    # an eavesdropper's voice mixed into its target's streams: "read" (what the target says,
    # so the target's peer hears it) and/or "write" (what the target hears)
    mux: set[str] = field(default_factory=set)


@dataclass
class _Client:
    writer: asyncio.StreamWriter
    fmt: str = ""                      # json | plain
    events: set[str] = field(default_factory=set)


class FakeESL:
    def __init__(self, password: str = "ClueCon") -> None:
        self.password = password
        self.channels: dict[str, FsChan] = {}
        self.endpoints: dict[str, Behaviour] = {}
        self.clients: list[_Client] = []
        self.commands: list[str] = []
        self.wire_log: list[bytes] = []         # every event frame sent (for fixtures)
        self.recv_dtmf: list[tuple[str, str]] = []
        self.recordings_stereo: dict[str, bool] = {}  # path -> RECORD_STEREO at its start
        self.fail_next: dict[str, str] = {}     # api command name -> "-ERR ..." for its next call
        self.connected = asyncio.Event()
        self._seq = itertools.count(4000)
        self._ids = itertools.count(1)
        self._last_us = 0
        self.skew_us = 0  # how far FreeSWITCH's clock runs ahead of this host's
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    # ---- server ------------------------------------------------------------------------

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        for c in list(self.clients):
            c.writer.close()
        for t in list(self._tasks):
            t.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _later(self, delay: float, fn: Any, *args: Any) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            fn(*args)
        self._spawn(run())

    @staticmethod
    def _frame(headers: dict[str, str], body: bytes = b"") -> bytes:
        if body:
            headers = {**headers, "Content-Length": str(len(body))}
        head = "".join(f"{k}: {v}\n" for k, v in headers.items())
        return head.encode() + b"\n" + body

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(writer)
        writer.write(self._frame({"Content-Type": "auth/request"}))
        authed = False
        try:
            while True:
                block = await reader.readuntil(b"\n\n")
                lines = block.decode().strip().split("\n")
                line, headers = lines[0].strip(), dict(h.split(": ", 1) for h in lines[1:] if ": " in h)
                if not authed:
                    if line == f"auth {self.password}":
                        authed = True
                        self.clients.append(client)
                        self.connected.set()
                        self._reply(writer, "+OK accepted")
                    else:
                        self._reply(writer, "-ERR invalid")
                        writer.write(self._frame({"Content-Type": "text/disconnect-notice"},
                                                 b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"))
                        break
                    continue
                self.commands.append(line)
                if line.startswith("event "):
                    _, fmt, *names = line.split()
                    client.fmt = fmt
                    client.events.update(names)
                    self._reply(writer, f"+OK event listener enabled {fmt}")
                elif line.startswith("api "):
                    out = self._api(line[4:])
                    writer.write(self._frame({"Content-Type": "api/response"}, out.encode()))
                elif line.startswith("bgapi "):
                    job = headers.get("Job-UUID") or str(uuid.uuid4())
                    self._reply(writer, f"+OK Job-UUID: {job}", {"Job-UUID": job})
                    self._later(0.001, self._bgapi, line[6:], job)
                elif line == "exit":
                    self._reply(writer, "+OK bye")
                    writer.write(self._frame({"Content-Type": "text/disconnect-notice"}, b"Disconnected, goodbye.\n"))
                    break
                else:
                    self._reply(writer, "-ERR command not found")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if client in self.clients:
                self.clients.remove(client)
            writer.close()

    def _reply(self, writer: asyncio.StreamWriter, text: str, extra: dict[str, str] | None = None) -> None:
        writer.write(self._frame({"Content-Type": "command/reply", "Reply-Text": text, **(extra or {})}))

    def send_raw(self, data: bytes) -> None:
        for c in self.clients:
            c.writer.write(data)

    # ---- events --------------------------------------------------------------------------

    def _now_us(self) -> int:
        us = max(int(time.time() * 1_000_000) + self.skew_us, self._last_us + 1)
        self._last_us = us
        return us

    def emit(self, name: str, ch: FsChan | None = None, body: str = "", **extra: str) -> None:
        us = self._now_us()
        h: dict[str, str] = {
            "Event-Name": name, "Core-UUID": CORE_UUID, "FreeSWITCH-Hostname": "fs1",
            "FreeSWITCH-Switchname": "fs1", "FreeSWITCH-IPv4": "10.0.0.5",
            "Event-Date-Local": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(us / 1e6)),
            "Event-Date-GMT": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(us / 1e6)),
            "Event-Date-Timestamp": str(us), "Event-Calling-File": "switch_channel.c",
            "Event-Calling-Function": "switch_channel_perform_set_running_state",
            "Event-Calling-Line-Number": "1000", "Event-Sequence": str(next(self._seq)),
        }
        if ch is not None:
            h.update({
                "Channel-State": ch.state, "Channel-Call-State": ch.callstate,
                "Channel-Name": ch.name, "Unique-ID": ch.uuid, "Call-Direction": ch.direction,
                "Presence-Call-Direction": ch.direction,
                "Answer-State": "answered" if ch.answered else ("ringing" if ch.callstate == "RINGING" else "early"),
                "Caller-Direction": ch.direction, "Caller-Username": ch.cid_num,
                "Caller-Dialplan": "XML", "Caller-Caller-ID-Name": ch.cid_num,
                "Caller-Caller-ID-Number": ch.cid_num, "Caller-Network-Addr": "10.0.0.9",
                "Caller-Destination-Number": ch.dest, "Caller-Unique-ID": ch.uuid,
                "Caller-Context": "public" if ch.direction == "inbound" else "default",
                "Caller-Channel-Name": ch.name,
                "Caller-Channel-Created-Time": str(int(ch.created * 1e6)),
            })
            for k, v in ch.variables.items():
                h[f"variable_{k}"] = v
        h.update(extra)
        for c in list(self.clients):
            if name not in c.events and "ALL" not in c.events:
                continue
            if c.fmt == "json":
                obj: dict[str, str] = dict(h)
                if body:
                    obj["Content-Length"] = str(len(body.encode()))
                    obj["_body"] = body
                frame = self._frame({"Content-Type": "text/event-json"}, json.dumps(obj).encode())
            else:
                lines = "".join(f"{k}: {quote(v, safe='')}\n" for k, v in h.items())
                if body:
                    lines += f"Content-Length: {len(body.encode())}\n\n{body}"
                frame = self._frame({"Content-Type": "text/event-plain"}, lines.encode() + b"\n")
            self.wire_log.append(frame)
            c.writer.write(frame)

    # ---- the telephony world -------------------------------------------------------------

    def incoming(self, caller: str, dest: str) -> str:
        """A call arrives from the gateway; the dialplan answers and parks it."""
        u = str(uuid.uuid4())
        ch = FsChan(u, f"sofia/external/{caller}@10.0.0.9", "inbound", caller, dest, time.time())
        self.channels[u] = ch
        self.emit("CHANNEL_CREATE", ch)
        ch.answered, ch.state, ch.callstate = True, "CS_EXECUTE", "ACTIVE"
        self.emit("CHANNEL_ANSWER", ch)
        ch.app, ch.app_data = "park", ""
        self.emit("CHANNEL_PARK", ch)
        return u

    def hangup(self, u: str, cause: str = "NORMAL_CLEARING") -> None:
        ch = self.channels.get(u)
        if ch is None:
            return
        if ch.recording:
            self.emit("RECORD_STOP", ch, **{"Record-File-Path": ch.recording})
            ch.recording = None
        if ch.bridged:
            other = self.channels.get(ch.bridged)
            self.emit("CHANNEL_UNBRIDGE", ch, **{"Other-Leg-Unique-ID": ch.bridged})
            if other is not None:
                other.bridged = None
            ch.bridged = None
        ch.state, ch.callstate = "CS_HANGUP", "HANGUP"
        self.emit("CHANNEL_HANGUP", ch, **{"Hangup-Cause": cause})
        del self.channels[u]
        ch.state = "CS_DESTROY"
        self.emit("CHANNEL_HANGUP_COMPLETE", ch, **{"Hangup-Cause": cause})
        # an eavesdropper loses its target: its eavesdrop app ends and FreeSWITCH hangs it up
        for other in [c for c in self.channels.values() if c.app == "eavesdrop" and c.app_data == u]:
            self.hangup(other.uuid)

    def answer(self, u: str) -> None:
        ch = self.channels.get(u)
        if ch is None or ch.answered:
            return
        ch.answered, ch.state, ch.callstate = True, "CS_EXECUTE", "ACTIVE"
        self.emit("CHANNEL_ANSWER", ch)
        app, _, data = ch.variables.get("_app", "&park()").lstrip("&").partition("(")
        ch.app, ch.app_data = app, data.rstrip(")")
        if ch.app == "eavesdrop":
            # mod_dptools: eavesdrop_whisper_aleg mixes into the target's read stream,
            # eavesdrop_whisper_bleg into its write stream (the eavesdrop_bridge_* ones only
            # choose what the eavesdropper hears)
            ch.mux = {m for var, m in (("eavesdrop_whisper_aleg", "read"), ("eavesdrop_whisper_bleg", "write"))
                      if ch.variables.get(var) == "true"}
        self.emit("CHANNEL_EXECUTE", ch, **{"Application": ch.app, "Application-Data": ch.app_data,
                                            "Application-UUID": str(uuid.uuid4())})
        if ch.app == "park":
            self.emit("CHANNEL_PARK", ch)
        job = ch.variables.pop("_job", "")
        if job:
            self.emit("BACKGROUND_JOB", None, body=f"+OK {u}\n", **{"Job-UUID": job, "Job-Command": "originate"})

    def press(self, u: str, digit: str) -> None:
        self.emit("DTMF", self.channels[u], **{"DTMF-Digit": digit, "DTMF-Duration": "2000",
                                               "DTMF-Source": "RTP"})

    def eavesdroppers(self) -> list[str]:
        return [c.uuid for c in self.channels.values() if c.app == "eavesdrop"]

    def hear_eavesdropper(self, u: str) -> set[str]:
        """Who hears eavesdropper `u`: "target" (the eavesdropped leg), "peer" (its bridged party)."""
        ch = self.channels[u]
        return {party for m, party in (("write", "target"), ("read", "peer")) if m in ch.mux}

    def _recv_dtmf(self, ch: FsChan, digits: str) -> None:
        # the digits are queued on the channel as if it had sent them: FreeSWITCH fires a DTMF
        # event for each (DTMF-Source APP), and eavesdrop reads them as its mode commands
        modes = {"0": set(), "1": {"read"}, "2": {"write"}, "3": {"read", "write"}}
        for d in digits:
            self.emit("DTMF", ch, **{"DTMF-Digit": d, "DTMF-Duration": "2000", "DTMF-Source": "APP"})
            if ch.app == "eavesdrop" and d in modes:
                ch.mux = set(modes[d])

    # ---- commands ------------------------------------------------------------------------

    def _bgapi(self, cmd: str, job: str) -> None:
        if cmd.startswith("originate "):
            err = self._originate(cmd, job)
            if err:
                self.emit("BACKGROUND_JOB", None, body=f"-ERR {err}\n",
                          **{"Job-UUID": job, "Job-Command": "originate"})
            return
        out = self._api(cmd)
        self.emit("BACKGROUND_JOB", None, body=out, **{"Job-UUID": job, "Job-Command": cmd.split()[0]})

    def _originate(self, cmd: str, job: str) -> str | None:
        variables, endpoint, app = parse_originate(cmd)
        behaviour = self.endpoints.get(endpoint)
        if behaviour is None:
            return "USER_NOT_REGISTERED"
        u = variables.get("origination_uuid") or str(uuid.uuid4())
        if u in self.channels:
            return "DESTINATION_OUT_OF_ORDER"
        ch = FsChan(u, endpoint, "outbound", variables.get("origination_caller_id_number", ""),
                    endpoint.rsplit("/", 1)[-1], time.time(),
                    variables={**{k: v for k, v in variables.items() if not k.startswith("origination_")},
                               "_app": app, "_job": job})
        self.channels[u] = ch
        self.emit("CHANNEL_CREATE", ch)
        ch.callstate = "RINGING"
        self.emit("CHANNEL_PROGRESS", ch)
        timeout = float(variables.get("originate_timeout", 60))
        if behaviour.action == "answer":
            self._later(behaviour.delay, self.answer, u)
        elif behaviour.action == "busy":
            self._later(behaviour.delay, self._fail_leg, u, "USER_BUSY")
        self._later(timeout, self._fail_leg, u, "NO_ANSWER")
        return None

    def _fail_leg(self, u: str, cause: str) -> None:
        ch = self.channels.get(u)
        if ch is None or ch.answered:
            return
        job = ch.variables.pop("_job", "")
        self.hangup(u, cause)
        if job:
            self.emit("BACKGROUND_JOB", None, body=f"-ERR {cause}\n", **{"Job-UUID": job, "Job-Command": "originate"})

    def _api(self, cmd: str) -> str:
        name, *args = cmd.split()
        if name in self.fail_next:
            return self.fail_next.pop(name) + "\n"
        if name == "show" and args[:1] == ["channels"]:
            rows = [{"uuid": c.uuid, "direction": c.direction, "created": "", "created_epoch": str(int(c.created)),
                     "name": c.name, "state": c.state, "cid_name": c.cid_num, "cid_num": c.cid_num,
                     "ip_addr": "10.0.0.9", "dest": c.dest, "application": c.app,
                     "application_data": c.app_data, "dialplan": "XML", "context": "public",
                     "read_codec": "PCMA", "read_rate": "8000", "callstate": c.callstate,
                     "callee_name": "", "callee_num": "", "callee_direction": "", "call_uuid": "",
                     "hostname": "fs1", "presence_id": "", "accountcode": ""} for c in self.channels.values()]
            return json.dumps({"row_count": len(rows), "rows": rows} if rows else {"row_count": 0})
        if name == "show" and args[:1] == ["calls"]:
            rows = [{"uuid": c.uuid, "b_uuid": c.bridged, "direction": c.direction}
                    for c in self.channels.values() if c.bridged and c.uuid < c.bridged]
            return json.dumps({"row_count": len(rows), "rows": rows} if rows else {"row_count": 0})
        if name == "status":
            return "UP 0 years, 0 days, 0 hours, 1 minute, 2 seconds\nFreeSWITCH (Version 1.10.11) is ready\n"
        if name == "uuid_kill":
            if args[0] not in self.channels:
                return "-ERR No such channel!\n"
            self._later(0.001, self.hangup, args[0], args[1] if len(args) > 1 else "NORMAL_CLEARING")
            return "+OK\n"
        if name == "uuid_bridge":
            a, b = self.channels.get(args[0]), self.channels.get(args[1])
            if a is None or b is None:
                return f"-ERR Invalid uuid {args[0] if a is None else args[1]}\n"
            for x, y in ((a, b), (b, a)):  # a leg bridged elsewhere leaves its old partner first
                old = self.channels.get(x.bridged or "")
                if old is not None and old is not y:
                    self.emit("CHANNEL_UNBRIDGE", x, **{"Other-Leg-Unique-ID": old.uuid})
                    old.bridged = None
                    old.app = "park"
            a.bridged, b.bridged = b.uuid, a.uuid
            a.app = b.app = "bridge"
            self.emit("CHANNEL_BRIDGE", a, **{"Bridge-A-Unique-ID": a.uuid, "Bridge-B-Unique-ID": b.uuid,
                                                "Other-Leg-Unique-ID": b.uuid})
            return f"+OK {b.uuid}\n"
        ch = self.channels.get(args[-1] if name == "uuid_hold" else (args[0] if args else ""))
        if name.startswith("uuid_") and ch is None:
            return _NO_CHANNEL.get(name, "-ERR No such channel!\n")
        assert ch is not None or not name.startswith("uuid_")
        if name == "uuid_hold":
            on = args[0] != "off"
            ch.callstate = "HELD" if on else "ACTIVE"  # type: ignore[union-attr]
            self.emit("CHANNEL_HOLD" if on else "CHANNEL_UNHOLD", ch)
            return "+OK Success\n"
        if name == "uuid_transfer":
            assert ch is not None
            if ch.bridged:
                other = self.channels.get(ch.bridged)
                self.emit("CHANNEL_UNBRIDGE", ch, **{"Other-Leg-Unique-ID": ch.bridged})
                if other is not None:
                    other.bridged = None
                ch.bridged = None
            ch.dest = args[1]
            ch.app, ch.app_data = "transfer", args[1]
            self.emit("CHANNEL_EXECUTE", ch, **{"Application": "transfer", "Application-Data": " ".join(args[1:])})
            return "+OK\n"
        if name == "uuid_record":
            assert ch is not None
            action, path = args[1], args[2]
            if action == "start":
                ch.recording = path
                # mod_dptools reads RECORD_STEREO when the recording starts: remember what it got
                self.recordings_stereo[path] = ch.variables.get("RECORD_STEREO") == "true"
                self.emit("RECORD_START", ch, **{"Record-File-Path": path})
            elif action == "stop":
                if ch.recording != path:
                    return "-ERR Cannot stop recording: not recording\n"
                ch.recording = None
                self.emit("RECORD_STOP", ch, **{"Record-File-Path": path})
            return "+OK Success\n"
        if name == "uuid_broadcast":
            assert ch is not None
            path = args[1]
            self.emit("PLAYBACK_START", ch, **{"Playback-File-Path": path})
            self._later(0.05, lambda: ch.uuid in self.channels and self.emit(
                "PLAYBACK_STOP", ch, **{"Playback-File-Path": path, "Playback-Status": "done"}))
            return f"+OK Message queued ({uuid.uuid4()})\n"
        if name == "uuid_getvar":
            return ch.variables.get(args[1], "_undef_") if ch is not None else "-ERR No such channel!\n"
        if name == "uuid_setvar":
            if ch is None:
                return "-ERR No such channel!\n"
            ch.variables[args[1]] = args[2] if len(args) > 2 else ""
            return "+OK\n"
        if name == "uuid_send_dtmf":
            return "+OK Success\n"
        if name == "uuid_recv_dtmf":
            assert ch is not None
            self.recv_dtmf.append((args[0], args[1]))
            self._recv_dtmf(ch, args[1])
            return f"+OK {ch.uuid} received DTMF {args[1]}.\n"
        return f"-ERR {name} Command not found!\n"
