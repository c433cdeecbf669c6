"""The connection pool: a connection the server ended is replaced on use, with no round trip
on checkout; and the connections a burst of transactions opened stay for the next one."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import event, text

from database.core import Database, Tenant, make_engine
from utils.config import DEFAULT_DB_MAX_OVERFLOW, DEFAULT_DB_POOL_SIZE

_BACKEND = text("SELECT pg_backend_pid()")


async def _backends_in_use(database: Database, count: int) -> set[int]:
    """Checks `count` connections out at once (so the pool holds that many), their backends."""
    pids: set[int] = set()
    gate = asyncio.Barrier(count)

    async def hold() -> None:
        async with database.transaction() as session:
            pids.add(await session.scalar(_BACKEND))
            await gate.wait()

    await asyncio.gather(*(hold() for _ in range(count)))
    return pids


async def test_pooled_connections_the_server_ended_are_replaced_on_use(database_urls, owner_engine):
    """No round trip checks a connection on checkout: one the server closed while it sat in
    the pool (terminated here, as a restart or an idle timeout would) is dropped and replaced,
    and no transaction fails for it."""
    database = Database(make_engine(database_urls.runtime, pool_size=2, max_overflow=0))
    statements: list[str] = []
    event.listen(
        database.engine.sync_engine,
        "before_cursor_execute",
        lambda _conn, _cursor, statement, *_: statements.append(statement),
    )
    try:
        idle = await _backends_in_use(database, 2)
        async with owner_engine.begin() as connection:
            ended = await connection.scalar(
                text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000))"
                    " FROM unnest(CAST(:pids AS int[])) AS pid"
                ),
                {"pids": sorted(idle)},
            )
        assert ended == 2
        statements.clear()
        fresh = await _backends_in_use(database, 2)
        assert len(fresh) == 2
        assert not fresh & idle
        assert statements == [_BACKEND.text, _BACKEND.text]
        async with database.transaction(Tenant(uuid.uuid4())) as session:
            assert await session.scalar(_BACKEND) in fresh
    finally:
        await database.engine.dispose()


async def test_the_default_pool_keeps_every_connection_a_burst_opened(database_urls):
    """A burst of as many transactions as the default pool holds at most leaves each
    connection it opened in the pool: the next burst runs on the same PostgreSQL backends,
    none new. (An overflow connection would be closed as it came back to a full pool.)"""
    burst = DEFAULT_DB_POOL_SIZE + DEFAULT_DB_MAX_OVERFLOW
    database = Database.connect(database_urls.runtime)
    try:
        first = await _backends_in_use(database, burst)
        assert database.engine.sync_engine.pool.checkedin() == burst  # type: ignore[attr-defined]
        again = await _backends_in_use(database, burst)
        assert len(first) == burst
        assert again == first
    finally:
        await database.dispose()
