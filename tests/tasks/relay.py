"""A relay between the service and PostgreSQL that a test can cut, as a network partition
does: the connections open through it are dropped and new ones refused; or freeze, as a
partition that drops packets does: nothing passes either way, and nothing is refused."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from sqlalchemy.engine import make_url

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Relay:
    def __init__(self, url: str) -> None:
        self._target = make_url(url)
        self._server: asyncio.AbstractServer | None = None
        self._transports: list[asyncio.WriteTransport] = []
        self.frozen = False
        self.url = url  # through the relay, once started

    async def start(self) -> None:
        target = self._target
        socket_dir = target.query.get("host")
        if isinstance(socket_dir, str) and socket_dir.startswith("/"):  # a Unix socket
            name = f".s.PGSQL.{target.port or 5432}"
            upstream = str(Path(socket_dir) / name)
            relay_dir = tempfile.mkdtemp(prefix="assay-relay-")

            async def connect_upstream() -> Streams:
                return await asyncio.open_unix_connection(upstream)

            self._server = await asyncio.start_unix_server(
                self._relay(connect_upstream), str(Path(relay_dir) / name)
            )
            self.url = target.update_query_dict({"host": relay_dir}).render_as_string(False)
        else:
            host, port = target.host or "127.0.0.1", target.port or 5432

            async def connect_upstream() -> Streams:
                return await asyncio.open_connection(host, port)

            self._server = await asyncio.start_server(self._relay(connect_upstream), "127.0.0.1", 0)
            relay_port = self._server.sockets[0].getsockname()[1]
            self.url = target.set(host="127.0.0.1", port=relay_port).render_as_string(False)

    def _relay(self, connect_upstream: Callable[[], Awaitable[Streams]]) -> Handler:
        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self.frozen:  # accepted, never answered
                self._transports.append(writer.transport)
                return
            upstream_reader, upstream_writer = await connect_upstream()
            self._transports += [writer.transport, upstream_writer.transport]

            async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
                with contextlib.suppress(ConnectionError):
                    while chunk := await source.read(65536):
                        if not self.frozen:
                            sink.write(chunk)
                            await sink.drain()
                sink.transport.abort()

            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

        return relay

    def cut(self) -> None:
        """Drops every connection through the relay and refuses new ones."""
        assert self._server is not None
        self._server.close()
        for transport in self._transports:
            transport.abort()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@contextlib.asynccontextmanager
async def relayed(url: str) -> AsyncIterator[Relay]:
    relay = Relay(url)
    await relay.start()
    try:
        yield relay
    finally:
        relay.cut()
        await relay.close()
