from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyAddress, field_validator

from utils.auth import Role
from utils.schemas import InputModel, Name, OutputModel, example

ApiKeyRole = Literal["admin", "member", "viewer"]


class OrganizationCreate(InputModel):
    model_config = example({"name": "Analytical Engines"})

    name: Name


class OrganizationUpdate(InputModel):
    model_config = example({"name": "Analytical Engines Ltd"})

    name: Name | None = None


class OrganizationRead(OutputModel):
    id: uuid.UUID
    name: str
    created_at: datetime
    updated_at: datetime


class MyOrganizationRead(OrganizationRead):
    role: Role = Field(description="Your role in this organization")


class ApiKeyCreate(InputModel):
    model_config = example({"name": "ci", "role": "member", "expires_at": "2099-01-01T00:00:00Z"})

    name: Name
    role: ApiKeyRole = Field(default="member", description="What the key may do (never owner)")
    expires_at: datetime | None = Field(default=None, description="None: until revoked")

    @field_validator("expires_at")
    @classmethod
    def _in_future(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("must include a timezone")
        if value <= datetime.now(UTC):
            raise ValueError("must be in the future")
        return value


class ApiKeyRead(OutputModel):
    id: uuid.UUID
    name: str
    role: ApiKeyRole
    display_prefix: str = Field(description="The key's first characters, to recognise it")
    created_by: uuid.UUID | None = Field(
        description="The user the key answers to: who made it, or who made the key it was made"
        " with. Removing them from the organization revokes it."
    )
    created_with_key_id: uuid.UUID | None = Field(
        description="The key it was made with, if one: revoking that key revokes this one, and"
        " this one expires no later than it"
    )
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The secret. Shown once; only its hash is stored.")


# --- the audit log --------------------------------------------------------------------------

ActorKind = Literal["user", "api_key"]


class AuditEntryRead(OutputModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "0193a1b2-c3d4-7e5f-8a6b-7c8d9e0f1a2b",
                    "action": "member.role_changed",
                    "actor_kind": "user",
                    "actor_user_id": "0193a1b2-0000-7e5f-8a6b-7c8d9e0f1a2b",
                    "actor_api_key_id": None,
                    "target_type": "member",
                    "target_id": "0193a1b2-1111-7e5f-8a6b-7c8d9e0f1a2b",
                    "details": {"from": "member", "to": "admin"},
                    "ip": "203.0.113.7",
                    "user_agent": "Mozilla/5.0",
                    "request_id": "5f0c6e1d2b3a4c5d",
                    "created_at": "2026-12-02T09:30:00Z",
                }
            ]
        },
    )

    id: uuid.UUID
    action: str = Field(description="What happened: `<target type>.<verb>`, e.g. api_key.revoked")
    actor_kind: ActorKind = Field(description="Who did it: a user, or an API key")
    actor_user_id: uuid.UUID | None
    actor_api_key_id: uuid.UUID | None
    target_type: str = Field(description="The kind of thing changed (member, api_key, model...)")
    target_id: uuid.UUID | None
    details: dict[str, Any] = Field(
        description="What changed (names, old and new values); never a secret's value"
    )
    ip: IPvAnyAddress | None = Field(
        description="The client's address (the one a trusted proxy forwarded, behind one)"
    )
    user_agent: str | None
    request_id: str | None = Field(description="The request's X-Request-ID, as in the logs")
    created_at: datetime


class AuditLogPage(BaseModel):
    """One page of the audit log, newest first."""

    items: list[AuditEntryRead]
    total: int = Field(description="Entries matching the filters, in all")
    limit: int
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null on the last page"
    )
