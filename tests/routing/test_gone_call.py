"""A call the provider no longer has is dropped, not offered to every agent in turn."""

from __future__ import annotations

from cti.adapters.base import CallNotFound, CommandResult, Connect
from tests.routing.test_acd import Harness, _q


class GoneHarness(Harness):
    """The PBX lost call p1 (its caller hung up; the ended event has not reached us yet)."""

    async def dispatch(self, provider, cmd):
        self.sent.append((provider, cmd))
        if isinstance(cmd, Connect) and cmd.provider_call_id == "p1":
            raise CallNotFound(f"provider {provider!r} has no call {cmd.provider_call_id!r}")
        return CommandResult(ok=True)


async def test_connect_refused_with_call_not_found_ends_the_call_once():
    h = GoneHarness()
    await h.login("alice", "bob")
    await h.router.on_event(h.ev("queued", pcid="p1", queue="support"))
    assert len(h.connects()) == 1                      # tried once, not alice then bob then ...
    assert _q(h.router.snapshot(), "support")["waiting"] == 0
    await h.router.on_event(h.ev("queued", pcid="p2", queue="support"))
    assert [c.provider_call_id for c in h.connects()] == ["p1", "p2"]   # the agents are free for the next caller
    await h.router.on_event(h.ev("ended", pcid="p1"))  # the late ended event changes nothing
    assert len(h.connects()) == 2
