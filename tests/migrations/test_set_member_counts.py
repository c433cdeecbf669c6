"""Migration 0042: every organization's sets are given the count of the tests they hold, and
the triggers keep it through every way a member comes or goes; upgraded as production's
owner, a plain role held to the tenant policies."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from database.migrate import migrate
from tests.scratch import downgrade, named_differences, upgraded_as_plain_owner

BEFORE, AFTER = "0041_run_model_digests", "0042_set_member_counts"
PLAIN_OWNER = "assay_plain_owner_member_counts"
_OWNERS = (
    "INSERT INTO organizations (id, name) VALUES (:org, 'o')",
    "INSERT INTO projects (id, organization_id, name) VALUES (:project, :org, 'p')",
)
_SET = (
    "INSERT INTO test_sets (id, organization_id, project_id, name)"
    " VALUES (:set, :org, :project, 's')"
)
_TESTS = (
    "INSERT INTO tests (id, organization_id, project_id, context, tags, variables, metadata,"
    " input) SELECT id, :org, :project, '[]', '{}', '{}', '{}', 'q'"
    " FROM unnest(CAST(:tests AS uuid[])) AS id"
)
_MEMBERS = (
    "INSERT INTO test_set_members (test_set_id, test_id, organization_id, position)"
    " SELECT :set, id, :org, ordinal"
    " FROM unnest(CAST(:tests AS uuid[])) WITH ORDINALITY AS t(id, ordinal)"
)


async def _held(connection: AsyncConnection) -> dict[uuid.UUID, tuple[int, int]]:
    """Each set's (kept count, counted members)."""
    rows = await connection.execute(
        text(
            "SELECT s.id, s.member_count, (SELECT count(*) FROM test_set_members AS m"
            " WHERE m.test_set_id = s.id) FROM test_sets AS s"
        )
    )
    return {test_set: (kept, counted) for test_set, kept, counted in rows.all()}


async def test_counts_are_filled_in_every_organization_and_kept_by_every_change(
    own_database: AsyncEngine,
) -> None:
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None, revision=BEFORE)
    sizes: dict[uuid.UUID, int] = {}
    owners = [{"org": uuid.uuid4(), "project": uuid.uuid4()} for _ in range(2)]
    async with own_database.begin() as connection:
        for ids, size in zip(owners, (3, 5), strict=True):  # an organization each
            test_set, tests = uuid.uuid4(), [uuid.uuid4() for _ in range(size)]
            for statement in (*_OWNERS, _SET, _TESTS, _MEMBERS):
                await connection.execute(text(statement), {**ids, "set": test_set, "tests": tests})
            sizes[test_set] = size
        empty = uuid.uuid4()  # the first organization's second set, holding none
        await connection.execute(text(_SET.replace("'s'", "'empty'")), {**owners[0], "set": empty})
        sizes[empty] = 0
    first, last, _ = sizes
    async with upgraded_as_plain_owner(own_database, PLAIN_OWNER, AFTER) as connection:
        assert {s: kept for s, (kept, _) in (await _held(connection)).items()} == sizes

        # As the service changes them: its organization's (a cascade acts as the tables'
        # owner, held to the tenant policies).
        org, project = owners[0]["org"], owners[0]["project"]
        await connection.execute(
            text("SELECT set_config('app.organization_id', :org, true)"), {"org": str(org)}
        )
        added = [uuid.uuid4() for _ in range(4)]
        for statement in (_TESTS, _MEMBERS):
            await connection.execute(
                text(statement),
                {"org": org, "project": project, "set": first, "tests": added},
            )
        await connection.execute(  # a deleted test leaves its sets
            text("DELETE FROM tests WHERE id = :test"), {"test": added[0]}
        )
        await connection.execute(  # two members removed in one statement
            text("DELETE FROM test_set_members WHERE test_id = ANY(CAST(:tests AS uuid[]))"),
            {"tests": added[1:3]},
        )
        await connection.execute(  # the set holding none takes one over from another set
            text("UPDATE test_set_members SET test_set_id = :to WHERE test_id = :test"),
            {"to": empty, "test": added[3]},
        )
        held = await _held(connection)
        assert all(kept == counted for kept, counted in held.values()), held
        assert {s: kept for s, (kept, _) in held.items()} == {first: 3, empty: 1, last: 5}

        later = await connection.run_sync(named_differences, ["test_sets"])
        assert ("add_column", "member_count") not in later
        await connection.run_sync(downgrade, BEFORE)
        before = await connection.run_sync(named_differences, ["test_sets"])
        assert before - later == {("add_column", "member_count")}
        revision = text("SELECT content_revision FROM test_sets WHERE id = :set")
        was = await connection.scalar(revision, {"set": last})
        await connection.execute(
            text("DELETE FROM test_set_members WHERE test_set_id = :set"), {"set": last}
        )
        assert await connection.scalar(revision, {"set": last}) == was + 1


async def test_the_upgrade_waits_for_a_set_being_written_and_counts_what_it_wrote(
    own_database: AsyncEngine,
) -> None:
    """As the service writes members: the set held first, then its members written."""
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None, revision=BEFORE)
    ids = {"org": uuid.uuid4(), "project": uuid.uuid4(), "set": uuid.uuid4()}
    async with own_database.begin() as connection:
        for statement in (*_OWNERS, _SET):
            await connection.execute(text(statement), ids)
    tests = [uuid.uuid4() for _ in range(3)]
    async with own_database.connect() as writer:
        await writer.begin()
        await writer.execute(
            text("SELECT 1 FROM test_sets WHERE id = :set FOR UPDATE"), {"set": ids["set"]}
        )
        upgrade = asyncio.create_task(migrate(url, None, revision=AFTER))
        await asyncio.sleep(1)  # the upgrade waits for the set
        for statement in (_TESTS, _MEMBERS):
            await writer.execute(text(statement), {**ids, "tests": tests})
        await writer.commit()
    assert (await upgrade).after == AFTER
    async with own_database.connect() as connection:
        assert await _held(connection) == {ids["set"]: (3, 3)}
