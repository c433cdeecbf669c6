"""ASSAY_DATABASE_URL mode: a configured PostgreSQL (here: a fresh database on the test server)
with separate runtime and owner roles, exactly as in production."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from database import embedded
from database.setup import DatabaseUrls
from tests.e2e.servers import server_env, start_server

pytestmark = pytest.mark.slow
SECRET = "production-secret-key-for-the-external-test-0123"
ENCRYPTION_KEY = "ZXh0ZXJuYWwtZGF0YWJhc2UtdGVzdC1rZXktMDEyMzQ="


async def _fresh_database(urls: DatabaseUrls) -> tuple[str, str]:
    socket_dir = Path(make_url(urls.owner).query["host"])  # type: ignore[arg-type]
    name = f"assay_ext_{uuid.uuid4().hex[:8]}"
    await embedded.ensure_database(embedded.EmbeddedServer(socket_dir), name)
    plain = f"postgresql://{{role}}@/{name}?host={socket_dir}"
    return plain.format(role=embedded.RUNTIME_ROLE), plain.format(role=embedded.OWNER_ROLE)


async def test_configured_database_with_separate_roles_serves(database_urls, tmp_path):
    runtime_url, owner_url = await _fresh_database(database_urls)
    env = server_env(
        tmp_path / "data",
        ASSAY_DATABASE_URL=runtime_url,
        ASSAY_MIGRATION_DATABASE_URL=owner_url,
        ASSAY_SECRET_KEY=SECRET,
        ASSAY_ENCRYPTION_KEYS=ENCRYPTION_KEY,
    )
    server = start_server(env, tmp_path / "server.log")
    try:
        health = await asyncio.to_thread(server.wait_healthy)
        assert health.json()["migration_revision"] == health.json()["migration_head"]
        # No embedded server was started for this process.
        assert not (tmp_path / "data" / "pgdata").exists()
    finally:
        server.stop()


async def test_a_superuser_runtime_role_is_refused(database_urls, tmp_path):
    _, owner_url = await _fresh_database(database_urls)
    env = server_env(
        tmp_path / "data",
        ASSAY_DATABASE_URL=owner_url,
        ASSAY_SECRET_KEY=SECRET,
        ASSAY_ENCRYPTION_KEYS=ENCRYPTION_KEY,
    )
    server = start_server(env, tmp_path / "server.log")
    try:
        code = await asyncio.to_thread(server.process.wait, 60)
    finally:
        server.stop()
    assert code != 0
    assert "row-level security would not apply" in server.log()
