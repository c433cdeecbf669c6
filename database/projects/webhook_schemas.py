from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints

from database.projects.webhook_models import WEBHOOK_EVENTS, DeliveredEvent, WebhookEvent
from utils.schemas import InputModel, OutputModel, example

DeliveryStatus = Literal["pending", "delivered", "failed"]
WebhookUrl = Annotated[str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=True)]


def _distinct(events: list[str]) -> list[str]:
    """Each event once, in the order the events are listed above."""
    return [e for e in WEBHOOK_EVENTS if e in events]


Events = Annotated[
    list[WebhookEvent],
    AfterValidator(_distinct),
    Field(
        min_length=1,
        max_length=len(WEBHOOK_EVENTS),
        description="`run.completed`, `run.failed` (a failed run, or one its budget stopped),"
        " `run.cancelled`, `gate.failed`, `regression` (a completed run with a metric regressed"
        " against the project's baseline run)",
    ),
]
URL_RULE = (
    "http(s); refused when it points at a private, loopback or link-local address (unless the"
    " operator allows private networks). Redirects are not followed"
)


class WebhookCreate(InputModel):
    model_config = example(
        {
            "url": "https://hooks.example.com/assay",
            "events": ["run.failed", "gate.failed", "regression"],
            "description": "The team's CI bot",
        }
    )

    url: WebhookUrl = Field(description=URL_RULE)
    events: Events
    description: str | None = Field(default=None, max_length=2000)
    enabled: bool = Field(default=True, description="A disabled webhook is sent nothing")


class WebhookUpdate(InputModel):
    model_config = example({"events": ["run.completed", "run.failed"], "enabled": False})

    url: WebhookUrl | None = Field(default=None, description=URL_RULE)
    events: Events | None = None
    description: str | None = Field(default=None, max_length=2000)
    enabled: bool | None = None


class WebhookRead(OutputModel):
    id: uuid.UUID
    project_id: uuid.UUID
    url: str = Field(
        description="Where messages are POSTed. Shown whole to the roles that may create and"
        " edit webhooks (member, admin, owner); a viewer sees its scheme and host only"
        " (`https://hooks.example.com/…`): for chat services' incoming webhooks the URL itself"
        " is the credential"
    )
    events: list[WebhookEvent]
    description: str | None
    enabled: bool
    previous_secret_expires_at: datetime | None = Field(
        description="After a rotation, until then deliveries carry a signature with the previous"
        " secret too"
    )
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookRead):
    secret: str = Field(
        description="The signing secret (Standard Webhooks, `whsec_...`): shown this once only"
    )


class WebhookSecret(OutputModel):
    secret: str = Field(description="The new signing secret: shown this once only")
    previous_secret_expires_at: datetime | None = Field(
        description="Until then the previous secret signs deliveries too (null: it no longer does)"
    )


class DeliveryRead(OutputModel):
    id: uuid.UUID
    webhook_id: uuid.UUID
    event_type: DeliveredEvent = Field(
        description="One of the webhook's events, or `webhook.test`: the payload's `type`"
    )
    message_id: str = Field(
        description="The `webhook-id` header: the same at every attempt, for deduplication"
    )
    status: DeliveryStatus = Field(
        description="`pending` while attempts remain, `delivered` on a 2xx answer, `failed` when"
        " the attempts ran out (or the webhook was disabled before it was sent)"
    )
    attempts: int
    last_status_code: int | None = Field(description="The receiver's last HTTP status")
    latency_ms: int | None = Field(description="Of the last attempt")
    last_error: str | None = Field(description="Why the last attempt did not deliver")
    payload: dict[str, Any] = Field(
        description="The body sent: `type`, `timestamp`, `data`; each type's schema is the"
        " document's webhook of that name (`webhooks`)"
    )
    created_at: datetime
    last_attempt_at: datetime | None
    delivered_at: datetime | None
