"""RestClient: which failures are retried, and which are never replayed for a create."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cti.crm.base import CrmUnavailable
from cti.crm.rest import RestClient


async def _server(answers: list[tuple[int, float]]) -> tuple[TestServer, list[int]]:
    """Answers each request with the next (status, delay before answering)."""
    seen: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        status, delay = answers[min(len(seen), len(answers) - 1)]
        seen.append(status)
        await asyncio.sleep(delay)
        headers = {"Retry-After": "0"} if status == 429 else {}
        return web.json_response({"id": "x1"} if status < 300 else {"message": "no"}, status=status, headers=headers)

    app = web.Application()
    app.router.add_post("/things", handler)
    server = TestServer(app)
    await server.start_server()
    return server, seen


async def _no_wait(_: float) -> None:
    return None


@pytest.mark.parametrize(
    ("answers", "replay", "requests", "ok"),
    [
        ([(429, 0), (201, 0)], False, 2, True),   # refused before any work: safe to send again
        ([(503, 0), (201, 0)], False, 2, True),
        ([(500, 0), (201, 0)], False, 1, False),  # may have been done: a create is not replayed
        ([(500, 0), (201, 0)], True, 2, True),    # an idempotent request is
        ([(201, 0.5)], False, 1, False),          # the answer was lost (timeout): not replayed
    ],
)
async def test_what_is_retried_with_and_without_replay(answers, replay, requests, ok) -> None:
    server, seen = await _server(answers)
    client = RestClient("t", timeout_s=0.2, max_retries=3, sleep=_no_wait)
    try:
        if ok:
            status, body = await client.request("POST", str(server.make_url("/things")), json={}, replay=replay)
            assert status == 201 and body == {"id": "x1"}
        else:
            with pytest.raises(CrmUnavailable):
                await client.request("POST", str(server.make_url("/things")), json={}, replay=replay)
        await asyncio.sleep(0.6)  # a timed-out request still reaches the server: count it
        assert len(seen) == requests
    finally:
        await client.close()
        await server.close()
