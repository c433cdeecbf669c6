"""Test harness: one real PostgreSQL per session (embedded, or ASSAY_TEST_DATABASE_URL),
migrated with Alembic; every test runs in a transaction that is rolled back at its end."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

# Settings are read from the environment: fix them before any app module is imported.
_DATA_DIR = Path(tempfile.mkdtemp(prefix="assay-test-"))
atexit.register(shutil.rmtree, _DATA_DIR, ignore_errors=True)
os.environ.update(
    {
        "ASSAY_DATA_DIR": str(_DATA_DIR),
        "ASSAY_SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
        "ASSAY_BCRYPT_ROUNDS": "4",  # cost 12 is the default; tests check it separately
        "ASSAY_AUTH_RATE_LIMIT": "1000/minute",
    }
)
os.environ.pop("ASSAY_DATABASE_URL", None)
os.environ.pop("ASSAY_MIGRATION_DATABASE_URL", None)

import httpx  # noqa: E402
import pytest  # noqa: E402
from sqlalchemy import event, text  # noqa: E402
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from app.main import create_app  # noqa: E402
from database import embedded  # noqa: E402
from database.core import Database, make_engine, set_database  # noqa: E402
from database.migrate import migrate  # noqa: E402
from database.setup import DatabaseUrls  # noqa: E402
from tests.helpers import Account, register, remove_account  # noqa: E402
from tests.scratch import scratch_engine  # noqa: E402
from utils import json_schemas  # noqa: E402
from utils.config import Settings, get_settings  # noqa: E402
from utils.runtime import Runtime, set_runtime  # noqa: E402


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
async def database_urls() -> DatabaseUrls:
    runtime_url = os.environ.get("ASSAY_TEST_DATABASE_URL")
    if runtime_url:
        owner_url = os.environ.get("ASSAY_TEST_MIGRATION_DATABASE_URL", runtime_url)
        urls = DatabaseUrls(runtime=runtime_url, owner=owner_url)
    else:
        server = await embedded.start_embedded(_DATA_DIR / "db", cleanup_mode="delete")
        urls = DatabaseUrls(
            runtime=server.url(embedded.RUNTIME_ROLE), owner=server.url(embedded.OWNER_ROLE)
        )
    await migrate(urls.owner, urls.runtime_role)
    return urls


@pytest.fixture(scope="session")
async def runtime_engine(database_urls: DatabaseUrls) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_urls.runtime, pool_size=5, max_overflow=10)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def owner_engine(database_urls: DatabaseUrls) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database_urls.owner, pool_size=2, max_overflow=10)
    yield engine
    await engine.dispose()


@pytest.fixture
async def own_database(
    database_urls: DatabaseUrls, owner_engine: AsyncEngine, request: pytest.FixtureRequest
) -> AsyncIterator[AsyncEngine]:
    """An empty database of the test's own, for a migration's test (up, down and up again)."""
    prefix = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    async with scratch_engine(database_urls, owner_engine, prefix) as engine:
        yield engine


@pytest.fixture(scope="session")
def runtime(settings: Settings) -> Runtime:
    return Runtime.from_settings(settings)


@pytest.fixture
async def database(runtime_engine: AsyncEngine, runtime: Runtime) -> AsyncIterator[Database]:
    """The app's database for one test: every commit lands in a savepoint, all rolled back."""
    async with runtime_engine.connect() as connection:
        transaction = await connection.begin()
        sessions = async_sessionmaker(
            bind=connection,
            expire_on_commit=False,
            autoflush=False,
            join_transaction_mode="create_savepoint",
            sync_session_class=_TenantlessSession,
        )
        db = Database(runtime_engine, sessions)
        set_database(db)
        set_runtime(runtime)
        await runtime.rate_limiter.reset()
        try:
            yield db
        finally:
            set_database(None)
            await transaction.rollback()


class _TenantlessSession(Session):
    """Production transactions start with no tenant; so does each request here, although all
    of a test's requests share one outer transaction (where set_config would linger)."""


@event.listens_for(_TenantlessSession, "after_begin")
def _start_without_tenant(session, transaction, connection):
    if transaction.nested:
        return  # a savepoint of the request's own (begin_nested) is still the request's
    connection.execute(
        text(
            "SELECT set_config('app.organization_id', '', true),"
            " set_config('app.user_id', '', true)"
        )
    )


@pytest.fixture
async def committed_database(
    runtime_engine: AsyncEngine, runtime: Runtime
) -> AsyncIterator[Database]:
    """For tests that must see data from other connections: real commits (clean up after!)."""
    db = Database(runtime_engine)
    set_database(db)
    set_runtime(runtime)
    yield db
    set_database(None)


@pytest.fixture
async def committed_client(committed_database, app) -> AsyncIterator[httpx.AsyncClient]:
    """The app over committed data, with no workers: a run stays queued, for a test to write
    its results itself."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://assay.test") as client:
        yield client


@pytest.fixture
async def committed_owner(committed_client, owner_engine) -> AsyncIterator[Account]:
    """A committed account, removed at the end."""
    account = await register(committed_client)
    try:
        yield account
    finally:
        await remove_account(owner_engine, account)


@pytest.fixture(scope="session")
def app():
    return create_app()


@pytest.fixture
async def client(app, database: Database) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.10", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://assay.test") as http:
        yield http


@pytest.fixture(scope="session", autouse=True)
async def _close_provider_sessions() -> AsyncIterator[None]:
    """The engine shares one HTTP session per event loop; close it with the test loop."""
    yield
    from utils.transport import close_sessions

    await close_sessions()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No embedded PostgreSQL started by a test outlives the test run (servers started by the
    processes of end-to-end tests stop with their last process)."""
    import time

    import psutil

    base = str(session.config._tmp_path_factory.getbasetemp())  # type: ignore[attr-defined]

    def leftovers() -> list[str]:
        found = []
        for process in psutil.process_iter(["name", "cmdline"]):
            try:
                command = " ".join(process.info["cmdline"] or [])
            except psutil.Error:
                continue
            if process.info["name"] == "postgres" and f"-D {base}" in command:
                found.append(command)
        return found

    deadline = time.monotonic() + 15
    while (left := leftovers()) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"embedded PostgreSQL servers left running: {left}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def metaschema_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread of each check of a schema against its metaschema."""
    threads: list[str] = []
    check = json_schemas._problem

    def spy(value: Any) -> str | None:
        threads.append(threading.current_thread().name)
        return check(value)

    monkeypatch.setattr(json_schemas, "_problem", spy)
    return threads
