"""`python -m app reencrypt-secrets`: run as a real process against the test database, it moves
every stored secret of every organization to the newest encryption key, once; afterwards the
token-signing secret no longer matters to stored secrets."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from app.__main__ import ENCRYPTED_COLUMNS, reencrypt_columns
from database.models.models import ModelConfig
from database.models.service import resolve
from database.organizations.models import Organization
from database.setup import DatabaseUrls
from tests.e2e.servers import server_env
from utils.runtime import Runtime
from utils.secrets import SecretBox, SecretUnreadable, legacy_key

ROOT = Path(__file__).resolve().parents[2]
OLD = Fernet.generate_key().decode()
# The signing secret of a deployment from before the encryption keys, and the one it rotates to.
SIGNING_SECRET = "upgraded-deployment-signing-secret-0123456789"
NEXT_SIGNING_SECRET = "rotated-deployment-signing-secret-9876543210"
LEGACY_API_KEY = "sk-legacy-9Xq2Lm7Rt4Vb"
OLD_KEY_HEADERS = {"Authorization": "Bearer team-app-token-3c8e1f"}
CURRENT_API_KEY = "sk-current-1Hd6Pw0Ks5Ne"


@pytest.fixture
def newest(runtime: Runtime) -> str:
    """The newest key handed to the command: this test session's own, so whatever other tests
    left committed stays readable to them."""
    return runtime.settings.resolve_encryption_keys()[0]


@pytest.fixture
async def organizations(owner_engine: AsyncEngine) -> AsyncIterator[list[uuid.UUID]]:
    """Committed organizations the command can see from its own process; deleted at the end."""
    created: list[uuid.UUID] = []
    yield created
    async with owner_engine.begin() as connection:
        await connection.execute(
            text("DELETE FROM organizations WHERE id = ANY(:ids)"), {"ids": created}
        )


async def add_organization(
    owner_engine: AsyncEngine, created: list[uuid.UUID], *configs: ModelConfig
) -> None:
    async with AsyncSession(owner_engine, expire_on_commit=False) as session:
        organization = Organization(name=f"tenant {uuid.uuid4().hex[:8]}")
        session.add(organization)
        await session.flush()
        created.append(organization.id)
        for config in configs:
            config.organization_id = organization.id
            session.add(config)
        await session.commit()


def openai_config(api_key_token: bytes) -> ModelConfig:
    return ModelConfig(
        name=f"openai {uuid.uuid4().hex[:6]}",
        provider="openai",
        model="gpt-4o-mini",
        parameters={},
        timeout_seconds=30.0,
        api_key_encrypted=api_key_token,
        api_key_hint="sk-…",
    )


def http_config(headers_token: bytes) -> ModelConfig:
    return ModelConfig(
        name=f"http {uuid.uuid4().hex[:6]}",
        provider="http",
        base_url="https://app.example.com/chat",
        parameters={},
        timeout_seconds=30.0,
        http_method="POST",
        http_headers_encrypted=headers_token,
        http_header_names=sorted(OLD_KEY_HEADERS),
        body_template="{{ input | tojson }}",
        response_path="$.answer",
    )


async def stored_tokens(owner_engine: AsyncEngine) -> dict[tuple[uuid.UUID, str], bytes]:
    """Every encrypted value in the database, by row and column."""
    found: dict[tuple[uuid.UUID, str], bytes] = {}
    async with owner_engine.connect() as connection:
        for table, column in ENCRYPTED_COLUMNS:
            rows = await connection.execute(
                text(f"SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL")
            )
            found.update({(row_id, column): bytes(token) for row_id, token in rows})
    return found


async def reencrypt(
    database_urls: DatabaseUrls, data_dir: Path, *, as_owner: bool = True, **settings: str
) -> subprocess.CompletedProcess[str]:
    """The command in its own process, on the test database, as an operator runs it."""
    if as_owner:
        settings["ASSAY_MIGRATION_DATABASE_URL"] = database_urls.owner
    env = server_env(data_dir, ASSAY_DATABASE_URL=database_urls.runtime, **settings)
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app", "reencrypt-secrets"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_an_upgrade_moves_every_organizations_secrets_to_the_newest_key_once(
    owner_engine, database_urls, organizations, newest, tmp_path
):
    legacy_token = Fernet(legacy_key(SIGNING_SECRET)).encrypt(LEGACY_API_KEY.encode())
    old_token = Fernet(OLD).encrypt(json.dumps(OLD_KEY_HEADERS).encode())
    current_token = Fernet(newest).encrypt(CURRENT_API_KEY.encode())
    legacy_config, http = openai_config(legacy_token), http_config(old_token)
    current_config = openai_config(current_token)
    await add_organization(owner_engine, organizations, legacy_config)
    await add_organization(owner_engine, organizations, http, current_config)
    before = await stored_tokens(owner_engine)
    # Before the command, the legacy value opens only with the signing secret it was made with.
    with pytest.raises(SecretUnreadable):
        SecretBox([newest, OLD], legacy_secret_key=NEXT_SIGNING_SECRET).decrypt(legacy_token)

    keys = f"{newest},{OLD}"
    done = await reencrypt(
        database_urls, tmp_path, ASSAY_SECRET_KEY=SIGNING_SECRET, ASSAY_ENCRYPTION_KEYS=keys
    )

    assert done.returncode == 0, done.stderr
    after = await stored_tokens(owner_engine)
    changed = {place for place, token in after.items() if before[place] != token}
    assert changed == {
        (legacy_config.id, "api_key_encrypted"),
        (http.id, "http_headers_encrypted"),
    }
    assert f"re-encrypted 2 stored secrets with the newest key ({len(after) - 2} already" in (
        done.stdout
    )
    for secret in (LEGACY_API_KEY, CURRENT_API_KEY, "team-app-token", OLD, newest):
        assert secret not in done.stdout + done.stderr
    for token in after.values():
        assert token.decode() not in done.stdout + done.stderr

    # The signing secret rotates: stored secrets do not notice.
    rotated = SecretBox([newest], legacy_secret_key=NEXT_SIGNING_SECRET)
    async with AsyncSession(owner_engine) as session:
        stored = await session.scalars(
            select(ModelConfig).where(ModelConfig.organization_id.in_(organizations))
        )
        rows = {config.id: config for config in stored}
    assert resolve(rows[legacy_config.id], rotated).api_key == LEGACY_API_KEY
    assert resolve(rows[http.id], rotated).http_headers == OLD_KEY_HEADERS
    assert resolve(rows[current_config.id], rotated).api_key == CURRENT_API_KEY

    again = await reencrypt(
        database_urls, tmp_path, ASSAY_SECRET_KEY=NEXT_SIGNING_SECRET, ASSAY_ENCRYPTION_KEYS=newest
    )
    assert again.returncode == 0, again.stderr
    assert "re-encrypted 0 stored secrets" in again.stdout
    assert await stored_tokens(owner_engine) == after


async def test_a_value_no_key_opens_is_named_and_left_the_rest_rewritten(
    owner_engine, database_urls, organizations, newest, tmp_path
):
    stranger = Fernet(Fernet.generate_key()).encrypt(b"sk-lost-value")
    lost, movable = openai_config(stranger), openai_config(Fernet(OLD).encrypt(b"sk-kept"))
    await add_organization(owner_engine, organizations, lost, movable)

    done = await reencrypt(
        database_urls,
        tmp_path,
        ASSAY_SECRET_KEY=SIGNING_SECRET,
        ASSAY_ENCRYPTION_KEYS=f"{newest},{OLD}",
    )

    assert done.returncode == 1
    assert f"model_configs.api_key_encrypted {lost.id}" in done.stderr
    assert "1 stored secrets open with none of the keys" in done.stderr
    assert "re-encrypted 1 stored secrets" in done.stdout
    assert "sk-lost-value" not in done.stderr and stranger.decode() not in done.stderr
    after = await stored_tokens(owner_engine)
    assert after[(lost.id, "api_key_encrypted")] == stranger
    assert Fernet(newest).decrypt(after[(movable.id, "api_key_encrypted")]) == b"sk-kept"


@pytest.mark.parametrize(
    ("configured", "reason"),
    [
        ({"ASSAY_SECRET_KEY": SIGNING_SECRET}, "ASSAY_ENCRYPTION_KEYS is not set"),
        (
            {"ASSAY_SECRET_KEY": SIGNING_SECRET, "ASSAY_ENCRYPTION_KEYS": f"{OLD},not-a-key"},
            "ASSAY_ENCRYPTION_KEYS: key 2 of 2 is not a Fernet key",
        ),
    ],
)
async def test_the_command_refuses_keys_it_cannot_use(database_urls, tmp_path, configured, reason):
    done = await reencrypt(database_urls, tmp_path, **configured)
    assert done.returncode == 2
    assert reason in done.stderr
    assert OLD not in done.stderr
    assert "Traceback" not in done.stderr


async def test_the_runtime_role_is_not_enough(database_urls, newest, tmp_path):
    done = await reencrypt(
        database_urls,
        tmp_path,
        as_owner=False,
        ASSAY_SECRET_KEY=SIGNING_SECRET,
        ASSAY_ENCRYPTION_KEYS=newest,
    )
    assert done.returncode == 2
    assert "set ASSAY_MIGRATION_DATABASE_URL" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_table_owner_without_superuser_rights_reaches_every_organization(
    owner_engine, newest
):
    """In production the owner is a plain role, held to the tenant policies by FORCE ROW LEVEL
    SECURITY: the command lifts that for its own transaction and puts it back."""
    async with owner_engine.connect() as connection:
        transaction = await connection.begin()
        try:
            ids = [await _organization_with_key(connection, f"sk-{n}") for n in range(2)]
            await connection.execute(
                text("CREATE ROLE assay_reencrypt_owner NOSUPERUSER NOBYPASSRLS")
            )
            for table_name in sorted({name for name, _ in ENCRYPTED_COLUMNS}):
                await connection.execute(
                    text(f"ALTER TABLE {table_name} OWNER TO assay_reencrypt_owner")
                )
            await connection.execute(text("SET LOCAL ROLE assay_reencrypt_owner"))
            assert await _visible(connection, ids) == 0  # the wall holds for the owner

            outcome = await reencrypt_columns(connection, SecretBox([newest, OLD]))

            assert outcome.rewritten == 2
            assert outcome.unreadable == []
            assert await _visible(connection, ids) == 0  # FORCE is back
            await connection.execute(text("RESET ROLE"))
            tokens = await connection.scalars(
                text("SELECT api_key_encrypted FROM model_configs WHERE id = ANY(:ids)"),
                {"ids": ids},
            )
            assert sorted(SecretBox([newest]).decrypt(bytes(t)) for t in tokens) == [
                "sk-0",
                "sk-1",
            ]
        finally:
            await transaction.rollback()


async def _organization_with_key(connection: AsyncConnection, api_key: str) -> uuid.UUID:
    organization_id = await connection.scalar(
        text("INSERT INTO organizations (id, name) VALUES (gen_random_uuid(), 'o') RETURNING id")
    )
    values: dict[str, Any] = {
        "org": organization_id,
        "token": Fernet(OLD).encrypt(api_key.encode()),
    }
    return await connection.scalar(
        text(
            "INSERT INTO model_configs (id, organization_id, name, provider, model, parameters,"
            " timeout_seconds, api_key_encrypted)"
            " VALUES (gen_random_uuid(), :org, 'm', 'openai', 'gpt-4o-mini', '{}', 30, :token)"
            " RETURNING id"
        ),
        values,
    )


async def _visible(connection: AsyncConnection, ids: list[uuid.UUID]) -> int:
    return await connection.scalar(
        text("SELECT count(*) FROM model_configs WHERE id = ANY(:ids)"), {"ids": ids}
    )


def test_every_encrypted_column_is_re_encrypted() -> None:
    """A column that stores an encrypted value (named `*_encrypted`) and that the command does
    not know would keep the old key for ever."""
    import database.registry  # noqa: F401 (every table in the metadata)
    from database.core import Base

    stored = {
        (table.name, column.name)
        for table in Base.metadata.tables.values()
        for column in table.columns
        if column.name.endswith("_encrypted")
    }
    assert stored == set(ENCRYPTED_COLUMNS)
