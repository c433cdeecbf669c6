"""Queries of webhooks and their delivery log. Flush, never commit."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncSession

from database.projects.models import Project
from database.projects.webhook_models import Webhook, WebhookDelivery
from utils.crud import delete_once, paginate

DISABLED = "not sent: the webhook was disabled"


async def add_webhook(session: AsyncSession, webhook: Webhook) -> Webhook:
    session.add(webhook)
    await session.flush()
    return webhook


async def get_webhook(session: AsyncSession, webhook_id: uuid.UUID) -> Webhook | None:
    return await session.get(Webhook, webhook_id)


async def count_webhooks(session: AsyncSession, project_id: uuid.UUID) -> int:
    """How many webhooks the project has, its row locked first: creations take turns. The
    lock (FOR NO KEY UPDATE) lets rows that refer to the project be written meanwhile."""
    await session.execute(
        select(Project.id).where(Project.id == project_id).with_for_update(key_share=True)
    )
    total = await session.scalar(
        select(func.count()).select_from(Webhook).where(Webhook.project_id == project_id)
    )
    return int(total or 0)


async def list_webhooks(
    session: AsyncSession, project_id: uuid.UUID, *, limit: int, offset: int
) -> tuple[list[Webhook], int]:
    query = (
        select(Webhook)
        .where(Webhook.project_id == project_id)
        .order_by(Webhook.created_at, Webhook.id)
    )
    return await paginate(session, query, limit=limit, offset=offset)


async def enabled_webhooks(session: AsyncSession, project_id: uuid.UUID) -> list[Webhook]:
    """Held from deletion to the end of the transaction (the lock its deliveries' foreign key
    takes, taken as they are read): one deleted meanwhile would fail the insert of its
    deliveries, and with it the transaction, a run's end."""
    rows = await session.scalars(
        select(Webhook)
        .where(Webhook.project_id == project_id, Webhook.enabled)
        .order_by(Webhook.created_at, Webhook.id)
        .with_for_update(key_share=True, read=True)
    )
    return list(rows.all())


async def lock_webhook(session: AsyncSession, webhook: Webhook) -> bool:
    """Holds the webhook's row to the end of the transaction, `webhook` read anew under it;
    False when it was deleted meanwhile."""
    try:
        await session.refresh(webhook, with_for_update=True)
    except InvalidRequestError:  # SQLAlchemy's word for a row no longer there to read
        return False
    return True


async def save_webhook(session: AsyncSession) -> None:
    await session.flush()


async def delete_webhook(session: AsyncSession, webhook: Webhook) -> None:
    """Its delivery log goes with it (ON DELETE CASCADE). A 404 when another request deleted
    it first: only the deleting request records it."""
    await delete_once(session, webhook, "Webhook")


# --- the delivery log -----------------------------------------------------------------------


async def add_deliveries(
    session: AsyncSession, deliveries: Sequence[WebhookDelivery]
) -> Sequence[WebhookDelivery]:
    session.add_all(deliveries)
    await session.flush()
    return deliveries


async def get_delivery(session: AsyncSession, delivery_id: uuid.UUID) -> WebhookDelivery | None:
    return await session.get(WebhookDelivery, delivery_id)


async def list_deliveries(
    session: AsyncSession,
    webhook_id: uuid.UUID,
    *,
    status: str | None,
    event_type: str | None,
    limit: int,
    offset: int,
) -> tuple[list[WebhookDelivery], int]:
    """Newest first."""
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook_id)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
    )
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if event_type is not None:
        query = query.where(WebhookDelivery.event_type == event_type)
    return await paginate(session, query, limit=limit, offset=offset)


async def delivery_to_send(
    session: AsyncSession, delivery_id: uuid.UUID
) -> tuple[WebhookDelivery, Webhook] | None:
    """The delivery with its webhook; None when the webhook (and so the delivery) is gone."""
    row = (
        await session.execute(
            select(WebhookDelivery, Webhook)
            .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .where(WebhookDelivery.id == delivery_id)
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


async def record_attempt(
    session: AsyncSession,
    delivery_id: uuid.UUID,
    *,
    delivered: bool,
    status_code: int | None,
    latency_ms: int,
    error: str | None,
) -> None:
    """Counts one attempt at a pending delivery: delivered, or still pending with its error.
    An attempt under way when its webhook was disabled (which failed the delivery, as not
    sent) happened all the same: it is counted, and a receiver that took the message has it."""
    values: dict[str, object] = {
        "attempts": WebhookDelivery.attempts + 1,
        "last_status_code": status_code,
        "latency_ms": latency_ms,
        "last_error": error,
        "last_attempt_at": func.now(),
    }
    if delivered:
        values.update(status="delivered", delivered_at=func.now())
    counted = await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending")
        .values(**values)
    )
    if counted.rowcount == 0:  # type: ignore[attr-defined]
        if not delivered:
            values["last_error"] = f"the webhook was disabled during an attempt: {error}"[:300]
        await session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == "failed",
                WebhookDelivery.last_error == DISABLED,
            )
            .values(**values)
        )


async def fail_delivery(
    session: AsyncSession, delivery_id: uuid.UUID, error: str, *, keep_last_error: bool = False
) -> None:
    """A pending delivery will not be attempted again, for `error` (or, with
    `keep_last_error`, for what its last attempt recorded, when it recorded something)."""
    await session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending")
        .values(
            status="failed",
            last_error=func.coalesce(WebhookDelivery.last_error, error)
            if keep_last_error
            else error,
        )
    )


async def fail_pending_deliveries(
    session: AsyncSession, webhook_id: uuid.UUID, error: str
) -> list[uuid.UUID]:
    """The webhook's pending deliveries, failed; their ids."""
    failed = await session.scalars(
        update(WebhookDelivery)
        .where(WebhookDelivery.webhook_id == webhook_id, WebhookDelivery.status == "pending")
        .values(status="failed", last_error=error)
        .returning(WebhookDelivery.id)
    )
    return list(failed.all())


async def reopen_delivery(session: AsyncSession, delivery: WebhookDelivery) -> bool:
    """Makes a delivered or failed delivery pending again; False when it is pending already
    (judged as its row is written, under the row's lock)."""
    reopened = await session.scalar(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery.id, WebhookDelivery.status != "pending")
        .values(status="pending", delivered_at=None)
        .returning(WebhookDelivery.id)
        .execution_options(synchronize_session=False)
    )
    if reopened is None:
        return False
    await session.refresh(delivery)
    return True
