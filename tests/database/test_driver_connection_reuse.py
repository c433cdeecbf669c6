"""driver_connection finds the session's connection once per transaction: later calls in that
transaction reuse it, and a later transaction (another pooled connection, maybe) finds its own."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from database.core import Database, Tenant, enter_tenant
from database.driver import driver_connection

_PID = "SELECT pg_backend_pid()"
_ORG = "SELECT current_setting('app.organization_id', true)"


async def test_each_transaction_reads_on_its_own_connection(committed_database: Database):
    first, second = uuid.uuid4(), uuid.uuid4()
    async with committed_database.sessionmaker() as session:
        await enter_tenant(session, Tenant(first))
        for _ in range(2):
            driver = await driver_connection(session)
            assert await driver.fetchval(_PID) == await session.scalar(text(_PID))
            assert await driver.fetchval(_ORG) == str(first)
        await session.commit()
        # Another session takes a pooled connection (perhaps the one just returned).
        async with committed_database.transaction(Tenant(None)) as other:
            other_pid = await other.scalar(text(_PID))
            await enter_tenant(session, Tenant(second))
            driver = await driver_connection(session)
            pid = await session.scalar(text(_PID))
            assert pid != other_pid
            assert await driver.fetchval(_PID) == pid
            assert await driver.fetchval(_ORG) == str(second)
        await session.rollback()
        with pytest.raises(RuntimeError):
            await driver_connection(session)
