"""The messages Assay sends to webhook receivers, as the API document's `webhooks`: one
operation per message type, which a receiver implements (none is ever called here)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any, cast

from fastapi import FastAPI, Header, Response
from pydantic import BaseModel, Field

from database.projects.webhook_messages import WEBHOOK_MESSAGES


class SignatureHeaders(BaseModel):
    """The Standard Webhooks headers of every message (notifications/webhooks.py)."""

    webhook_id: str = Field(
        pattern=r"^msg_[0-9a-f]{32}$",
        description="The message's id (`msg_...`): the same at every attempt and redelivery;"
        " drop a message whose id was handled already",
    )
    webhook_timestamp: str = Field(
        pattern=r"^[0-9]+$",
        description="Unix seconds of this attempt, signed anew at each: refuse a message far"
        " from now (a replay); the reference libraries allow five minutes",
    )
    webhook_signature: str = Field(
        pattern=r"^v1,[A-Za-z0-9+/]+=*( v1,[A-Za-z0-9+/]+=*)*$",
        description="`v1,<base64 HMAC-SHA256 of {webhook-id}.{webhook-timestamp}.{body}>` with"
        " the webhook's secret; during a secret rotation's overlap one per secret,"
        " space-separated: any one that verifies will do",
    )


WEBHOOK_DESCRIPTION = """

POSTed as `application/json` (`user-agent: Assay-Webhooks/1`), signed per Standard Webhooks:
verify the body and headers with any `standardwebhooks` library and the webhook's `whsec_...`
secret. A 2xx answer delivers the message; any other (a redirect included), or none within
`ASSAY_WEBHOOK_TIMEOUT_SECONDS`, is retried on the schedule of `ASSAY_WEBHOOK_RETRY_SECONDS`."""


def register_webhooks(app: FastAPI) -> None:
    """Each message type as a webhook of the API document (`webhooks`): the operation a
    receiver implements, named `on_<type>`."""
    for event, (message, summary) in WEBHOOK_MESSAGES.items():
        app.webhooks.add_api_route(
            event,
            _receiver(message),
            methods=["POST"],
            operation_id="on_" + event.replace(".", "_"),
            summary=summary,
            description=(message.__doc__ or "").strip() + WEBHOOK_DESCRIPTION,
            tags=["projects"],
            response_class=Response,
            response_description="Received: the message is delivered (any 2xx will do)",
            responses={"default": {"description": "Not delivered: the attempt is retried"}},
        )


def _receiver(message: type[BaseModel]) -> Callable[..., None]:
    """An endpoint that documents `message` as its body (none is ever called)."""

    def receive(**_: Any) -> None:
        return None

    parameter = inspect.Parameter.KEYWORD_ONLY
    # Built here, not annotated: the body's model differs per message type.
    cast(Any, receive).__signature__ = inspect.Signature(
        [
            inspect.Parameter("message", parameter, annotation=message),
            inspect.Parameter(
                "headers", parameter, annotation=Annotated[SignatureHeaders, Header()]
            ),
        ]
    )
    return receive
