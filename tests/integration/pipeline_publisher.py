"""A PBX-like publisher process: `python -m tests.integration.pipeline_publisher BUS_URL CALLS SEED`.

Publishes the interleaved events of CALLS generated calls (tests.integration.callgen)
in small bursts, so a consumer can be killed while the load is still arriving.
"""

from __future__ import annotations

import asyncio
import sys

from cti.bus import open_bus, streams
from tests.integration.callgen import interleaved, many_calls


async def main(bus_url: str, count: int, seed: int) -> None:
    bus = open_bus(bus_url)
    await bus.start()
    events = interleaved(many_calls(count, seed=seed), seed=seed)
    for i in range(0, len(events), 100):
        await bus.publish_many(streams.EVENTS, [e.to_dict() for e in events[i : i + 100]])
        await asyncio.sleep(0.005)
    await bus.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
