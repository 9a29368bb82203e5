"""A poison event: well-formed JSON that the store can never take (a NUL character,
which PostgreSQL text and jsonb refuse).

Expected behaviour: the pipeline's batch fails, the bus retries the entries one by one,
so the other events of the batch are stored at once; the poison entry is retried until
it has been delivered `bus.max_deliveries` times, then goes to `events:dead` with its
error and is acknowledged. Live traffic keeps flowing the whole time, and every
completed call has exactly one record and one activity.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from cti.bus import streams as S
from cti.model import CallEvent, EventKind, make_call_id, make_event_id
from tests.faults.checks import assert_each_completed_call_once, counts, wait_settled
from tests.faults.conftest import fault_settings, inject_calls, start_app, wait_for, wait_store_caught_up

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

MAX_DELIVERIES = 3


def poison(tenant: str) -> CallEvent:
    call_id = make_call_id(tenant, "sim", "poison-1")
    return CallEvent(
        event_id=make_event_id("sim", "poison-1", "created"), call_id=call_id, tenant=tenant, provider="sim",
        provider_call_id="poison-1", kind=EventKind.CREATED, occurred_at=datetime.now(UTC),
        from_number="+3361\x002345678", to_number="+33180000000",
    )


async def test_poison_event_is_dead_lettered_after_max_deliveries_and_the_rest_flows(
    redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    settings = fault_settings(tmp_path, bus_url=redis_url, store_url=pg_url,
                              bus={"max_deliveries": MAX_DELIVERIES, "claim_idle_ms": 1000})
    app = await start_app(settings)
    try:
        inject_calls(app, 3)
        bad = poison(settings.site.tenant)
        await app.bus.publish(S.EVENTS, bad.to_dict())
        inject_calls(app, 6)

        async def dead() -> list:
            return [m for m in await app.bus.dead_letters(S.EVENTS) if m.data.get("group") == "store"]

        await wait_for(lambda: _nonempty(dead()), 20, "the poison entry in events:dead")
        (letter,) = await dead()
        assert letter.data["data"]["event_id"] == bad.event_id
        assert letter.data["deliveries"] == MAX_DELIVERIES
        assert letter.data["error"]

        await wait_settled(app.db.engine, ended_at_least=9, timeout=25)
        settled = await assert_each_completed_call_once(app.db.engine)
        assert settled.ended >= 9
        total, _, _ = await counts(app.db.engine)
        assert total == settled.calls  # the poison call has no row
        assert await app.load_call(bad.call_id) is None
        # nothing of the store group is left pending: the poison entry was acknowledged
        await wait_store_caught_up(app.bus)
    finally:
        await app.stop()


async def _nonempty(coro) -> bool:
    return bool(await coro)
