from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    EmailStr,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from database.organizations.schemas import OrganizationRead
from utils.auth import PASSWORD_RULE, Role, password_problem
from utils.schemas import InputModel, Name, OutputModel, example

# A password is taken as typed: never trimmed (a passphrase may begin or end with a space).
Password = Annotated[
    str,
    StringConstraints(max_length=200, strip_whitespace=False),
    Field(description=PASSWORD_RULE),
]
OpaqueToken = Annotated[str, StringConstraints(min_length=1, max_length=200)]


def _normalise_email(value: str) -> str:
    return value.strip().lower()


class RegisterRequest(InputModel):
    model_config = example(
        {
            "email": "ada@example.com",
            "password": "a-long-passphrase-1",
            "name": "Ada Lovelace",
            "organization_name": "Analytical Engines",
        }
    )

    email: EmailStr = Field(max_length=320)
    password: Password
    name: Name
    organization_name: Name | None = None

    _email = field_validator("email")(_normalise_email)

    @field_validator("password")
    @classmethod
    def _strong_password(cls, password: str, info: ValidationInfo) -> str:
        problem = password_problem(password, info.data.get("email"))  # email: checked before
        if problem:
            raise ValueError(f"password {problem}")
        return password


class TokenPair(OutputModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires")


class UserRead(OutputModel):
    id: uuid.UUID
    email: str
    name: str
    created_at: datetime


class RegisterResponse(TokenPair):
    user: UserRead
    organization: OrganizationRead


class RefreshRequest(InputModel):
    model_config = example({"refresh_token": "Qm9vbGVhbiBhbGdlYnJh.refresh-token-from-login"})

    refresh_token: OpaqueToken


class LogoutRequest(InputModel):
    model_config = example({"refresh_token": "Qm9vbGVhbiBhbGdlYnJh.refresh-token-from-login"})

    refresh_token: OpaqueToken | None = None


class SwitchOrganizationRequest(InputModel):
    model_config = example({"organization_id": "0b1c2d3e-4f5a-4b6c-9d7e-8f9a0b1c2d3e"})

    organization_id: uuid.UUID


class MeRead(UserRead):
    organization_id: uuid.UUID
    role: Role


class UserUpdate(InputModel):
    model_config = example(
        {"password": "another-passphrase-2", "current_password": "a-long-passphrase-1"}
    )

    name: Name | None = None
    current_password: (
        Annotated[str, StringConstraints(max_length=200, strip_whitespace=False)] | None
    ) = None
    password: Password | None = None

    @field_validator("password")
    @classmethod
    def _strong_password(cls, password: str | None, info: ValidationInfo) -> str | None:
        if password is not None:
            # Checked before: absent from `data` when it failed its own check (too long), which
            # its own error says.
            if "current_password" in info.data and not info.data["current_password"]:
                raise ValueError("current_password is required to change the password")
            problem = password_problem(password)
            if problem:
                raise ValueError(f"password {problem}")
        return password


# --- members of an organization -------------------------------------------------------------


class MemberUpdate(InputModel):
    model_config = example({"role": "admin"})

    role: Role


class MemberRead(OutputModel):
    user_id: uuid.UUID
    email: str
    name: str
    role: Role
    created_at: datetime


class OwnershipTransfer(InputModel):
    model_config = example({"user_id": "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"})

    user_id: uuid.UUID = Field(description="The member who becomes an owner; you become an admin")


# --- invitations ----------------------------------------------------------------------------

INVITATION_TOKEN_EXAMPLE = "assay_inv_Q2hhcmxlcyBCYWJiYWdlIGludml0ZXMgeW91"


class InvitationCreate(InputModel):
    model_config = example({"email": "grace@example.com", "role": "member"})

    email: EmailStr = Field(max_length=320, description="Who may accept (case does not matter)")
    role: Role = Field(default=Role.member, description="viewer, member, admin or owner")

    _email = field_validator("email")(_normalise_email)


class InvitationRead(OutputModel):
    id: uuid.UUID
    email: str
    role: Role
    created_by: uuid.UUID | None = Field(
        description="The user who sent it, or who made the API key it was sent with"
    )
    created_with_key_id: uuid.UUID | None = Field(
        default=None,
        description="The API key it was sent with, if any: revoking the key revokes it, and it"
        " expires no later than the key",
    )
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None
    accepted_by: uuid.UUID | None
    revoked_at: datetime | None


class InvitationCreated(InvitationRead):
    token: str = Field(
        description="What the invitee accepts with (`invitations_accept`), usually carried by a"
        " dashboard link. Shown once; only its hash is stored.",
        examples=[INVITATION_TOKEN_EXAMPLE],
    )


class InvitationAccept(InputModel):
    model_config = example({"token": INVITATION_TOKEN_EXAMPLE})

    token: OpaqueToken = Field(description="The token of the invitation, from its link")
