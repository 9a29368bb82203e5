"""Regenerate the wire fixtures of tests/adapters/asterisk/fixtures from the fake ARI server.

    .venv/bin/python -m tests.adapters.asterisk.record_fixtures

The fake emits events in the ARI shapes (see fake_ari.py); the files are what the
adapter received on its WebSocket, one JSON event per line.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from cti.adapters.base import Connect, Hold, Monitor, Record, Unhold
from cti.model import EventKind
from tests.adapters.asterisk.harness import running

HERE = Path(__file__).parent / "fixtures"


async def main() -> None:
    async with running() as (fake, adapter, col):
        ch = fake.incoming("0612345678", "0170000100")
        q = await col.kind(EventKind.QUEUED)
        fake.hangup(ch)
        await col.kind(EventKind.ENDED, q.call_id)
        (HERE / "caller_hangup_while_queued.jsonl").write_text("\n".join(fake.wire_log) + "\n")
        fake.wire_log.clear()

        ch = fake.incoming("0612345678", "0170000100")
        q = await col.wait(lambda e: e.kind is EventKind.QUEUED and e.provider_call_id == ch)
        await adapter.execute(Connect(ch, (("alice", "PJSIP/alice"),)))
        await col.kind(EventKind.ANSWERED, q.call_id)
        await adapter.execute(Hold(ch))
        await col.kind(EventKind.HELD, q.call_id)
        await adapter.execute(Unhold(ch))
        await col.kind(EventKind.RESUMED, q.call_id)
        agent_leg = adapter._calls[ch].agent_leg or ""
        fake.phone_hold(agent_leg)  # ChannelHold reports a phone's own hold (the panel's has no event)
        fake.phone_hold(agent_leg, on=False)
        await adapter.execute(Record(ch, "start"))
        await col.kind(EventKind.RECORDING_STARTED, q.call_id)
        res = await adapter.execute(Monitor(ch, "PJSIP/sam", "whisper"))
        await col.kind(EventKind.MONITOR_STARTED, q.call_id)
        fake.press(ch, "5")
        await adapter.execute(Monitor(ch, "PJSIP/sam", "stop", session_id=res.session_id))
        await adapter.execute(Record(ch, "stop"))
        await col.kind(EventKind.RECORDING_STOPPED, q.call_id)
        fake.hangup(ch)
        await col.kind(EventKind.RECORDING_READY, q.call_id)
        await asyncio.sleep(0.1)
        (HERE / "inbound_full.jsonl").write_text("\n".join(fake.wire_log) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
