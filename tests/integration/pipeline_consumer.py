"""A pipeline node as its own process: `python -m tests.integration.pipeline_consumer BUS_URL DB_URL NAME`.

Runs EventPipeline until SIGTERM (clean stop) or SIGKILL (the crash under test).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from cti.bus import open_bus
from cti.calls.pipeline import EventPipeline
from cti.store.db import Database


async def main(bus_url: str, db_url: str, name: str) -> None:
    bus = open_bus(bus_url, batch=128, block_ms=200, claim_idle_ms=2_000)
    db = Database(db_url)
    await bus.start()
    await db.connect()
    pipe = EventPipeline(bus, db, consumer=name)
    task = asyncio.create_task(pipe.run())
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await bus.close()
    await db.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
