"""Each version keeps its cases' slices (behavior, category, topic) as codes: published a page
at a time, or given to versions published before (migration 0027_version_slices), they read
back as each case's own values, as PostgreSQL reads them out of the case."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from database.migrate import migrate
from database.test_sets.slice_index import SLICES, SliceIndex, VersionSlices
from database.tests import crud as test_crud
from tests.helpers import create_project, create_test, create_test_set, register, tenant_session
from tests.scratch import (
    A_RUNS_OWNERS,
    downgrade,
    model_differences,
    upgrade,
    upgraded_as_plain_owner,
)

SLICED = "0027_version_slices"
BEFORE = "0026_evaluation_position"
PLAIN_OWNER = "assay_plain_slices_owner"
BEHAVIORS = ["a\x1fb", "back\\slash\\s", None, "s", "a\x1fb", "Grüße, 東京", None]

_TRUTH = text(f"""
SELECT {", ".join(f'''"case" ->> '{field}' ''' for field in SLICES)}
FROM test_set_version_cases WHERE version_id = :version ORDER BY position
""")
_KEPT = text("SELECT slice_values, slice_codes, case_count FROM test_set_versions WHERE id = :id")


async def _kept_and_truth(connection: Any, version: uuid.UUID) -> tuple[list[tuple], list[tuple]]:
    """Each case's slices as the version keeps them, and as its case holds them."""
    values, codes, count = (await connection.execute(_KEPT, {"id": version})).one()
    kept = VersionSlices.of(values, codes, count)
    listed = [
        tuple(kept.values[field][kept.codes[field][position]] for field in SLICES)
        for position in range(count)
    ]
    truth = [tuple(row) for row in (await connection.execute(_TRUTH, {"version": version}))]
    return listed, truth


async def test_a_version_published_in_pages_keeps_each_cases_slices(
    client: httpx.AsyncClient, database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(test_crud, "ROWS_PER_STATEMENT", 2)  # 7 cases: 4 pages
    owner = await register(client)
    project = await create_project(client, owner)
    tests = []
    for i, behavior in enumerate(BEHAVIORS):
        fields = {"behavior": behavior, "category": f"c{i % 3}", "topic": None}
        tests.append((await create_test(client, owner, project["id"], **fields))["id"])
    test_set = await create_test_set(client, owner, project["id"], tests[::-1])
    response = await client.post(
        f"/api/v1/test-sets/{test_set['id']}/versions", headers=owner.headers
    )
    assert response.status_code == 201, response.text
    assert set(response.json()) >= {"case_count"} and "slice_codes" not in response.json()

    async with tenant_session(database, owner.organization_id) as session:
        kept, truth = await _kept_and_truth(session, uuid.UUID(response.json()["id"]))
        values, _, _ = (await session.execute(_KEPT, {"id": response.json()["id"]})).one()
    assert kept == truth
    assert [behavior for behavior, _, _ in truth] == BEHAVIORS[::-1]
    # Each slice's values in the order first met, once each.
    assert values["behavior"] == list(dict.fromkeys(BEHAVIORS[::-1]))
    assert values["category"] == ["c0", "c2", "c1"]
    assert values["topic"] == [None]


_CASE = text("""
INSERT INTO test_set_version_cases (version_id, position, organization_id, "case")
VALUES (:version, :position, :org, CAST(:case AS jsonb))
""")


async def _versions_before_the_migration(engine: AsyncEngine) -> dict[uuid.UUID, list[dict]]:
    """Two organizations' versions with cases (one with none): each version's cases."""
    written: dict[uuid.UUID, list[dict]] = {}
    sets: tuple[list[dict[str, Any]], ...] = (
        [{"behavior": b, "category": "x", "input": "q"} for b in BEHAVIORS],
        [{"topic": "t1"}, {"topic": "t0", "behavior": "b"}, {"topic": "t1"}],
        [],
    )
    for cases in sets:
        ids = {key: uuid.uuid4() for key in ("org", "project", "set", "version")}
        async with engine.begin() as connection:
            for statement in A_RUNS_OWNERS:
                await connection.execute(text(statement), ids)
            for position, case in enumerate(cases):
                params = {**ids, "position": position, "case": json.dumps(case)}
                await connection.execute(_CASE, params)
            await connection.execute(
                text("UPDATE test_set_versions SET case_count = :count WHERE id = :version"),
                {**ids, "count": len(cases)},
            )
        written[ids["version"]] = cases
    return written


async def test_the_migration_gives_every_organizations_versions_their_slices(
    own_database: AsyncEngine,
) -> None:
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None, revision=BEFORE)
    written = await _versions_before_the_migration(own_database)

    # Up as production's owner: a plain role held to the tenant policies (FORCE).
    async with upgraded_as_plain_owner(own_database, PLAIN_OWNER, SLICED) as connection:
        await _assert_as_published(connection, written)
        tables = ["test_set_versions", "test_set_version_cases"]
        assert await connection.run_sync(model_differences, tables) == []

        await connection.run_sync(downgrade, BEFORE)
        await connection.run_sync(upgrade, SLICED)
        await _assert_as_published(connection, written)


async def _assert_as_published(
    connection: AsyncConnection, written: dict[uuid.UUID, list[dict]]
) -> None:
    """Each version's slices read back as its cases', kept as a publish keeps them."""
    for version, cases in written.items():
        kept, truth = await _kept_and_truth(connection, version)
        assert kept == truth and len(kept) == len(cases)
        published = SliceIndex()
        published.add(cases)
        values, codes, _ = (await connection.execute(_KEPT, {"id": version})).one()
        assert (values, codes) == (published.values(), published.codes())


def test_codes_of_another_number_of_cases_are_refused() -> None:
    index = SliceIndex()
    index.add([{"behavior": "a"}, {"topic": "t"}])
    read = VersionSlices.of(index.values(), index.codes(), 2)
    assert read.codes["topic"].tolist() == [0, 1] and read.values["topic"] == [None, "t"]
    with pytest.raises(ValueError, match="6 slice codes for 3 cases"):
        VersionSlices.of(index.values(), index.codes(), 3)
    with pytest.raises(TypeError, match="behavior is text or none"):
        index.add([{"behavior": 3}])
