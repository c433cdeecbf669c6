"""Migration 0043: the claim marks a takeover, a release takes back what its claim counted,
and whether others wait is answered for the tenant's organization only; the downgrade puts
each function back as it was."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from database.migrate import migrate
from tests.scratch import downgrade

BEFORE, AFTER = "0042_set_member_counts", "0043_queue_release_attempts"
FUNCTIONS = (
    "assay_queue_claim(text, integer, double precision, text[], text[], integer)",
    "assay_queue_release(text, uuid[])",
    "assay_queue_others_waiting(uuid, double precision, text[])",
)
_HAS_TAKEN_OVER = (
    "SELECT count(*) FROM information_schema.columns"
    " WHERE table_name = 'jobs' AND column_name = 'taken_over'"
)
_OWNED = (
    "SELECT r.rolname, p.prosecdef, p.proacl FROM pg_proc p JOIN pg_roles r ON r.oid = p.proowner"
    " WHERE p.oid = CAST(:function AS regprocedure)"
)


async def _functions(engine: AsyncEngine) -> dict[str, tuple[object, ...]]:
    """Each function's definition, owner, SECURITY DEFINER and grants."""
    found: dict[str, tuple[object, ...]] = {}
    async with engine.connect() as connection:
        for function in FUNCTIONS:
            definition = await connection.scalar(
                text("SELECT pg_get_functiondef(CAST(:function AS regprocedure))"),
                {"function": function},
            )
            owned = (await connection.execute(text(_OWNED), {"function": function})).one()
            found[function] = (definition, *owned)
    return found


async def _has_taken_over(engine: AsyncEngine) -> bool:
    async with engine.connect() as connection:
        return bool(await connection.scalar(text(_HAS_TAKEN_OVER)))


async def test_the_queue_functions_change_and_come_back_unchanged(
    own_database: AsyncEngine,
) -> None:
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None, revision=BEFORE)
    before = await _functions(own_database)

    await migrate(url, None, revision=AFTER)
    after = await _functions(own_database)
    assert await _has_taken_over(own_database)
    claim, release, others_waiting = (str(after[function][0]) for function in FUNCTIONS)
    assert "taken_over = picked.status = 'running'" in claim
    assert "attempts = greatest(attempts - (NOT taken_over)::int, 0)" in release
    assert "takeovers = greatest(takeovers - taken_over::int, 0)" in release
    assert "p_organization = (SELECT assay_current_organization())" in others_waiting
    # Changed in place: owner, SECURITY DEFINER and grants as they were.
    assert {function: found[1:] for function, found in after.items()} == {
        function: found[1:] for function, found in before.items()
    }

    async with own_database.begin() as connection:
        await connection.run_sync(downgrade, BEFORE)
    assert await _functions(own_database) == before
    assert not await _has_taken_over(own_database)
