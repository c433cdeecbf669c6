"""A live stream's body chunks skip the middleware (notifications/stream.py): that is only right
while every middleware of both apps leaves body messages alone, as those listed here do (they
read or add headers of the response's start, and see its end). A new one fails this test until
it is checked and listed."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.routing import Mount
from starlette.types import Message

from app.main import create_app
from app.middleware import (
    ApiCorsMiddleware,
    BodySizeLimitMiddleware,
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
    ServerSendApp,
)
from notifications.stream import SERVER_SEND
from utils.config import get_settings

LEAVE_BODIES_ALONE = {
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
    BodySizeLimitMiddleware,
    CORSMiddleware,
    ApiCorsMiddleware,  # CORSMiddleware's, or else passing the request by untouched
}


def test_every_middleware_leaves_stream_bodies_alone() -> None:
    app = create_app(get_settings().model_copy(update={"cors_origins": ["https://a.example"]}))
    assert isinstance(app, ServerSendApp)
    [public] = [r.app for r in app.routes if isinstance(r, Mount) and r.path == "/public"]
    assert isinstance(public, FastAPI)
    for each in (app, public):
        classes = {middleware.cls for middleware in each.user_middleware}
        assert classes <= LEAVE_BODIES_ALONE, classes - LEAVE_BODIES_ALONE


async def test_the_app_records_the_servers_send() -> None:
    app = create_app()
    seen: dict[str, object] = {}

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        seen.setdefault("first", message["type"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/no-such-path",
        "raw_path": b"/no-such-path",
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    await app(scope, receive, send)
    assert scope[SERVER_SEND] is send  # the server's own, before any layer wrapped it
    assert seen["first"] == "http.response.start"
