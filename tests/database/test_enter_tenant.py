"""enter_tenant sends the tenant's settings on the driver's connection, beginning the
transaction there when no statement has: the session's own commit and rollback must end that
very transaction, and a failure to begin it is a database error like any other."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from database.core import Database, Tenant, acting_apart, enter_tenant, make_engine
from database.driver import driver_connection

_XID = "SELECT pg_current_xact_id()::text"
_STATUS = text("SELECT pg_xact_status(CAST(CAST(:xid AS text) AS xid8))")


async def _status(owner_engine: AsyncEngine, xid: str) -> str:
    async with owner_engine.connect() as connection:
        return str(await connection.scalar(_STATUS, {"xid": xid}))


@pytest.mark.parametrize(("end", "status"), [("commit", "committed"), ("rollback", "aborted")])
async def test_the_session_ends_the_transaction_entering_the_tenant_began(
    committed_database: Database, owner_engine: AsyncEngine, end: str, status: str
):
    organization, user = uuid.uuid4(), uuid.uuid4()
    async with committed_database.sessionmaker() as session:
        await enter_tenant(session, Tenant(organization, user))
        driver = await driver_connection(session)
        xid = await driver.fetchval(_XID)
        settings = await session.execute(
            text(
                "SELECT current_setting('app.organization_id'), current_setting('app.user_id'),"
                " pg_current_xact_id()::text"
            )
        )
        assert settings.one() == (str(organization), str(user), xid)
        assert await _status(owner_engine, xid) == "in progress"
        await getattr(session, end)()
        assert await _status(owner_engine, xid) == status
        # The next transaction of the session is begun afresh, with no tenant yet.
        await enter_tenant(session, Tenant(None))
        assert await (await driver_connection(session)).fetchval(_XID) != xid


async def test_a_transaction_that_cannot_begin_is_a_database_error(
    database_urls, owner_engine: AsyncEngine
):
    engine = make_engine(database_urls.runtime, pool_size=1, max_overflow=0)
    try:
        async with AsyncSession(engine) as session:
            before = await driver_connection(session, in_transaction=False)
            pid = await before.fetchval("SELECT pg_backend_pid()")
            async with owner_engine.connect() as connection:
                ended = await connection.scalar(
                    text("SELECT pg_terminate_backend(:pid, 10000)"), {"pid": pid}
                )
            assert ended
            with pytest.raises(DBAPIError):
                await enter_tenant(session, Tenant(uuid.uuid4()))
    finally:
        await engine.dispose()


async def _record_apart(session: AsyncSession) -> None:
    """The short transaction before the session's (an API key's use)."""
    async with acting_apart(session, Tenant(uuid.uuid4())) as driver:
        await driver.fetchval("SELECT 1")


async def _enter(session: AsyncSession) -> None:
    await enter_tenant(session, Tenant(uuid.uuid4()))


@pytest.mark.parametrize("begin", [_enter, _record_apart], ids=["entering", "apart"])
async def test_a_begin_cancelled_midway_never_leaves_its_transaction_in_the_pool(
    database_urls, owner_engine: AsyncEngine, begin
):
    """Cancelled while its BEGIN is on the wire (a worker losing its lease, a client gone), the
    connection holds a transaction its dialect does not know of: it is closed, not pooled, so
    the next transaction on the one-connection pool is a fresh one that really commits."""
    engine = make_engine(database_urls.runtime, pool_size=1, max_overflow=0)
    try:
        async with AsyncSession(engine) as session:
            held = await driver_connection(session, in_transaction=False)
            cancelled_pid = await held.fetchval("SELECT pg_backend_pid()")
            beginning = asyncio.create_task(begin(session))
            await asyncio.sleep(0)  # the BEGIN is sent; its answer not yet read
            beginning.cancel()
            with pytest.raises(asyncio.CancelledError):
                await beginning
        async with AsyncSession(engine) as session:
            await enter_tenant(session, Tenant(uuid.uuid4()))
            driver = await driver_connection(session)
            assert await driver.fetchval("SELECT pg_backend_pid()") != cancelled_pid
            xid = await driver.fetchval(_XID)
            await session.commit()
        assert await _status(owner_engine, xid) == "committed"
    finally:
        await engine.dispose()


async def test_a_session_without_transactions_is_refused_a_tenant(database_urls):
    engine = make_engine(database_urls.runtime, pool_size=1, max_overflow=0)
    try:
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        async with AsyncSession(autocommit) as session:
            with pytest.raises(RuntimeError, match="transaction"):
                await enter_tenant(session, Tenant(uuid.uuid4()))
    finally:
        await engine.dispose()
