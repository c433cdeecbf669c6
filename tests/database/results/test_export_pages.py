"""export.export_run reads its pages as plain rows (crud.export_rows) rather than ORM objects:
the same document, byte for byte, as the export served today, in every format, over pages that
end between two repetitions of a case, with and without evaluations, read as the caller."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import update

from database.core import Tenant
from database.evaluations import crud as evaluation_crud
from database.results import crud, export
from database.results.crud.export_rows import result_rows_after
from database.results.models import Run
from database.test_sets.streaming import PAGE_ROWS, GoneMidway
from tests.database.results.test_export_stream import OUTPUTS, _run, _write_results
from tests.helpers import register
from utils.auth import Principal, Role

FORMATS = ("csv", "json", "junit")


async def _body(database, organization_id, principal, run_id, fmt) -> bytes:
    async with database.transaction(Tenant(organization_id)) as session:
        run = await crud.get_run(session, uuid.UUID(run_id))
        assert run is not None
        chunks = await export.export_run(session, principal, run, fmt)
    return b"".join([chunk async for chunk in chunks])


@pytest.mark.parametrize("fmt", FORMATS)
async def test_the_rows_export_writes_the_served_document(client, database, fmt):
    owner = await register(client)
    run = await _run(client, owner, cases=PAGE_ROWS // 3 + 20, repetitions=3, name="n <&>")
    await _write_results(database, owner, run, OUTPUTS)
    gate = {"status": "undecided", "reasons": ["no baseline"]}
    async with database.transaction(Tenant(owner.organization_id)) as session:
        await session.execute(
            update(Run).where(Run.id == uuid.UUID(run["id"])).values(gate_result=gate)
        )
    served = await client.get(
        f"/api/v1/runs/{run['id']}/export", params={"format": fmt}, headers=owner.headers
    )
    assert served.status_code == 200

    principal = Principal(organization_id=owner.organization_id, role=Role.viewer)
    body = await _body(database, owner.organization_id, principal, run["id"], fmt)
    assert body == served.content
    # Read as another organization, the pages see no row of the run, nor the run itself: the
    # document ends as an error after its head, never as a whole one without rows.
    stranger = Principal(organization_id=uuid.uuid4(), role=Role.viewer)
    async with database.transaction(Tenant(owner.organization_id)) as session:
        found = await crud.get_run(session, uuid.UUID(run["id"]))
        assert found is not None
        chunks = await export.export_run(session, stranger, found, fmt)
    sent = []
    with pytest.raises(GoneMidway):
        async for chunk in chunks:
            sent.append(chunk)
    assert len(b"".join(sent)) < len(body) // 10


async def test_pages_follow_the_keyset_with_evaluations_by_metric_name(client, database):
    owner = await register(client)
    run = await _run(client, owner, cases=5, repetitions=2)
    await _write_results(database, owner, run, OUTPUTS)
    run_id = uuid.UUID(run["id"])
    async with database.transaction(Tenant(owner.organization_id)) as session:
        first = await result_rows_after(session, run_id, None, limit=4)
        rest = await result_rows_after(session, run_id, (1, 1), limit=100)
        past_the_end = await result_rows_after(session, run_id, (4, 1), limit=100)
        rows = first + rest
        stored = await evaluation_crud.evaluations_of(
            session, [row["id"] for row in rows], {run_id}
        )
    keys = [(row["position"], row["repetition"]) for row in rows]
    assert keys == [(p, r) for p in range(5) for r in range(2)]
    assert past_the_end == []
    # Each result's own evaluations, in the order the rest of the API lists them.
    for row in rows:
        names = [e["metric_name"] for e in row["evaluations"]]
        assert names == [e["metric_name"] for e in stored[row["id"]]]
        assert (row["status"] == "errored") == (names == [])
    assert sum(len(row["evaluations"]) for row in rows) > len(rows)
