"""An in-process asyncio TCP proxy for fault tests (the aio-pika test-suite idea).

Put it between a client and its upstream (a provider fake, Redis, PostgreSQL):

    proxy = TcpProxy("127.0.0.1", upstream_port)
    port = await proxy.start()          # point the client at 127.0.0.1:port
    proxy.cut()                         # close every open connection (both sides), now
    proxy.refuse(True)                  # new connections are closed at once (upstream "down")
    proxy.blackhole(True)               # connections stay open but bytes vanish (silent hang)
    proxy.slow(0.2)                     # every chunk is delayed 200 ms (0 to stop)
    await proxy.close()

`connections_made` counts accepted client connections (a reconnect shows up there).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass(eq=False)  # identity semantics: links live in a set
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def close(self) -> None:
        for w in (self.client, self.upstream):
            with contextlib.suppress(Exception):
                # abort, not close: a cut is a reset, not a polite FIN after pending data
                w.transport.abort()
        for t in self.tasks:
            t.cancel()


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = host
        self.port = 0
        self.connections_made = 0
        self._links: set[_Link] = set()
        self._refusing = False
        self._blackholed = False
        self._delay = 0.0
        self._server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accept, self.host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    @property
    def open_connections(self) -> int:
        return len(self._links)

    # ---- faults ------------------------------------------------------------------------

    def cut(self) -> None:
        """Reset every open connection now (the client sees a dropped connection)."""
        for link in list(self._links):
            link.close()
        self._links.clear()

    def refuse(self, on: bool = True) -> None:
        """While on, new connections are dropped at once, as if the upstream were down."""
        self._refusing = on

    def blackhole(self, on: bool = True) -> None:
        """While on, bytes in both directions are silently discarded."""
        self._blackholed = on

    def slow(self, delay_s: float) -> None:
        """Delay every forwarded chunk by `delay_s` seconds (0 restores full speed)."""
        self._delay = max(0.0, delay_s)

    # ---- plumbing ------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self.connections_made += 1
        link = _Link(writer, up_writer)
        self._links.add(link)
        link.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, link)),
            asyncio.create_task(self._pump(up_reader, writer, link)),
        ]
        # stay in the handler while the link lives (the server owns the handler task)
        await asyncio.gather(*link.tasks, return_exceptions=True)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, link: _Link) -> None:
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                if self._delay:
                    await asyncio.sleep(self._delay)
                if self._blackholed:
                    continue
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # one side ended: end the other too, like a real TCP path would
            self._links.discard(link)
            link.close()
