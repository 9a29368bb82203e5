"""Twilio rows for bench/adapters.py (webhook parsing, signature checks, TwiML answers).

`entries(Entry)` returns the rows; each runner handles the recorded callbacks of
`fixtures/callbacks.json` once and returns how many it handled. Twilio's Python
library has no webhook parser (a webhook is a form body), so the comparison rows
are its `RequestValidator` (the same one the adapter uses: the cost of a signed
webhook) and its `VoiceResponse` TwiML builder against our string builder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

FIXTURES = Path(__file__).parent / "fixtures" / "callbacks.json"
PUBLIC = "https://cti.example.com/webhooks/twilio/tw1/"
TOKEN = "bench-auth-token"


def _load() -> list[tuple[str, dict[str, str], bytes]]:
    fx = json.loads(FIXTURES.read_text())
    return [(v["path"], dict(parse_qsl(v["query"])), v["body"].encode()) for v in fx.values()]


def cti_wire() -> Callable[[], int]:
    from cti.adapters.twilio import wire

    ctx = wire.WireContext(provider="tw1", queue_numbers={"+33170000100": "support"})
    parsers = {"voice": wire.inbound_events, "status": wire.status_events,
               "recording": wire.recording_events, "conference": wire.conference_events}
    items = _load()
    now = datetime.now(UTC)

    def run() -> int:
        n = 0
        for path, query, body in items:
            n += len(parsers[path](wire.parse_form(body), query, ctx, now))
        return len(items) if n >= 0 else 0
    return run


def cti_wire_signed() -> Callable[[], int]:
    """What one webhook costs the adapter: signature check (twilio's validator) + parse + map."""
    from twilio.request_validator import RequestValidator

    from cti.adapters.twilio import wire

    validator = RequestValidator(TOKEN)
    ctx = wire.WireContext(provider="tw1", queue_numbers={"+33170000100": "support"})
    parsers = {"voice": wire.inbound_events, "status": wire.status_events,
               "recording": wire.recording_events, "conference": wire.conference_events}
    items = []
    for path, query, body in _load():
        url = PUBLIC + path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
        sig = validator.compute_signature(url, wire.parse_form(body))
        items.append((path, query, body, url, sig))
    now = datetime.now(UTC)

    def run() -> int:
        for path, query, body, url, sig in items:
            params = wire.parse_form(body)
            if not validator.validate(url, params, sig):
                raise AssertionError("bench signature mismatch")
            parsers[path](params, query, ctx, now)
        return len(items)
    return run


def cti_twiml() -> Callable[[], int]:
    from cti.adapters.twilio import wire

    def run() -> int:
        for i in range(100):
            wire.enqueue_twiml(f"support-{i % 3}", "https://cti.example.com/hold.xml")
        return 100
    return run


def twilio_twiml() -> Callable[[], int]:
    from twilio.twiml.voice_response import VoiceResponse

    def run() -> int:
        for i in range(100):
            r = VoiceResponse()
            r.enqueue(f"support-{i % 3}", wait_url="https://cti.example.com/hold.xml")
            str(r)
        return 100
    return run


def entries(entry: Callable[..., Any]) -> list[Any]:
    import twilio

    v = twilio.__version__
    return [
        entry("twilio", "webhook form callbacks", "cti wire (parse + map)", cti_wire),
        entry("twilio", "webhook form callbacks", f"cti wire + twilio {v} validator", cti_wire_signed,
              "X-Twilio-Signature HMAC-SHA1 check per webhook, as the adapter does"),
        entry("twilio", "voice answer TwiML", "cti wire.enqueue_twiml", cti_twiml, "TwiML documents/s"),
        entry("twilio", "voice answer TwiML", f"twilio {v} VoiceResponse", twilio_twiml, "TwiML documents/s"),
    ]
