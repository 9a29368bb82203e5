"""Regenerate tests/adapters/freeswitch/fixtures from the fake event socket.

    .venv/bin/python -m tests.adapters.freeswitch.record_fixtures

`*.json.esl` is the byte stream of `text/event-json` frames the adapter received,
`*.plain.esl` the same call seen by a second socket subscribed with `event plain ALL`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cti.adapters.base import Connect, Hold, Monitor, Record, Unhold
from cti.model import EventKind
from tests.adapters.freeswitch.harness import running

HERE = Path(__file__).parent / "fixtures"


async def _plain_listener(port: int, sink: bytearray) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readuntil(b"\n\n")
    writer.write(b"auth ClueCon\n\n")
    await reader.readuntil(b"\n\n")
    writer.write(b"event plain ALL\n\n")
    await reader.readuntil(b"\n\n")
    try:
        while data := await reader.read(65536):
            sink.extend(data)
    finally:
        writer.close()


def _split(frames: list[bytes], ctype: bytes) -> bytes:
    return b"".join(f for f in frames if ctype in f.split(b"\n\n", 1)[0])


async def main() -> None:
    async with running() as (fake, adapter, col):
        plain = bytearray()
        listener = asyncio.create_task(_plain_listener(fake.port, plain))
        await asyncio.sleep(0.1)
        fake.wire_log.clear()
        u = fake.incoming("0612345678", "0170000100")
        q = await col.kind(EventKind.QUEUED)
        await adapter.execute(Connect(u, (("alice", "user/alice"),)))
        await col.kind(EventKind.ANSWERED, q.call_id)
        await adapter.execute(Hold(u))
        await col.kind(EventKind.HELD, q.call_id)
        await adapter.execute(Unhold(u))
        await adapter.execute(Record(u, "start"))
        await col.kind(EventKind.RECORDING_STARTED, q.call_id)
        res = await adapter.execute(Monitor(u, "user/sam", "whisper"))
        await col.kind(EventKind.MONITOR_STARTED, q.call_id)
        (HERE / "show_channels.json").write_text(fake._api("show channels as json"))
        fake.press(u, "5")
        await adapter.execute(Monitor(u, "user/sam", "stop", session_id=res.session_id))
        await adapter.execute(Record(u, "stop"))
        await col.kind(EventKind.RECORDING_STOPPED, q.call_id)
        fake.hangup(u)
        await col.kind(EventKind.ENDED, q.call_id)
        await asyncio.sleep(0.1)
        (HERE / "inbound_full.json.esl").write_bytes(_split(fake.wire_log, b"text/event-json"))
        (HERE / "inbound_full.plain.esl").write_bytes(_split(fake.wire_log, b"text/event-plain"))
        listener.cancel()


if __name__ == "__main__":
    asyncio.run(main())
