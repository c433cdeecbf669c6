"""The request's connection as the driver's own (asyncpg), beside the session: the hottest
reads and the tenant's settings go there, skipping SQLAlchemy's execution (a greenlet switch,
result processing, ORM loading), on the same connection and in the same transaction.

The session's transaction is the dialect's: SQLAlchemy's asyncpg dialect begins the driver's
transaction before the session's first statement and ends it at the session's commit or
rollback. `begun_driver_connection` begins it the same way, through the dialect's own
`_start_transaction` (SQLAlchemy 2.1, pinned for this), so that the session still ends it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

_HELD = "assay_driver"  # session.info key: (its transaction, the dialect's connection)


async def driver_connection(
    session: AsyncSession, *, in_transaction: bool = True
) -> DriverConnection:
    """The session's connection for a read: plain rows come back; nothing enters the session.

    A read of tenant rows must run in the session's transaction, which begins with the first
    statement through the session or with `database.core.enter_tenant`: outside it,
    `app.organization_id` is unset and the read sees no tenant row, so that is refused as the
    mistake it is. `in_transaction=False` is for a SECURITY DEFINER lookup sent before the
    transaction, such as a credential's.
    """
    driver: asyncpg.Connection = (await _adapted_connection(session)).driver_connection
    if in_transaction and not driver.is_in_transaction():
        raise RuntimeError("a read of tenant rows outside the session's transaction")
    return DriverConnection(driver)


async def begun_driver_connection(session: AsyncSession) -> DriverConnection:
    """The session's connection with its transaction begun, as the dialect begins it."""
    adapted = await _adapted_connection(session)
    if adapted._transaction is None:
        await _begin(adapted)
    driver: asyncpg.Connection = adapted.driver_connection
    if not driver.is_in_transaction():
        raise RuntimeError("this session runs without transactions (autocommit)")
    return DriverConnection(driver)


@asynccontextmanager
async def separate_transaction(session: AsyncSession) -> AsyncIterator[DriverConnection]:
    """A transaction of its own on the session's connection, committed when the block ends
    (rolled back if it fails), for a write that must not wait for the session's: sent before
    the session's transaction begins. Where the connection is already in one (a test's outer
    transaction), it is a savepoint."""
    driver: asyncpg.Connection = (await _adapted_connection(session)).driver_connection
    # A BEGIN, COMMIT or ROLLBACK that fails or is cancelled midway (a client gone) may leave
    # the connection in a transaction no one knows of: it is closed, so that the pool never
    # hands it out so (see _begin). Not a savepoint's: that connection is a test's own.
    outermost = not driver.is_in_transaction()
    transaction = driver.transaction()
    await _transaction_step(transaction.start(), driver, outermost)
    try:
        yield DriverConnection(driver)
    except BaseException as failure:
        try:
            await _transaction_step(transaction.rollback(), driver, outermost)
        except Exception:
            if isinstance(failure, Exception):
                raise
        raise  # a cancellation stays one, whatever its rollback met
    await _transaction_step(transaction.commit(), driver, outermost)


async def _transaction_step(
    step: Awaitable[None], driver: asyncpg.Connection, outermost: bool
) -> None:
    try:
        await step
    except BaseException as exc:
        if outermost:
            driver.terminate()
        if isinstance(exc, _DRIVER_ERRORS):
            raise DBAPIError(
                "a separate transaction", None, exc, connection_invalidated=outermost
            ) from exc
        raise


async def _begin(adapted: Any) -> None:
    try:
        await adapted._start_transaction()
    except BaseException as exc:
        # A BEGIN that failed or was cancelled (a worker losing its lease) stays the driver's
        # transaction, unknown to the dialect: the connection is closed, so that the pool never
        # hands it out in that state (it drops a closed one at checkout).
        adapted.driver_connection.terminate()
        if isinstance(exc, adapted.dbapi.Error):
            raise DBAPIError.instance(
                "BEGIN", None, exc, adapted.dbapi.Error, connection_invalidated=True
            ) from exc
        raise


async def _adapted_connection(session: AsyncSession) -> Any:
    """The session's connection as SQLAlchemy's asyncpg dialect wraps it (`_transaction`: the
    driver's transaction it began, which the session's commit and rollback end)."""
    # The session keeps one connection for a transaction: found once per transaction (two
    # greenlet switches), then taken from the session's info while that transaction lasts.
    transaction = session.sync_session.get_transaction()
    held = session.info.get(_HELD)
    if transaction is not None and held is not None and held[0] is transaction:
        return held[1]
    connection = await session.connection()
    adapted = (await connection.get_raw_connection()).dbapi_connection
    session.info[_HELD] = (session.sync_session.get_transaction(), adapted)
    return adapted


class DriverConnection:
    """Reads on the driver's connection; its errors come out as SQLAlchemy's `DBAPIError`, as
    they would through the session (the API answers a value PostgreSQL refuses with 422)."""

    __slots__ = ("_driver",)

    def __init__(self, driver: asyncpg.Connection) -> None:
        self._driver = driver

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            return await self._driver.fetch(sql, *args)
        except _DRIVER_ERRORS as exc:
            raise DBAPIError(sql, args, exc) from exc

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        try:
            return await self._driver.fetchrow(sql, *args)
        except _DRIVER_ERRORS as exc:
            raise DBAPIError(sql, args, exc) from exc

    async def fetchval(self, sql: str, *args: Any) -> Any:
        try:
            return await self._driver.fetchval(sql, *args)
        except _DRIVER_ERRORS as exc:
            raise DBAPIError(sql, args, exc) from exc


_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError)
