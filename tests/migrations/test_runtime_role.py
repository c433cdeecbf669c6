"""The runtime role is checked at start: a role that a SECURITY DEFINER function runs as has
policies that see across organizations, so a runtime that is a member of one (a migration
owner used as the runtime, typically) is refused, with the reason."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from database.migrate import runtime_role_rights
from database.setup import UnsafeDatabaseRole, refuse_unsafe

DEFINERS = ["assay_auth", "assay_maintenance", "assay_metrics", "assay_pacer", "assay_worker"]


async def test_the_runtime_role_is_a_member_of_no_definer_role(runtime_engine: AsyncEngine):
    async with runtime_engine.connect() as connection:
        rights = await runtime_role_rights(connection)
    assert rights.definer_roles == ()
    refuse_unsafe(rights)  # the test suite's own runtime passes


async def test_a_member_of_a_definer_role_is_refused(owner_engine: AsyncEngine):
    role = f"assay_member_{uuid.uuid4().hex[:8]}"
    async with owner_engine.connect() as connection:
        transaction = await connection.begin()
        try:
            await connection.execute(text(f"CREATE ROLE {role} NOSUPERUSER NOBYPASSRLS"))
            for definer in DEFINERS:
                await connection.execute(text(f"GRANT {definer} TO {role}"))
            await connection.execute(text(f"SET LOCAL ROLE {role}"))
            rights = await runtime_role_rights(connection)
        finally:
            await transaction.rollback()
    assert list(rights.definer_roles) == DEFINERS
    with pytest.raises(UnsafeDatabaseRole, match="assay_metrics") as refused:
        refuse_unsafe(rights)
    assert "ASSAY_MIGRATION_DATABASE_URL" in str(refused.value)
