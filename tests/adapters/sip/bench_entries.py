"""SIP rows for bench/adapters.py: the line's datagram parser against pyVoIP's own.

Each runner parses the recorded datagrams of `fixtures/*.sip` once and maps the INVITE
to events; pyVoIP's `SIPMessage` is what pyVoIP runs on every datagram before our hook.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"


def _datagrams() -> list[bytes]:
    return [p.read_bytes() for p in sorted(FIXTURES.glob("*.sip"))]


def cti_parse() -> Callable[[], int]:
    from cti.adapters.sip import wire

    data = _datagrams()

    def run() -> int:
        for raw in data:
            m = wire.parse(raw)
            _ = (m.call_id, m.cseq, m.from_user, m.to_user)
        return len(data)
    return run


def cti_parse_and_map() -> Callable[[], int]:
    from cti.adapters.sip import wire

    ctx = wire.LineContext(provider="line1", agent="alice", queue_numbers={"+33170000100": "support"})
    data = _datagrams()
    now = datetime.now(UTC)

    def run() -> int:
        for raw in data:
            m = wire.parse(raw)
            if m.method == "INVITE":
                wire.inbound_events(m, ctx, now)
        return len(data)
    return run


def pyvoip_parse() -> Callable[[], int]:
    import pyVoIP.VoIP  # noqa: F401 - pyVoIP.SIP cannot be imported first (circular import)
    from pyVoIP.SIP import SIPMessage

    data = _datagrams()

    def run() -> int:
        for raw in data:
            SIPMessage(raw)
        return len(data)
    return run


def entries(entry: Callable[..., Any]) -> list[Any]:
    return [
        entry("sip", "SIP datagrams (Kamailio)", "cti wire.parse", cti_parse),
        entry("sip", "SIP datagrams (Kamailio)", "cti wire.parse + map INVITE", cti_parse_and_map),
        entry("sip", "SIP datagrams (Kamailio)", "pyVoIP 1.6.8 SIPMessage", pyvoip_parse,
              "pyVoIP parses every datagram before the adapter's hook sees it"),
    ]
