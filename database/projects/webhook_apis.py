from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Depends, Query, status
from sqlalchemy.ext.asyncio import AsyncSession

from database.deps import DbSession, Pagination, RoleCheck, RuntimeDep, Viewer
from database.organizations.audit import RequestMeta, RequestMetaDep, record
from database.projects import webhook_crud as crud
from database.projects import webhooks as service
from database.projects.service import get_project_or_404
from database.projects.webhook_models import DeliveredEvent, Webhook
from database.projects.webhook_schemas import (
    DeliveryRead,
    DeliveryStatus,
    WebhookCreate,
    WebhookCreated,
    WebhookRead,
    WebhookSecret,
    WebhookUpdate,
)
from database.routing import api_router
from utils.auth import Principal, Role
from utils.problems import errors
from utils.schemas import Page
from utils.url_redaction import shown_origin, url_origin

router = api_router(prefix="/projects/{project_id}/webhooks", tags=["projects"])

# Who may create and edit webhooks, and so read their URLs whole: for chat services' incoming
# webhooks the URL is the credential. The roles below it read them redacted.
EDITOR_ROLE = Role.member
Editor = Annotated[Principal, Depends(RoleCheck(EDITOR_ROLE))]


@router.get(
    "",
    operation_id="webhooks_list",
    summary="List a project's webhooks",
)
async def list_webhooks(
    project_id: uuid.UUID, session: DbSession, principal: Viewer, page: Pagination
) -> Page[WebhookRead]:
    """Oldest first; secrets are never shown again after they are made, and a viewer sees
    each URL's scheme and host only."""
    await get_project_or_404(session, project_id)
    rows, total = await crud.list_webhooks(
        session, project_id, limit=page.limit, offset=page.offset
    )
    items = [_shown(row, principal) for row in rows]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    operation_id="webhooks_create",
    summary="Subscribe a URL to the project's run events",
    responses=errors(409),
)
async def create_webhook(
    project_id: uuid.UUID,
    body: WebhookCreate,
    session: DbSession,
    runtime: RuntimeDep,
    principal: Editor,
    meta: RequestMetaDep,
) -> WebhookCreated:
    """Messages are signed per the Standard Webhooks specification (`webhook-id`,
    `webhook-timestamp`, `webhook-signature` headers) with the secret in this response, which
    is shown this once only."""
    project = await get_project_or_404(session, project_id)
    webhook, secret = await service.create_webhook(session, runtime, project, body)
    await _audit(session, principal, meta, "webhook.created", webhook, _described(webhook))
    return WebhookCreated(**WebhookRead.model_validate(webhook).model_dump(), secret=secret)


@router.get(
    "/{webhook_id}",
    operation_id="webhooks_read",
    summary="Read a webhook",
)
async def read_webhook(
    project_id: uuid.UUID, webhook_id: uuid.UUID, session: DbSession, principal: Viewer
) -> WebhookRead:
    """Its URL (a viewer sees its scheme and host only), events and state; never its
    secret."""
    return _shown(await service.get_webhook_or_404(session, project_id, webhook_id), principal)


@router.patch(
    "/{webhook_id}",
    operation_id="webhooks_update",
    summary="Update a webhook",
)
async def update_webhook(
    project_id: uuid.UUID,
    webhook_id: uuid.UUID,
    body: WebhookUpdate,
    session: DbSession,
    runtime: RuntimeDep,
    principal: Editor,
    meta: RequestMetaDep,
) -> WebhookRead:
    """Change its URL, events, description, or disable it (messages still pending for it are
    then not sent); fields left out stay as they are."""
    webhook = await service.get_webhook_or_404(session, project_id, webhook_id)
    updated = await service.update_webhook(session, runtime, webhook, body)
    changed = sorted(body.model_dump(exclude_unset=True))
    await _audit(
        session,
        principal,
        meta,
        "webhook.updated",
        updated,
        {**_described(updated), "changed": changed},
    )
    return WebhookRead.model_validate(updated)


@router.delete(
    "/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    operation_id="webhooks_delete",
    summary="Delete a webhook and its delivery log",
)
async def delete_webhook(
    project_id: uuid.UUID,
    webhook_id: uuid.UUID,
    session: DbSession,
    principal: Editor,
    meta: RequestMetaDep,
) -> None:
    """Messages still pending for it are not sent."""
    webhook = await service.get_webhook_or_404(session, project_id, webhook_id)
    described = _described(webhook)
    await crud.delete_webhook(session, webhook)
    await _audit(session, principal, meta, "webhook.deleted", webhook, described)


