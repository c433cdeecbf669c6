"""A minimal OpenAI-compatible server for benchmarks, run as its own process so that it does
not compete with the code being measured for the interpreter lock:

    python -m bench.fake_provider --port 9100 --latency 0.05

It speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies) on a bare asyncio protocol:
a full ASGI stack here would spend more CPU than the service being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json

import uvloop

_ids = itertools.count()


def completion(request: bytes) -> bytes:
    try:
        body = json.loads(request or b"{}")
        text = body.get("messages", [{}])[-1].get("content", "")
        model = body.get("model", "bench")
    except (ValueError, AttributeError, IndexError):
        text, model = "", "bench"
    reply = {
        "id": f"chatcmpl-{next(_ids)}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"echo: {text}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
    }
    payload = json.dumps(reply).encode()
    head = (
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + payload


class Provider(asyncio.Protocol):
    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.buffer = b""
        self.transport: asyncio.WriteTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            response = completion(body)
            loop = asyncio.get_running_loop()
            if self.latency:
                loop.call_later(self.latency, self._send, response)
            else:
                self._send(response)

    def _send(self, response: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response)


async def serve(port: int, latency: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Provider(latency), "127.0.0.1", port, backlog=4096, reuse_address=True
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.latency))


if __name__ == "__main__":
    main()
