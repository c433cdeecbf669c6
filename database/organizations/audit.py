"""The audit log: who changed what in an organization, when and from where.

Recording a change is one call, made with the request's session after the change itself, so
the entry is written in the change's transaction: a request that fails and rolls back leaves
no entry, and a change that commits always has one.

    from database.organizations.audit import RequestMetaDep, record

    @router.delete("/{widget_id}", ...)
    async def delete_widget(
        widget_id: uuid.UUID, session: DbSession, principal: Member, meta: RequestMetaDep
    ) -> None:
        widget = await service.get_widget_or_404(session, widget_id)
        await crud.delete_widget(session, widget)
        await record(
            session, principal, action="widget.deleted", target_type="widget",
            target_id=widget.id, details={"name": widget.name}, request_meta=meta,
        )

- `action` is `<target type>.<what happened>` in lower case, the verb in the past tense
  (`api_key.revoked`, `member.role_changed`); `target_type` names the kind of thing changed.
- `details` is a small JSON object that makes the entry readable once the target is gone
  (a name, the old and new role). Never a secret's value: name the secret fields that were
  set or cleared, as model configurations do.
- The actor is the principal: its user, or the API key it authenticated with. The entry
  belongs to the principal's organization unless `organization_id` says otherwise (accepting
  an invitation is recorded in the inviting organization, inside the block acting for it).
- `request_meta` (the `RequestMetaDep` dependency) adds the client's address, user agent and
  request id. The address is the socket peer's, or the one a trusted proxy forwarded: uvicorn
  rewrites it only for the proxies `ASSAY_FORWARDED_ALLOW_IPS` names.

The runtime may insert and read entries, never change or remove them (see the migration
0011_audit_log). Admins and owners read their organization's log through
`GET /organizations/{id}/audit-log`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic_core import to_jsonable_python
from sqlalchemy.ext.asyncio import AsyncSession

from database.organizations.crud import audit_log
from database.organizations.crud.audit_log import AuditFilters
from database.organizations.schemas import AuditEntryRead, AuditLogPage
from utils.auth import Principal
from utils.errors import InvalidInput
from utils.ids import new_id

USER_AGENT_MAX_LENGTH = 512


@dataclass(frozen=True)
class RequestMeta:
    """Where a request came from: the client's address, its user agent, the request id."""

    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None


async def request_meta(request: Request) -> RequestMeta:
    host = request.client.host if request.client else None
    agent = (request.headers.get("user-agent") or "").replace("\x00", "").strip()
    return RequestMeta(
        ip=_address(host),
        user_agent=agent[:USER_AGENT_MAX_LENGTH] or None,
        request_id=getattr(request.state, "request_id", None),
    )


RequestMetaDep = Annotated[RequestMeta, Depends(request_meta)]


def _address(host: str | None) -> str | None:
    """The peer as an IP address; None for anything else (a Unix socket's peer, a test
    client's name), which must not fail the change being recorded."""
    if not host:
        return None
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


async def record(
    session: AsyncSession,
    principal: Principal,
    *,
    action: str,
    target_type: str,
    target_id: uuid.UUID | None,
    details: Mapping[str, Any] | None = None,
    request_meta: RequestMeta | None = None,
    organization_id: uuid.UUID | None = None,
) -> None:
    """Appends an entry to the audit log in the session's transaction (see the module's
    docstring)."""
    meta = request_meta or RequestMeta()
    await audit_log.add_audit_entry(
        session,
        {
            "id": new_id(),
            "organization_id": organization_id or principal.organization_id,
            "actor_kind": "api_key" if principal.api_key_id else "user",
            "actor_user_id": None if principal.api_key_id else principal.user_id,
            "actor_api_key_id": principal.api_key_id,
            "action": action,
            "target_type": target_type,
            "target_id": target_id,
            "details": to_jsonable_python(dict(details or {})),
            "ip": meta.ip,
            "user_agent": meta.user_agent,
            "request_id": meta.request_id,
        },
    )


# --- reading --------------------------------------------------------------------------------


async def read_log(
    session: AsyncSession,
    organization_id: uuid.UUID,
    filters: AuditFilters,
    *,
    cursor: str | None,
    limit: int,
) -> AuditLogPage:
    for field in ("since", "until"):
        moment = getattr(filters, field)
        if moment is not None and moment.tzinfo is None:
            raise InvalidInput("must include a timezone", field=field)
    if filters.since and filters.until and filters.since >= filters.until:
        raise InvalidInput("must be later than since", field="until")
    rows, total = await audit_log.list_audit_entries(
        session,
        organization_id,
        filters,
        before=_decode_cursor(cursor) if cursor else None,
        limit=limit + 1,  # one more: is there a next page?
    )
    page, more = rows[:limit], len(rows) > limit
    return AuditLogPage(
        items=[AuditEntryRead.model_validate(row) for row in page],
        total=total,
        limit=limit,
        next_cursor=_encode_cursor(page[-1].created_at, page[-1].id) if more else None,
    )


# A page ends at an entry: the next one starts after it, however many entries were written
# since (offsets would shift with every new entry).
def _encode_cursor(created_at: datetime, entry_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{entry_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, entry_id = raw.split("|")
        created_at = datetime.fromisoformat(moment)
        if created_at.tzinfo is None:
            raise ValueError("no timezone")
        created_at.astimezone(UTC)  # within the years a moment is stored in
        return created_at, uuid.UUID(entry_id)
    except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError) as exc:
        raise InvalidInput("is not a cursor this list returned", field="cursor") from exc


async def record_deletion(
    session: AsyncSession,
    principal: Principal,
    meta: RequestMeta,
    target_type: str,
    target_id: uuid.UUID,
    **details: Any,
) -> None:
    """`<target_type>.deleted`, with what the entry should still say of what is gone."""
    await record(
        session,
        principal,
        action=f"{target_type}.deleted",
        target_type=target_type,
        target_id=target_id,
        details=details,
        request_meta=meta,
    )
