"""The database wall: the runtime role, the catalog, and what an unscoped connection sees."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.engine.jobs import HANDLERS
from database.core import asyncpg_connect_args
from database.setup import DatabaseUrls
from tasks.worker import WorkerPool
from tests.helpers import Account, register, remove_account


@pytest.fixture
async def raw_runtime(database_urls: DatabaseUrls) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection as the runtime role: no ORM, no tenant set."""
    conn = await asyncpg.connect(**asyncpg_connect_args(database_urls.runtime))
    yield conn
    await conn.close()


async def _rls_tables(owner_engine: AsyncEngine) -> list[str]:
    async with owner_engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relrowsecurity"
                " ORDER BY 1"
            )
        )
        return [row[0] for row in rows]


async def _fill_every_table(client, account: Account) -> None:
    """A row in every tenant table (a finished run included), so the zero-rows check has rows
    to hide."""

    async def post(path: str, body: dict) -> dict:
        response = await client.post(path, json=body, headers=account.headers)
        assert response.status_code in (200, 201, 202), response.text
        return response.json()

    await post(
        f"/api/v1/organizations/{account.organization_id}/invitations",
        {"email": f"invitee-{account.user_id}@example.com"},
    )
    model = await post("/api/v1/models", {"name": "demo", "provider": "demo"})
    project = await post("/api/v1/projects", {"name": "p", "default_target_model_id": model["id"]})
    test = await post("/api/v1/tests", {"project_id": project["id"], "input": "hello"})
    test_set = await post(
        "/api/v1/test-sets", {"project_id": project["id"], "name": "s", "test_ids": [test["id"]]}
    )
    await post(f"/api/v1/test-sets/{test_set['id']}/versions", {})
    await post(
        "/api/v1/prompts",
        {"project_id": project["id"], "name": "p", "template": "{{ input }}", "labels": ["prod"]},
    )
    metric = await post(
        "/api/v1/metrics", {"project_id": project["id"], "name": "m", "type": "is-json"}
    )
    response = await client.put(
        f"/api/v1/test-sets/{test_set['id']}/metrics",
        json={"metric_ids": [metric["id"]]},
        headers=account.headers,
    )
    assert response.status_code == 200, response.text
    # The run's end queues a delivery to it (the address resolves nowhere: it stays pending).
    await post(
        f"/api/v1/projects/{project['id']}/webhooks",
        {"url": "https://hooks.example.invalid/assay", "events": ["run.completed"]},
    )
    run = await post("/api/v1/runs", {"test_set_id": test_set["id"], "use_cache": True})
    for _ in range(300):
        current = await client.get(f"/api/v1/runs/{run['id']}", headers=account.headers)
        if current.json()["status"] == "completed":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the run did not complete: {current.json()}")


@pytest.fixture
async def committed_accounts(
    committed_database, app, owner_engine, database_urls
) -> AsyncIterator[list[Account]]:
    """Two organizations' worth of data committed for real, removed afterwards."""
    import httpx

    pool = WorkerPool(
        committed_database,
        HANDLERS,
        concurrency=2,
        listen_url=database_urls.runtime,
        poll_seconds=0.2,
    )
    transport = httpx.ASGITransport(app=app)
    await pool.start()
    async with httpx.AsyncClient(transport=transport, base_url="http://assay.test") as client:
        accounts = [await register(client), await register(client)]
        for account in accounts:
            key = await client.post(
                f"/api/v1/organizations/{account.organization_id}/api-keys",
                json={"name": "k", "role": "viewer"},
                headers=account.headers,
            )
            assert key.status_code == 201
            await _fill_every_table(client, account)
    await pool.stop(drain_seconds=1)
    yield accounts
    for account in accounts:
        await remove_account(owner_engine, account)


