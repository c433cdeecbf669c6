"""A webhook receiver on loopback, written the way a team would write one: it verifies every
message with the Standard Webhooks library (`Webhook(secret).verify(body, headers)`, which
checks the signature and that the timestamp is within five minutes) against the secrets it
holds, answers 401 to a message that does not verify (forged, or replayed too late), and
handles each message id once (a copy is acknowledged with 200 and not handled again).

    with WebhookReceiver() as receiver:
        receiver.secrets = [secret]                          # what the team was shown
        receiver.enqueue(Fault.http(503), Fault.http(503))   # the next two requests fail
        ...
        receiver.handled   # {message id: parsed body}, each verified message once
        receiver.log       # every request, with what the receiver made of it
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.server import FakeServer, Fault, RecordedRequest

__all__ = ["Fault", "Received", "WebhookReceiver"]

Outcome = Literal["handled", "duplicate", "rejected", "fault"]


@dataclass(frozen=True)
class Received:
    request: RecordedRequest
    outcome: Outcome
    detail: str | None = None

    @property
    def message_id(self) -> str | None:
        return self.request.headers.get("webhook-id")


class WebhookReceiver(FakeServer):
    def __init__(self, *, secrets: Iterable[str] = (), path: str = "/hooks/assay") -> None:
        super().__init__()
        self.secrets = list(secrets)
        self.path = path
        self._handled: dict[str, Any] = {}
        self._log: list[Received] = []

    @property
    def endpoint(self) -> str:
        return f"{self.url}{self.path}"

    @property
    def handled(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._handled)

    @property
    def log(self) -> list[Received]:
        with self._lock:
            return list(self._log)

    def verify(self, body: str, headers: dict[str, str]) -> Any:
        """The parsed body when a secret held verifies the message; else raises
        WebhookVerificationError with the library's reason."""
        failure = WebhookVerificationError("the receiver holds no secret")
        for secret in self.secrets:
            try:
                return Webhook(secret).verify(body, headers)
            except WebhookVerificationError as exc:
                failure = exc
        raise failure

    def build_app(self) -> Starlette:
        return Starlette(routes=[Route(self.path, self._handle, methods=["POST"])])

    async def _handle(self, request: Request) -> Response:
        recorded = await self.record(request)
        await self.sleep(self.latency)
        fault = self.next_fault()
        if fault is not None:
            self._note(Received(recorded, "fault", fault.kind))
            return await self.fault_response(request, fault, Response("not json", 200))
        try:
            body = self.verify(recorded.text, recorded.headers)
        except WebhookVerificationError as exc:
            self._note(Received(recorded, "rejected", str(exc)))
            return JSONResponse({"error": str(exc)}, 401)
        message_id = recorded.headers["webhook-id"]
        with self._lock:
            duplicate = message_id in self._handled
            if not duplicate:
                self._handled[message_id] = body
            self._log.append(Received(recorded, "duplicate" if duplicate else "handled"))
        return JSONResponse({"received": message_id, "duplicate": duplicate})

    def _note(self, received: Received) -> None:
        with self._lock:
            self._log.append(received)
