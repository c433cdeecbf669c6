"""An ASGI app served for real, in the test's event loop (so monkeypatches apply): uvicorn
with the protocol `python -m app serve` uses, on a socket of its own."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from app.http_protocol import BoundedHttpToolsProtocol


@asynccontextmanager
async def served(app: Any) -> AsyncIterator[uvicorn.Server]:
    config = uvicorn.Config(
        app, lifespan="off", log_config=None, access_log=False, http=BoundedHttpToolsProtocol
    )
    server = uvicorn.Server(config)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "the server did not start"
            await asyncio.sleep(0.01)
        yield server
    finally:
        server.should_exit = True
        await task
        sock.close()


def port_of(server: uvicorn.Server) -> int:
    port: int = server.servers[0].sockets[0].getsockname()[1]
    return port
