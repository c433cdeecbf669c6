from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, field_validator

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
    created_by: uuid.UUID | None
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The secret. Shown once; only its hash is stored.")
