"""The runtime role is checked at start: a role that a SECURITY DEFINER function runs as has
policies that see across organizations, so a runtime that is a member of one (a migration
owner used as the runtime, typically) is refused, with the reason; so is one that may act as
a superuser, or as the tables' owner (who may turn their row-level security off)."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from database.migrate import RoleRights, runtime_role_rights
from database.setup import UnsafeDatabaseRole, refuse_unsafe

DEFINERS = ["assay_auth", "assay_maintenance", "assay_metrics", "assay_pacer", "assay_worker"]


async def test_the_runtime_role_is_a_member_of_no_definer_role(runtime_engine: AsyncEngine):
    async with runtime_engine.connect() as connection:
        rights = await runtime_role_rights(connection)
    assert rights.definer_roles == ()
    refuse_unsafe(rights)  # the test suite's own runtime passes


async def test_a_member_of_a_definer_role_is_refused(owner_engine: AsyncEngine):
    grants = [f"GRANT {definer} TO {{role}}" for definer in DEFINERS]
    rights = await _rights_of_a_member_of(owner_engine, grants)
    assert list(rights.definer_roles) == DEFINERS
    with pytest.raises(UnsafeDatabaseRole, match="assay_metrics") as refused:
        refuse_unsafe(rights)
    assert "ASSAY_MIGRATION_DATABASE_URL" in str(refused.value)


async def _rights_of_a_member_of(owner_engine: AsyncEngine, setup: list[str]) -> RoleRights:
    """The rights of a plain new role once `setup` (statements naming it `{role}`) has run."""
    role = f"assay_member_{uuid.uuid4().hex[:8]}"
    async with owner_engine.connect() as connection:
        transaction = await connection.begin()
        try:
            await connection.execute(text(f"CREATE ROLE {role} NOSUPERUSER NOBYPASSRLS"))
            for statement in setup:
                await connection.execute(text(statement.format(role=role)))
            await connection.execute(text(f"SET LOCAL ROLE {role}"))
            return await runtime_role_rights(connection)
        finally:
            await transaction.rollback()


async def test_a_member_of_a_superuser_role_is_refused(owner_engine: AsyncEngine):
    """It is not a superuser itself, but may SET ROLE to one."""
    async with owner_engine.connect() as connection:
        superuser = await connection.scalar(
            text("SELECT rolname FROM pg_roles WHERE rolsuper ORDER BY rolname LIMIT 1")
        )
    rights = await _rights_of_a_member_of(owner_engine, [f"GRANT {superuser} TO {{role}}"])
    assert not rights.superuser and superuser in rights.unsafe_roles
    with pytest.raises(UnsafeDatabaseRole, match="superuser or BYPASSRLS role it may act as"):
        refuse_unsafe(rights)


async def test_a_role_that_may_act_as_a_tables_owner_is_refused(owner_engine: AsyncEngine):
    table_owner = f"assay_owner_{uuid.uuid4().hex[:8]}"
    rights = await _rights_of_a_member_of(
        owner_engine,
        [
            f"CREATE ROLE {table_owner} NOSUPERUSER NOBYPASSRLS",
            f"CREATE TABLE public.{table_owner}_table (id int)",
            f"ALTER TABLE public.{table_owner}_table OWNER TO {table_owner}",
            f"GRANT {table_owner} TO {{role}}",
        ],
    )
    assert rights.owned_tables == 1 and rights.unsafe_roles == ()
    with pytest.raises(UnsafeDatabaseRole, match="owns \\(or may act as the owner of\\) 1 of"):
        refuse_unsafe(rights)