async def test_runtime_role_has_no_way_around_rls(raw_runtime, owner_engine):
    role = await raw_runtime.fetchrow(
        "SELECT rolname, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb"
        " FROM pg_roles WHERE rolname = current_user"
    )
    assert role["rolsuper"] is False
    assert role["rolbypassrls"] is False
    assert role["rolcreaterole"] is False
    # Neither it nor any role it can act as owns a table.
    owned = await raw_runtime.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        " AND pg_has_role(current_user, tableowner, 'USAGE')"
    )
    assert owned == []
    # No role it belongs to is privileged either.
    privileged = await raw_runtime.fetch(
        "SELECT rolname FROM pg_roles WHERE pg_has_role(current_user, oid, 'USAGE')"
        " AND (rolsuper OR rolbypassrls)"
    )
    assert privileged == []


async def test_every_table_with_organization_id_is_forced_under_rls(owner_engine):
    """Walks the catalog, so a table added by any later migration is checked too."""
    async with owner_engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    """
                    SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                           (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies,
                           (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid
                              AND pg_get_expr(p.polqual, p.polrelid)
                                  LIKE '%assay_current_organization()%') AS tenant_policies
                    FROM pg_class c
                    JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
                      AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                                  AND a.attname = 'organization_id' AND NOT a.attisdropped)
                    """
                )
            )
        ).all()
    assert rows, "expected tenant tables"
    unprotected = [
        row.relname
        for row in rows
        if not (row.relrowsecurity and row.relforcerowsecurity and row.tenant_policies)
    ]
    assert unprotected == []


async def test_unscoped_runtime_connection_sees_zero_rows_everywhere(
    committed_accounts, raw_runtime, owner_engine
):
    tables = await _rls_tables(owner_engine)
    assert {"users", "organizations", "memberships", "api_keys", "refresh_tokens"} <= set(tables)
    async with owner_engine.connect() as conn:
        for table in tables:
            total = (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            assert total > 0, f"{table} should hold committed rows for this check to mean much"
    for table in tables:
        assert await raw_runtime.fetchval(f"SELECT count(*) FROM {table}") == 0, table


async def test_a_tenant_sees_only_its_own_rows(committed_accounts, raw_runtime, owner_engine):
    first, second = committed_accounts
    async with raw_runtime.transaction():
        await raw_runtime.execute(
            "SELECT set_config('app.organization_id', $1, true)", str(first.organization_id)
        )
        keys = await raw_runtime.fetch("SELECT organization_id FROM api_keys")
        memberships = await raw_runtime.fetch("SELECT organization_id FROM memberships")
        assert {row[0] for row in keys} == {first.organization_id}
        assert {row[0] for row in memberships} == {first.organization_id}
        # Writing into another tenant is refused by the policy's WITH CHECK.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await raw_runtime.execute(
                "UPDATE api_keys SET organization_id = $1", second.organization_id
            )


async def test_runtime_role_cannot_rewrite_migration_history(raw_runtime):
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await raw_runtime.execute("DELETE FROM alembic_version")


async def test_credential_lookup_functions_reveal_only_the_asked_row(
    committed_accounts, raw_runtime
):
    first, _ = committed_accounts
    rows = await raw_runtime.fetch("SELECT * FROM assay_auth_user_by_email($1)", first.email)
    assert [row["id"] for row in rows] == [first.user_id]
    assert await raw_runtime.fetch("SELECT * FROM assay_auth_api_key($1)", "no-such-hash") == []
    assert await raw_runtime.fetch("SELECT * FROM assay_auth_invitation($1)", "no-such") == []


@pytest.mark.parametrize(
    "table", ["test_set_versions", "test_set_version_cases", "prompt_versions"]
)
async def test_published_versions_cannot_be_edited_by_the_runtime(raw_runtime, table):
    column = {"test_set_versions": "note", "test_set_version_cases": "position"}.get(
        table, "template"
    )
    value = "1" if column == "position" else "'rewritten'"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await raw_runtime.execute(f"UPDATE {table} SET {column} = {value}")