@router.post(
    "/{webhook_id}/test",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="webhooks_test",
    summary="Send the webhook a test message",
    responses=errors(409, 429),
)
async def test_webhook(
    project_id: uuid.UUID,
    webhook_id: uuid.UUID,
    session: DbSession,
    runtime: RuntimeDep,
    _: Editor,
) -> DeliveryRead:
    """A `webhook.test` message, queued and sent like any other: follow it in the delivery
    log. An organization asks for at most `ASSAY_WEBHOOK_MANUAL_SENDS_PER_HOUR` tests and
    redeliveries an hour."""
    webhook = await service.get_webhook_or_404(session, project_id, webhook_id)
    return DeliveryRead.model_validate(await service.send_test(session, runtime, webhook))


@router.post(
    "/{webhook_id}/rotate-secret",
    operation_id="webhooks_rotate_secret",
    summary="Replace the webhook's signing secret",
)
async def rotate_secret(
    project_id: uuid.UUID,
    webhook_id: uuid.UUID,
    session: DbSession,
    runtime: RuntimeDep,
    principal: Editor,
    meta: RequestMetaDep,
) -> WebhookSecret:
    """The new secret is shown this once only. For the overlap the operator set
    (`ASSAY_WEBHOOK_SECRET_OVERLAP_HOURS`) every message carries a signature with each of the
    two secrets, so a receiver can switch without a gap."""
    webhook = await service.get_webhook_or_404(session, project_id, webhook_id)
    secret = await service.rotate_secret(session, runtime, webhook)
    expires = webhook.previous_secret_expires_at
    await _audit(
        session,
        principal,
        meta,
        "webhook.secret_rotated",
        webhook,
        {"previous_secret_expires_at": expires.isoformat() if expires else None},
    )
    return WebhookSecret(
        secret=secret, previous_secret_expires_at=webhook.previous_secret_expires_at
    )


@router.get(
    "/{webhook_id}/deliveries",
    operation_id="webhooks_list_deliveries",
    summary="The webhook's delivery log",
)
async def list_deliveries(
    project_id: uuid.UUID,
    webhook_id: uuid.UUID,
    session: DbSession,
    _: Viewer,
    page: Pagination,
    status_filter: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
    event_type: DeliveredEvent | None = None,
) -> Page[DeliveryRead]:
    """Newest first: each message's status, attempts, the receiver's last HTTP status, the
    last attempt's latency and error."""
    await service.get_webhook_or_404(session, project_id, webhook_id)
    rows, total = await crud.list_deliveries(
        session,
        webhook_id,
        status=status_filter,
        event_type=event_type,
        limit=page.limit,
        offset=page.offset,
    )
    items = [DeliveryRead.model_validate(row) for row in rows]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    operation_id="webhooks_redeliver",
    summary="Send a delivered or failed message again",
    responses=errors(409, 429),
)
async def redeliver(
    project_id: uuid.UUID,
    webhook_id: uuid.UUID,
    delivery_id: uuid.UUID,
    session: DbSession,
    runtime: RuntimeDep,
    _: Editor,
) -> DeliveryRead:
    """The same message (same `webhook-id`, signed anew), with a full set of attempts
    (counted against `ASSAY_WEBHOOK_MANUAL_SENDS_PER_HOUR`, as tests are)."""
    webhook = await service.get_webhook_or_404(session, project_id, webhook_id)
    delivery = await service.redeliver(session, runtime, webhook, delivery_id)
    return DeliveryRead.model_validate(delivery)


def _shown(webhook: Webhook, principal: Principal) -> WebhookRead:
    """The webhook as `principal` may read it: its URL whole only to those who may edit it."""
    read = WebhookRead.model_validate(webhook)
    if principal.role.at_least(EDITOR_ROLE):
        return read
    return read.model_copy(update={"url": shown_origin(read.url)})


def _described(webhook: Webhook) -> dict[str, Any]:
    """What an audit entry says of a webhook (never its secret)."""
    return {
        "project_id": str(webhook.project_id),
        "url": url_origin(webhook.url),
        "events": list(webhook.events),
        "enabled": webhook.enabled,
    }


async def _audit(
    session: AsyncSession,
    principal: Principal,
    meta: RequestMeta,
    action: str,
    webhook: Webhook,
    details: dict[str, Any],
) -> None:
    await record(
        session,
        principal,
        action=action,
        target_type="webhook",
        target_id=webhook.id,
        details=details,
        request_meta=meta,
    )
