"""The request's session (database.deps): a committed one is left unclosed, so the commit
itself must have given its connection back; every other way out closes it."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from database.core import Database
from database.deps import _db_session
from utils.errors import Conflict


def _checked_out(database: Database) -> int:
    return database.engine.sync_engine.pool.checkedout()  # type: ignore[attr-defined]


def _count_closes(session: AsyncSession) -> list[None]:
    closes: list[None] = []
    close = session.close

    async def counted() -> None:
        closes.append(None)
        await close()

    session.close = counted  # type: ignore[method-assign]
    return closes


async def test_a_committed_request_gives_its_connection_back(committed_database: Database):
    before = _checked_out(committed_database)
    requests = _db_session()
    session = await anext(requests)
    closes = _count_closes(session)
    assert await session.scalar(text("SELECT txid_current() > 0"))
    assert _checked_out(committed_database) == before + 1
    with pytest.raises(StopAsyncIteration):
        await anext(requests)
    assert _checked_out(committed_database) == before
    assert not session.in_transaction()
    assert closes == []  # the commit gave the connection back; nothing is left to close


@pytest.mark.parametrize(
    "error", [Conflict("taken"), ValueError("broken"), asyncio.CancelledError()]
)
async def test_a_failed_request_gives_its_connection_back(
    committed_database: Database, error: BaseException
):
    before = _checked_out(committed_database)
    requests = _db_session()
    session = await anext(requests)
    closes = _count_closes(session)
    await session.execute(text("SELECT txid_current()"))
    with pytest.raises(type(error)):
        await requests.athrow(error)
    assert _checked_out(committed_database) == before
    assert not session.in_transaction()
    assert closes == [None]
