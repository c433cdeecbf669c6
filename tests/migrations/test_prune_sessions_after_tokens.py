"""Migration 0044: retention prunes a login session only once none of its refresh tokens remain,
so a revoked session's unexpired tokens stay, and every token that goes is counted and batched
(never taken by the session's cascade); the downgrade puts the function back as it was.

Each test runs in a database of its own, seeded by the owner, so the counts are exactly ours."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from database.migrate import migrate
from tests.scratch import downgrade

BEFORE, AFTER = "0043_queue_release_attempts", "0044_prune_sessions_after_tokens"
FUNCTION = "assay_retention_prune(integer, integer, integer, integer, integer, integer, integer)"
DAYS = 7
# Only sessions (and their tokens) are pruned: every other kind is kept (NULL).
_PRUNE = text(
    "SELECT category, pruned FROM assay_retention_prune(NULL, NULL, NULL, :days, NULL, :batch,"
    " NULL)"
)
_OWNED = (
    "SELECT r.rolname, p.prosecdef, p.proacl FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner"
    " WHERE p.oid = CAST(:function AS regprocedure)"
)
# Each session: (days since it was revoked, or None; its tokens' expiries, in days from now).
SESSIONS: dict[str, tuple[int | None, tuple[int, ...]]] = {
    # Revoked past the period, its token not expired: both stay (the reviewer's case).
    "revoked_unexpired": (8, (1,)),
    # Revoked past the period, every token expired past it: all of it goes.
    "revoked_expired": (8, (-10, -11, -12)),
    # Revoked past the period, its token expired within it: both stay, for now.
    "revoked_recently_expired": (8, (-3,)),
    # Live: its spent token, expired long ago, goes; its newest one, and the session, stay.
    "live": (None, (-10, 30)),
}
TOKENS = sum(len(expiries) for _, expiries in SESSIONS.values())


async def _seed(engine: AsyncEngine) -> None:
    """One organization and user, and the sessions above (created 40 days ago)."""
    async with engine.begin() as conn:
        organization = await conn.scalar(
            text(
                "INSERT INTO organizations (id, name) VALUES (gen_random_uuid(), 'o') RETURNING id"
            )
        )
        user = await conn.scalar(
            text(
                "INSERT INTO users (id, email, name, password_hash)"
                " VALUES (gen_random_uuid(), 'u@example.com', 'u', 'x') RETURNING id"
            )
        )
        ids = {"organization": organization, "user": user}
        for name, (revoked, expiries) in SESSIONS.items():
            revoked_at = f"now() - interval '{revoked} days'" if revoked else "NULL"
            await conn.execute(
                text(
                    "INSERT INTO auth_sessions (id, user_id, organization_id, revoked_at,"
                    f" created_at) SELECT md5(:name)::uuid, :user, :organization, {revoked_at},"
                    " now() - interval '40 days'"
                ),
                {**ids, "name": name},
            )
            for index, expiry in enumerate(expiries):
                await conn.execute(
                    text(
                        "INSERT INTO refresh_tokens (id, session_id, user_id, organization_id,"
                        " token_hash, expires_at) SELECT gen_random_uuid(), md5(:name)::uuid,"
                        " :user, :organization, md5(:name || :index),"
                        " now() + make_interval(days => :expiry)"
                    ),
                    {**ids, "name": name, "index": str(index), "expiry": expiry},
                )


async def _state(engine: AsyncEngine) -> dict[str, int]:
    """The tokens left, by session name (a session gone is absent)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT s.id, count(t.id) AS tokens FROM auth_sessions s"
                " LEFT JOIN refresh_tokens t ON t.session_id = s.id GROUP BY s.id"
            )
        )
        left = {row.id: row.tokens for row in rows}
        names = {
            name: await conn.scalar(text("SELECT md5(:name)::uuid"), {"name": name})
            for name in SESSIONS
        }
    return {name: int(left[row]) for name, row in names.items() if row in left}


async def _prune(engine: AsyncEngine, batch: int) -> dict[str, int]:
    async with engine.begin() as conn:
        rows = await conn.execute(_PRUNE, {"days": DAYS, "batch": batch})
        return {row.category: int(row.pruned) for row in rows}


async def test_a_session_goes_only_after_its_tokens_each_counted(
    own_database: AsyncEngine,
) -> None:
    await migrate(own_database.url.render_as_string(hide_password=False), None)
    await _seed(own_database)

    report = await _prune(own_database, 5000)

    assert (report["refresh_tokens"], report["auth_sessions"]) == (4, 1)
    # Every token gone was counted: none went with its session.
    assert sum((await _state(own_database)).values()) == TOKENS - 4
    assert await _state(own_database) == {
        "revoked_unexpired": 1,
        "revoked_recently_expired": 1,
        "live": 1,
    }
    again = await _prune(own_database, 5000)
    assert (again["refresh_tokens"], again["auth_sessions"]) == (0, 0)


async def test_a_small_batch_bounds_the_tokens_a_session_takes_with_it(
    own_database: AsyncEngine,
) -> None:
    await migrate(own_database.url.render_as_string(hide_password=False), None)
    await _seed(own_database)
    before = await _state(own_database)
    pruned = {"refresh_tokens": 0, "auth_sessions": 0}

    for _ in range(10):
        report = await _prune(own_database, 1)
        after = await _state(own_database)
        # At most a batch of each kind, and the tokens that went are those it counted (none
        # went with its session, beyond the batch).
        assert report["refresh_tokens"] <= 1 and report["auth_sessions"] <= 1
        assert sum(before.values()) - sum(after.values()) == report["refresh_tokens"]
        pruned = {kind: pruned[kind] + report[kind] for kind in pruned}
        before = after
    assert pruned == {"refresh_tokens": 4, "auth_sessions": 1}
    assert set(before) == {"revoked_unexpired", "revoked_recently_expired", "live"}


async def _function(engine: AsyncEngine) -> tuple[object, ...]:
    """The function's definition, owner, SECURITY DEFINER and grants."""
    async with engine.connect() as conn:
        definition = await conn.scalar(
            text("SELECT pg_get_functiondef(CAST(:function AS regprocedure))"),
            {"function": FUNCTION},
        )
        owned = (await conn.execute(text(_OWNED), {"function": FUNCTION})).one()
    return (definition, *owned)


async def test_the_function_changes_in_place_and_comes_back_unchanged(
    own_database: AsyncEngine,
) -> None:
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None, revision=BEFORE)
    before = await _function(own_database)

    await migrate(url, None, revision=AFTER)
    after = await _function(own_database)
    assert "WHERE (d.revoked_at < cutoff OR d.created_at < cutoff)" in str(after[0])
    assert after[1:] == before[1:]  # owner, SECURITY DEFINER and grants as they were

    async with own_database.begin() as conn:
        await conn.run_sync(downgrade, BEFORE)
    assert await _function(own_database) == before
