"""Organization rules beyond CRUD: creating one you own, who may grant which role, keeping an
owner, and API keys (made, revoked, and checked when a request presents one). Renaming or
deleting the organization and making or revoking a key are recorded in the audit log."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from database.core import Tenant, acting_as, enter_tenant
from database.organizations import crud
from database.organizations.audit import RequestMeta, record
from database.organizations.crud import key_revocation
from database.organizations.models import ApiKey, Membership, Organization
from database.organizations.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    MyOrganizationRead,
    OrganizationRead,
    OrganizationUpdate,
)
from utils.auth import Principal, Role, hash_secret, new_api_key
from utils.crud import refuse_nulls
from utils.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthorized
from utils.ids import new_id
from utils.runtime import Runtime

API_KEY_DISPLAY_LENGTH = 12


async def create_organization(
    session: AsyncSession, runtime: Runtime, principal: Principal, name: str
) -> MyOrganizationRead:
    user_id = principal.require_user()
    allowance = f"{runtime.settings.organizations_per_hour}/hour"
    await runtime.rate_limiter.hit("organizations", str(user_id), allowance)
    organization_id = new_id()
    async with acting_as(session, Tenant(organization_id, user_id)):
        organization = await crud.create_organization(
            session, Organization(id=organization_id, name=name)
        )
        await crud.add_membership(
            session, organization_id=organization_id, user_id=user_id, role=Role.owner
        )
    return MyOrganizationRead(**_org_fields(organization), role=Role.owner)


async def list_organizations(
    session: AsyncSession, principal: Principal, *, limit: int, offset: int
) -> tuple[list[MyOrganizationRead], int]:
    if principal.user_id is None:
        page = [await read_current_organization(session, principal)]
        return page[offset : offset + limit], 1
    rows, total = await crud.list_user_organizations(
        session, principal.user_id, limit=limit, offset=offset
    )
    return [MyOrganizationRead(**_org_fields(org), role=Role(role)) for org, role in rows], total


async def get_current_organization(
    session: AsyncSession, principal: Principal, *, for_update: bool = False
) -> Organization:
    organization = await crud.get_organization(
        session, principal.organization_id, for_update=for_update
    )
    if organization is None:
        raise NotFound("Organization not found")
    return organization


async def read_current_organization(
    session: AsyncSession, principal: Principal
) -> MyOrganizationRead:
    organization = await get_current_organization(session, principal)
    return MyOrganizationRead(**_org_fields(organization), role=principal.role)


async def update_organization(
    session: AsyncSession, principal: Principal, body: OrganizationUpdate, meta: RequestMeta
) -> MyOrganizationRead:
    refuse_nulls(body.model_dump(exclude_unset=True), "name")
    principal = (await hold_caller(session, principal, Role.admin)).principal
    # Held, so that of two renames at once the second records the first's name as "from".
    organization = await get_current_organization(session, principal, for_update=True)
    if body.name is not None and body.name != organization.name:
        renamed = {"from": organization.name, "to": body.name}
        organization.name = body.name
        await crud.save_organization(session)
        await record(
            session,
            principal,
            action="organization.renamed",
            target_type="organization",
            target_id=organization.id,
            details=renamed,
            request_meta=meta,
        )
    return MyOrganizationRead(**_org_fields(organization), role=principal.role)


async def delete_organization(
    session: AsyncSession, principal: Principal, meta: RequestMeta
) -> None:
    """The organization's audit entries outlive it, this deletion's included. Every membership
    is held first, so that an owner removed or demoted meanwhile deletes nothing."""
    await crud.lock_memberships(session, principal.organization_id)
    organization = await get_current_organization(session, principal, for_update=True)
    await hold_caller(session, principal, Role.owner)
    await crud.delete_organization(session, organization)
    await record(
        session,
        principal,
        action="organization.deleted",
        target_type="organization",
        target_id=organization.id,
        details={"name": organization.name},
        request_meta=meta,
    )


def _org_fields(organization: Organization) -> dict[str, object]:
    return OrganizationRead.model_validate(organization).model_dump()


# --- roles ----------------------------------------------------------------------------------


def check_may_grant(principal: Principal, role: Role) -> None:
    """Admins manage members up to admin; only owners touch the owner role."""
    if role is Role.owner and principal.role is not Role.owner:
        raise Forbidden("Only an owner can grant, change or remove the owner role")


async def locked_member(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID
) -> tuple[Membership, int, Principal]:
    """A member whose role is to change (or who is to go), as they now stand, locked with the
    owners and with the member acting (the user, or the maker of the API key); how many owners
    there are; and the caller with the role they now hold. The role read when the request was
    authenticated may have been taken away since: a removal or demotion committed first is a
    401 or the role now held, one committed after waits for this change."""
    actor = await _acting_user(session, principal)
    # (A key made before keys recorded their maker answers to no one: only the key is checked.)
    locked = await crud.lock_member_and_owners(
        session, principal.organization_id, user_id, actor or user_id
    )
    if actor is not None and locked.actor_role is None:
        raise Unauthorized("You are no longer a member of this organization")
    if principal.api_key_id is not None:
        if not await crud.api_key_is_live(session, principal.api_key_id):
            raise Unauthorized("This API key was revoked")
    elif locked.actor_role is not None:
        principal = replace(principal, role=Role(locked.actor_role))
    if locked.member is None:
        raise NotFound("Member not found")
    return locked.member, locked.owners, principal


def keep_an_owner(owners: int) -> None:
    """Refuses to take the owner role from the last owner."""
    if owners <= 1:
        raise Conflict("An organization needs at least one owner; hand ownership over first")


# --- the caller, held -----------------------------------------------------------------------


@dataclass(frozen=True)
class HeldCaller:
    principal: Principal  # with the role now held (an API key acts with its own)
    user_id: uuid.UUID | None  # whom the request answers to (see _acting_user)


async def hold_caller(session: AsyncSession, principal: Principal, needs: Role) -> HeldCaller:
    """The caller as they now stand, refused unless they still hold `needs`: their membership
    (for an API key, its maker's) is held until the transaction ends.

    The role read when the request was authenticated may have been taken away since: a removal
    or demotion committed first is a 401 or a 403 here, one under way is waited for, and one
    sent meanwhile waits for this request to commit (then revokes what it made with the rest,
    which it would not see uncommitted)."""
    user_id = await _acting_user(session, principal)
    if user_id is None:
        return HeldCaller(principal, None)
    held = await crud.hold_membership(session, principal.organization_id, user_id)
    if held is None:
        raise Unauthorized("You are no longer a member of this organization")
    role = Role(held)
    if not role.at_least(needs):
        whose = "your key's maker's" if principal.api_key_id is not None else "yours"
        raise Forbidden(f"This needs the {needs} role, and {whose} is now {role}")
    if principal.api_key_id is None:
        principal = replace(principal, role=role)
    return HeldCaller(principal, user_id)


async def _acting_user(session: AsyncSession, principal: Principal) -> uuid.UUID | None:
    """The member a request acts for: its user, or the user who made its API key (None for a
    key made before keys recorded their maker)."""
    if principal.user_id is not None or principal.api_key_id is None:
        return principal.user_id
    key = await crud.get_api_key(session, principal.organization_id, principal.api_key_id)
    return key.created_by if key is not None else None


# --- API keys -------------------------------------------------------------------------------


async def answerable_user(
    session: AsyncSession, principal: Principal, grants: Role
) -> uuid.UUID | None:
    """Whom what the caller makes (a key, an invitation granting `grants`) answers to, so that
    their removal or demotion ends what was made too. Making one needs the admin role, and
    granting a role needs that role: both held (hold_caller)."""
    needs = grants if grants.at_least(Role.admin) else Role.admin
    return (await hold_caller(session, principal, needs)).user_id


async def create_api_key(
    session: AsyncSession, principal: Principal, request: ApiKeyCreate, meta: RequestMeta
) -> ApiKeyCreated:
    secret = new_api_key()
    created_by = await answerable_user(session, principal, Role(request.role))
    api_key = await crud.create_api_key(
        session,
        ApiKey(
            organization_id=principal.organization_id,
            name=request.name,
            role=request.role,
            display_prefix=secret[:API_KEY_DISPLAY_LENGTH],
            key_hash=hash_secret(secret),
            created_by=created_by,
            created_with_key_id=principal.api_key_id,
            expires_at=await _expiry_within_maker(session, principal, request.expires_at),
        ),
    )
    await record(
        session,
        principal,
        action="api_key.created",
        target_type="api_key",
        target_id=api_key.id,
        details={"name": api_key.name, "role": api_key.role, "expires_at": api_key.expires_at},
        request_meta=meta,
    )
    return ApiKeyCreated(**ApiKeyRead.model_validate(api_key).model_dump(), key=secret)


async def making_key_expiry(session: AsyncSession, principal: Principal) -> datetime | None:
    """The expiry of the key a request is made with (None without one, or for a key that never
    expires), the key held until the transaction ends: revoking it meanwhile waits, then
    revokes what the request made with it too."""
    if principal.api_key_id is None:
        return None
    maker = await key_revocation.hold_live_api_key(session, principal.api_key_id)
    if maker is None:  # revoked (or expired) since the request was authenticated
        raise Unauthorized("This API key was revoked")
    return maker.expires_at


async def _expiry_within_maker(
    session: AsyncSession, principal: Principal, asked: datetime | None
) -> datetime | None:
    """A key made with a key expires no later than that key: at its expiry when none is asked
    for, and one asked for past it is refused."""
    limit = await making_key_expiry(session, principal)
    if limit is None:
        return asked
    if asked is None:
        return limit
    if asked > limit:
        raise InvalidInput(
            f"past the expiry of the key making it ({limit.isoformat()})", field="expires_at"
        )
    return asked


async def get_api_key_or_404(
    session: AsyncSession, principal: Principal, key_id: uuid.UUID
) -> ApiKey:
    api_key = await crud.get_api_key(session, principal.organization_id, key_id)
    if api_key is None:
        raise NotFound("API key not found")
    return api_key


async def revoke_api_key(
    session: AsyncSession, principal: Principal, key_id: uuid.UUID, meta: RequestMeta
) -> None:
    """Revoking a revoked key again is no error, and no new audit entry unless keys made with
    it were still live (and are revoked now)."""
    principal = (await hold_caller(session, principal, Role.admin)).principal
    api_key = await get_api_key_or_404(session, principal, key_id)
    revocation = await key_revocation.revoke_api_key(session, api_key.id)
    made = revocation.made_with_it
    if not revocation.was_live and not made.keys and not made.invitations:
        return
    details: dict[str, object] = {
        "name": api_key.name,
        "role": api_key.role,
        "keys_made_with_it": made.keys,
    }
    if made.invitations:
        details["invitations_sent_with_them"] = made.invitations
    if not revocation.was_live:  # only what was made with it, left live, went now
        details["revoked_before"] = True
    await record(
        session,
        principal,
        action="api_key.revoked",
        target_type="api_key",
        target_id=api_key.id,
        details=details,
        request_meta=meta,
    )


class _KeyUses:
    """When each API key's next use is due to be recorded, as far as this process knows.

    Its `last_used_at` moves at most once per resolution (the UPDATE's own condition, which
    holds across processes); remembering when that is spares every other read the statement.
    """

    MAX_KEYS = 10_000

    def __init__(self) -> None:
        self._due: dict[uuid.UUID, float] = {}

    def due(self, key_id: uuid.UUID) -> bool:
        return time.monotonic() >= self._due.get(key_id, 0.0)

    def next_due(self, key_id: uuid.UUID, seconds: float) -> None:
        now = time.monotonic()
        if len(self._due) >= self.MAX_KEYS:
            self._due = {key: at for key, at in self._due.items() if at > now}
            if len(self._due) >= self.MAX_KEYS:
                self._due.clear()  # forgetting costs one statement per key, nothing more
        self._due[key_id] = now + seconds

    def forget(self) -> None:
        self._due.clear()


_key_uses = _KeyUses()


async def authenticate_api_key(session: AsyncSession, key: str) -> Principal:
    """The organization and role an API key acts as; the transaction then acts for it."""
    found = await crud.find_api_key(session, hash_secret(key))
    if found is None or found.revoked_at is not None:
        raise Unauthorized("The API key is not valid")
    if found.expires_at is not None and found.expires_at <= datetime.now(UTC):
        raise Unauthorized("The API key has expired")
    if _key_uses.due(found.id):
        remaining = await crud.touch_api_key(session, found.organization_id, found.id)
        if remaining is not None:
            _key_uses.next_due(found.id, remaining)
    await enter_tenant(session, Tenant(found.organization_id))
    return Principal(
        organization_id=found.organization_id, role=Role(found.role), api_key_id=found.id
    )
