"""Database core: engine and session factory, declarative Base, and the tenant.

Row-level security decides what a transaction sees from `app.organization_id` (and
`app.user_id`), set per transaction. This module is the only code that sets them: open a
transaction for a tenant with `Database.transaction(tenant)`; the code that establishes who a
request is (authentication, and the flows that create or choose an organization) scopes the
request's transaction with `enter_tenant` or, for a moment, `acting_as`. A test holds every
other module to that.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, TypeVar

from sqlalchemy import DateTime, ForeignKeyConstraint, Index, MetaData, event, func, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, SessionTransaction, mapped_column

from database.driver import DriverConnection, begun_driver_connection, separate_transaction
from utils import fastjson
from utils.config import DEFAULT_DB_MAX_OVERFLOW, DEFAULT_DB_POOL_SIZE
from utils.ids import new_id
from utils.metrics import metrics

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class IdMixin:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)


def run_key() -> ForeignKeyConstraint:
    """A run's row (result, evaluation, event) names its run and organization by one key to
    the run's (id, organization_id): its organization is its run's, and it goes with the run
    (migration 0019_run_keys)."""
    return ForeignKeyConstraint(
        ["run_id", "organization_id"], ["runs.id", "runs.organization_id"], ondelete="CASCADE"
    )


def reference_index(table: str, column: str) -> Index:
    """The index a nullable foreign key needs: each deleted row it names (a project's runs, with
    it; a model) otherwise has its SET NULL read the whole referencing table, across every
    organization (migrations 0022_reference_indexes, 0023_metric_judge_index). Only the rows
    that name something are indexed."""
    return Index(f"ix_{table}_{column}", column, postgresql_where=text(f"{column} IS NOT NULL"))


class TimestampMixin:
    # Fetch server-generated timestamps with RETURNING, never by a lazy load later.
    __mapper_args__: ClassVar[dict[str, Any]] = {"eager_defaults": True}

    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


def make_engine(url: str, *, pool_size: int, max_overflow: int) -> AsyncEngine:
    """The service's engine (tests build theirs here too, so they run the same codecs)."""
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        json_serializer=fastjson.dumps,
        # The dialect registers it as the driver's json and jsonb decoder, the driver
        # connection's reads included. Exact: a user's JSON comes back as the standard library
        # reads it (an integer beyond 64 bits stays an integer).
        json_deserializer=fastjson.loads_exact,
        # An unexpected database error is logged with its statement: never with the values
        # bound to it (token hashes, encrypted secrets, emails).
        hide_parameters=True,
    )
    event.listen(engine.sync_engine.pool, "checkout", _refuse_closed_connection)
    return engine


