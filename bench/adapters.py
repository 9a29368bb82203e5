"""Provider wire parsing throughput: parsed events/s from recorded streams.

    .venv/bin/python bench/adapters.py [--quick]

Each row parses one recorded stream (tests/adapters/<provider>/fixtures) again and again
for a fixed time and reports events per second, side by side with an existing Python
client parsing the same bytes where one installs from PyPI:
- Asterisk ARI JSON events: `cti` wire.parse_event, the whole adapter (parse + normalize to
  CallEvents), and aioari (json.loads + its process_ws dispatch + Channel objects; its swagger
  model comes from a live Asterisk's /ari/api-docs, so it is stubbed here);
- FreeSWITCH ESL frames: `cti` framing + parse (plain and json), the whole adapter, and
  greenswitch (its own receive_events framing + ESLEvent parsing, plain events only: it has
  no event-json support).

Providers add rows by appending `Entry`s to `ENTRIES` (one entry per adapter/parser pair).
Prints a table and writes bench/results/adapters.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARI_FIX = ROOT / "tests/adapters/asterisk/fixtures/inbound_full.jsonl"
ESL_JSON = ROOT / "tests/adapters/freeswitch/fixtures/inbound_full.json.esl"
ESL_PLAIN = ROOT / "tests/adapters/freeswitch/fixtures/inbound_full.plain.esl"


@dataclass
class Entry:
    provider: str
    stream: str
    parser: str
    # builds a runner: each call parses the whole stream once and returns the events parsed
    make: Callable[[], Callable[[], int]]
    note: str = ""


# ---- Asterisk --------------------------------------------------------------------------

def _ari_lines() -> list[str]:
    return [line for line in ARI_FIX.read_text().splitlines() if line.strip()]


def cti_ari_wire() -> Callable[[], int]:
    from cti.adapters.asterisk import wire

    lines = _ari_lines()

    def run() -> int:
        for line in lines:
            wire.parse_event(line)
        return len(lines)
    return run


def cti_ari_adapter() -> Callable[[], int]:
    from tests.adapters.asterisk.harness import make_adapter

    lines = _ari_lines()
    loop = asyncio.new_event_loop()

    async def once() -> int:
        adapter = make_adapter("http://127.0.0.1:9")  # not started: replay needs no connection
        for line in lines:
            await adapter.handle_message(line)
        return len(lines)

    return lambda: loop.run_until_complete(once())


def aioari_parser() -> Callable[[], int]:
    import aioari.client
    import aioari.model

    lines = _ari_lines()
    client = object.__new__(aioari.client.Client)
    client.swagger = SimpleNamespace(channels=None, bridges=None)
    client.event_listeners = {}
    client.exception_handler = lambda ex: (_ for _ in ()).throw(ex)
    made: list[Any] = []

    def on_any(msg: dict[str, Any]) -> None:  # what on_channel_event's extractor does
        if msg.get("channel"):
            made.append(aioari.model.Channel(client, msg["channel"]))

    client.on_event("*", on_any)
    loop = asyncio.new_event_loop()

    async def once() -> int:
        for line in lines:
            msg = json.loads(line)
            if isinstance(msg, dict) and "type" in msg:
                await client.process_ws(msg)
        made.clear()
        return len(lines)

    return lambda: loop.run_until_complete(once())


# ---- FreeSWITCH ------------------------------------------------------------------------

def cti_esl(path: Path) -> Callable[[], Callable[[], int]]:
    def make() -> Callable[[], int]:
        from cti.adapters.freeswitch import wire

        data = path.read_bytes()

        def run() -> int:
            frames = wire.FrameParser().feed(data)
            for f in frames:
                wire.parse_event(f)
            return len(frames)
        return run
    return make


def cti_esl_adapter() -> Callable[[], int]:
    from cti.adapters.freeswitch import wire
    from tests.adapters.freeswitch.harness import make_adapter

    data = ESL_JSON.read_bytes()
    loop = asyncio.new_event_loop()

    async def once() -> int:
        adapter = make_adapter(9)  # not started: events are applied directly
        frames = wire.FrameParser().feed(data)
        for f in frames:
            await adapter._apply(wire.parse_event(f))
        return len(frames)

    return lambda: loop.run_until_complete(once())


def greenswitch_parser() -> Callable[[], int]:
    from greenswitch.esl import ESLProtocol

    data = ESL_PLAIN.read_bytes()

    def run() -> int:
        proto = ESLProtocol()
        proto.sock_file = io.BytesIO(data)
        proto.sock = SimpleNamespace(close=lambda: None)
        proto.connected = True
        proto.receive_events()  # reads to EOF: frames + parses every event into its queue
        return proto._esl_event_queue.qsize()
    return run


ENTRIES: list[Entry] = [
    Entry("asterisk", "ARI JSON events", "cti wire.parse_event", cti_ari_wire,
          "orjson; checks type, timestamp (parsed), channel/peer/caller ids, cause; channel objects are "
          "views over the JSON, other fields read and checked on use"),
    Entry("asterisk", "ARI JSON events", "cti adapter (parse + normalize)", cti_ari_adapter),
    Entry("asterisk", "ARI JSON events", "aioari 0.10.2", aioari_parser,
          "json.loads + process_ws (in a coroutine) + Channel objects (views over the JSON, channel only); "
          "no checks, timestamp left a string; swagger model stubbed (needs a live Asterisk)"),
    Entry("freeswitch", "ESL text/event-plain", "cti FrameParser + parse_event", cti_esl(ESL_PLAIN),
          "every header URL-decoded into a dict, like greenswitch; bad lines raise WireError"),
    Entry("freeswitch", "ESL text/event-plain", "greenswitch 0.0.19", greenswitch_parser,
          "its receive_events framing + ESLEvent parsing (+ a gevent queue put per event, ~0.1 us)"),
    Entry("freeswitch", "ESL text/event-json", "cti FrameParser + parse_event", cti_esl(ESL_JSON)),
    Entry("freeswitch", "ESL text/event-json", "cti adapter (parse + normalize)", cti_esl_adapter),
    Entry("freeswitch", "ESL text/event-json", "greenswitch 0.0.19", lambda: _unsupported(),
          "no event-json support in greenswitch"),
]


try:  # Twilio rows live next to its fixtures (tests/adapters/twilio/bench_entries.py)
    from tests.adapters.twilio.bench_entries import entries as _twilio_entries

    ENTRIES += _twilio_entries(Entry)
except ImportError:
    pass
try:  # SIP rows: tests/adapters/sip/bench_entries.py
    from tests.adapters.sip.bench_entries import entries as _sip_entries

    ENTRIES += _sip_entries(Entry)
except ImportError:
    pass


def _unsupported() -> Callable[[], int]:
    raise NotImplementedError("not supported by this client")


def measure(entry: Entry, seconds: float, rounds: int) -> dict[str, Any]:
    """Best of `rounds` timed runs of `seconds / rounds` each (the machine is shared: the best
    round is the least disturbed one)."""
    row: dict[str, Any] = {"provider": entry.provider, "stream": entry.stream, "parser": entry.parser,
                           "note": entry.note}
    try:
        run = entry.make()
        run()  # warm-up
    except Exception as exc:  # one row that cannot run (missing client, broken entry) is reported
        row.update(events_per_s=None, error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        return row
    best = 0.0
    total = 0
    for _ in range(rounds):
        events = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / rounds:
            events += run()
        total += events
        best = max(best, events / elapsed)
    row.update(events_per_s=round(best), events=total, rounds=rounds)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="0.6 s per row instead of 3 s")
    args = ap.parse_args()
    import logging

    import structlog

    # replaying a stream without a live peer logs expected warnings: keep the table readable
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    seconds, rounds = (0.6, 3) if args.quick else (3.0, 5)
    rows = [measure(e, seconds, rounds) for e in ENTRIES]
    print(f"{'provider':<11} {'stream':<21} {'parser':<32} {'events/s':>10}  note")
    for r in rows:
        eps = f"{r['events_per_s']:,}" if r["events_per_s"] is not None else "n/a"
        note = (r.get("error") and f"not run: {r['error']}") or r["note"]
        if r.get("error") and r["note"]:
            note = r["note"]
        print(f"{r['provider']:<11} {r['stream']:<21} {r['parser']:<32} {eps:>10}  {note}")
    out = ROOT / "bench/results/adapters.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"python": platform.python_version(), "machine": platform.machine(), "seconds_per_row": seconds,
            "metric": "best round, events/s"}
    out.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