def _refuse_closed_connection(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Hands out no pooled connection the server has closed while it sat idle (a restart, an
    idle timeout, a terminated backend): the pool drops it and checks out another.

    In place of a pre-ping, which costs a round trip on every checkout: the driver has read
    the server's goodbye (or the socket's end) on the event loop by the time the connection is
    wanted again, so asking it costs nothing. A connection that breaks while in use fails that
    statement: SQLAlchemy invalidates it (and every connection pooled before it) on a
    statement of the session's, and one on the driver's connection finds it closed, so that
    either way the next transaction gets a fresh one.
    """
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


@dataclass(frozen=True, slots=True)
class Tenant:
    """Who a transaction acts for: an organization, and a user where the policies look at one
    (their own account, memberships and login sessions). `None` matches no tenant row."""

    organization_id: uuid.UUID | None
    user_id: uuid.UUID | None = None


NO_TENANT = Tenant(organization_id=None)
_TENANT = "assay_tenant"  # session.info key: the tenant the open transaction acts for

_SET_TENANT = (
    "SELECT set_config('app.organization_id', $1, true), set_config('app.user_id', $2, true)"
)


async def enter_tenant(session: AsyncSession, tenant: Tenant) -> None:
    """Scopes the session's open transaction to `tenant` for row-level security.

    Both settings are transaction-local and always written, so nothing carries over from an
    earlier transaction on the same pooled connection. Sent on the driver's connection (see
    database/driver.py): through the session, it cost over a tenth of an authenticated read's
    CPU. A transaction not yet begun is begun there, and the session's commit or rollback
    ends it.
    """
    driver = await begun_driver_connection(session)
    await driver.fetchval(
        _SET_TENANT,
        str(tenant.organization_id) if tenant.organization_id else "",
        str(tenant.user_id) if tenant.user_id else "",
    )
    session.info[_TENANT] = tenant


@asynccontextmanager
async def acting_apart(session: AsyncSession, tenant: Tenant) -> AsyncIterator[DriverConnection]:
    """A short transaction for `tenant` on the session's connection, committed when the block
    ends, before the session's own transaction begins: what it writes holds no lock while the
    request goes on (a request that needs its credential's row must not make others wait)."""
    if _TENANT in session.info:
        raise RuntimeError("a transaction apart comes before the session's tenant is entered")
    async with separate_transaction(session) as driver:
        await driver.fetchval(
            _SET_TENANT,
            str(tenant.organization_id) if tenant.organization_id else "",
            str(tenant.user_id) if tenant.user_id else "",
        )
        yield driver


@asynccontextmanager
async def acting_as(session: AsyncSession, tenant: Tenant) -> AsyncIterator[None]:
    """Acts for `tenant` during the block (a new organization being made, another user's login
    sessions being ended), then for the tenant before it again. A block that fails is not
    followed by anything: the whole transaction rolls back."""
    before: Tenant = session.info.get(_TENANT, NO_TENANT)
    await enter_tenant(session, tenant)
    yield
    await enter_tenant(session, before)


_SIDE_READERS_AT_ONCE = 2
_side_readers_open = 0
_WRITTEN = text("SELECT pg_current_xact_id_if_assigned() IS NOT NULL")


@asynccontextmanager
async def side_reader(session: AsyncSession) -> AsyncIterator[AsyncSession | None]:
    """A second, read-only transaction for the session's tenant on a connection of its own, so
    two long reads of one request run side by side (a connection runs one statement at a time).
    Each of its statements sees what is committed, as the session's next statement would (read
    committed: every statement takes its own snapshot).

    Yields None, to read on the session itself, when the session's transaction has written
    (the side one would not see that) or when enough side readers are open: a transaction that
    holds a connection while it waits for another could starve the pool, so none ever waits.
    """
    global _side_readers_open
    tenant: Tenant | None = session.info.get(_TENANT)
    engine = session.bind  # (a session bound to one connection, as in tests, has no second)
    if tenant is None or not isinstance(engine, AsyncEngine):
        yield None
        return
    written = (await session.execute(_WRITTEN)).scalar_one()
    if written or _side_readers_open >= _SIDE_READERS_AT_ONCE:
        yield None
        return
    _side_readers_open += 1
    try:
        async with AsyncSession(engine) as side:
            await side.execute(text("SET TRANSACTION READ ONLY"))
            await enter_tenant(side, tenant)
            yield side
    finally:
        _side_readers_open -= 1


_Read = TypeVar("_Read")


@asynccontextmanager
async def read_beside(
    session: AsyncSession, read: Callable[[AsyncSession], Coroutine[Any, Any, _Read]]
) -> AsyncIterator[Awaitable[_Read]]:
    """`read` started on a side reader, to run while the block reads on the session; or, with
    none to be had, on the session itself once the block awaits it (a connection runs one
    statement at a time). The block awaits what it is given. A read still running beside when
    the block leaves (by an error) is waited for: it ends before its transaction does."""
    async with side_reader(session) as side:
        if side is None:
            later = read(session)
            try:
                yield later
            finally:
                later.close()  # (once awaited, nothing; never awaited, no warning)
            return
        beside = asyncio.create_task(read(side))
        try:
            yield beside
        finally:
            await asyncio.gather(beside, return_exceptions=True)


class Database:
    """The runtime engine (connecting as the non-privileged runtime role) and its sessions."""

    def __init__(
        self,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession] | None = None,
    ) -> None:
        self.engine = engine
        self.sessionmaker = sessionmaker or async_sessionmaker(
            engine, expire_on_commit=False, autoflush=False
        )

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        pool_size: int = DEFAULT_DB_POOL_SIZE,
        max_overflow: int = DEFAULT_DB_MAX_OVERFLOW,
    ) -> Database:
        engine = make_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        _measure_pool(engine, pool_size + max_overflow)
        return cls(engine)

    @asynccontextmanager
    async def transaction(self, tenant: Tenant | None = None) -> AsyncIterator[AsyncSession]:
        """A transaction scoped to `tenant` (none: no tenant rows at all). The single commit
        point: commit when the block ends, roll back on any exception."""
        async with self.sessionmaker() as session:
            try:
                if tenant is not None:
                    await enter_tenant(session, tenant)
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def dispose(self) -> None:
        # Read before disposing: dispose() puts a fresh pool in place.
        capacity = self.engine.sync_engine.pool.__dict__.pop("_assay_capacity", 0)
        await self.engine.dispose()
        metrics().db_pool_capacity.dec(capacity)


def _measure_pool(engine: AsyncEngine, capacity: int) -> None:
    pool = engine.sync_engine.pool
    pool._assay_capacity = capacity  # type: ignore[attr-defined]
    gauge = metrics().db_pool_in_use
    metrics().db_pool_capacity.inc(capacity)
    event.listen(pool, "checkout", lambda *_: gauge.inc())
    event.listen(pool, "checkin", lambda *_: gauge.dec())


_AFTER_COMMIT = "assay_after_commit"


def on_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Calls `callback` once the session's transaction commits (never if it rolls back, nor if
    the savepoint it was registered in rolls back): for what must only count what was really
    written, such as metrics."""
    sync = session.sync_session
    sync.info.setdefault(_AFTER_COMMIT, []).append((sync.get_nested_transaction(), callback))


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released: the transaction around it has yet to commit
    for _, callback in session.info.pop(_AFTER_COMMIT, ()):
        callback()


@event.listens_for(Session, "after_soft_rollback")
def _savepoint_rolled_back(session: Session, previous: SessionTransaction) -> None:
    if previous.nested and _AFTER_COMMIT in session.info:
        session.info[_AFTER_COMMIT] = [
            (within, callback)
            for within, callback in session.info[_AFTER_COMMIT]
            if not _inside(within, previous)
        ]


def _inside(transaction: SessionTransaction | None, savepoint: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is savepoint:
            return True
        transaction = transaction.parent
    return False


@event.listens_for(Session, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:  # ended without a commit (a commit ran them already)
        session.info.pop(_AFTER_COMMIT, None)


def asyncpg_connect_args(url: str) -> dict[str, Any]:
    """asyncpg.connect() keyword arguments for a SQLAlchemy URL (for raw LISTEN connections)."""
    parsed = make_url(url)
    return {
        "user": parsed.username,
        "password": parsed.password,
        "database": parsed.database,
        "host": parsed.query.get("host") or parsed.host,
        "port": parsed.port,
        "timeout": 10,
    }


_database: Database | None = None


def set_database(database: Database | None) -> None:
    global _database
    _database = database


def get_database() -> Database:
    if _database is None:
        raise RuntimeError("the database is not initialised (is the process bootstrap running?)")
    return _database
