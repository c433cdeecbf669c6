"""Results whose outputs are megabytes (a provider's answer may be up to 10 MB): a page of the
results' list, and of an export, ends before PAGE_BYTES of their texts (its first result
whatever its size), and a live stream's event is previewed from the output's first characters,
cut by the database, never read whole."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from database.core import Database, Tenant
from database.migrate import migrate
from database.results import crud, events
from database.results.crud import flip_outputs
from database.results.crud.pages import PAGE_BYTES
from database.results.crud.recorded import recorded_results
from database.results.events import OUTPUT_PREVIEW_CHARS, REASON_CHARS
from database.results.export import result_rows
from database.results.models import Result, Run
from tests.database.results.test_export_stream import _run
from tests.database.results.test_results_pages import _page, _result
from tests.helpers import Account, register, statements_sent
from tests.scratch import downgrade, model_differences

MB = 1024 * 1024
TEXT_BYTES, BEFORE_TEXT_BYTES = "0025_result_text_bytes", "0024_test_input_check"


async def _write(
    database: Database,
    owner: Account,
    run: dict[str, Any],
    outputs: list[str],
    trajectory: list[dict[str, Any]] | None = None,
) -> list[uuid.UUID]:
    """One result per output, in positions 0, 1, ..., with a reference event each."""
    results = [
        {**_result(owner, run, position, 0), "output": output, "trajectory": trajectory}
        for position, output in enumerate(outputs)
    ]
    async with database.transaction(Tenant(owner.organization_id)) as session:
        await crud.insert_results(session, results)
        await crud.update_run(
            session,
            run_id=uuid.UUID(run["id"]),
            organization_id=owner.organization_id,
            events=[events.result_reference(result["id"]) for result in results],
        )
    return [result["id"] for result in results]


async def _walk(client: httpx.AsyncClient, owner: Account, run: dict, **params: Any) -> list:
    """Every page's positions, following next_cursor."""
    pages = []
    page = await _page(client, owner, run, **params)
    while True:
        pages.append([item["position"] for item in page["items"]])
        if page["next_cursor"] is None:
            return pages
        page = await _page(client, owner, run, **params, cursor=page["next_cursor"])


async def test_a_page_of_large_outputs_ends_before_its_byte_budget(client, database):
    owner = await register(client)
    run = await _run(client, owner, cases=6, repetitions=1)
    third = "x" * (PAGE_BYTES // 3 + 1000)  # three a page: the fourth starts past the budget
    whole = "y" * (PAGE_BYTES + MB)  # a page of its own, however large
    outputs = [third] * 3 + [whole, "small", "small"]
    await _write(database, owner, run, outputs)

    assert await _walk(client, owner, run, limit=100) == [[0, 1, 2], [3], [4, 5]]
    by_offset = await _page(client, owner, run, limit=100, offset=1)
    assert [item["position"] for item in by_offset["items"]] == [1, 2, 3]
    assert by_offset["total"] == 6 and by_offset["next_cursor"] is not None
    # Positions 0 and 3 failed: the row limit ends the first page, the bytes do not.
    assert await _walk(client, owner, run, limit=2, status="passed") == [[1, 2], [4, 5]]

    read = result_rows(uuid.UUID(run["id"]))  # the export's pages
    pages = []
    async with database.transaction(Tenant(owner.organization_id)) as session:
        while (rows := await read(session)) is not None:
            pages.append([row["position"] for row in rows])
    assert pages == [[0, 1, 2], [3], [4, 5]]
    exported = await client.get(
        f"/api/v1/runs/{run['id']}/export", params={"format": "json"}, headers=owner.headers
    )
    assert exported.status_code == 200, exported.text[:300]
    assert [row["output"] for row in exported.json()] == outputs


async def test_a_compressible_trajectory_counts_by_its_size_as_read(client, database):
    """PostgreSQL compresses a megabyte of one character to a few kilobytes: the page counts
    what reading it costs, written with the row."""
    owner = await register(client)
    run = await _run(client, owner, cases=4, repetitions=1)
    steps = [{"text": "z" * (PAGE_BYTES // 3 + 1000), "tool_calls": []}]
    await _write(database, owner, run, ["short"] * 4, trajectory=steps)
    assert await _walk(client, owner, run, limit=100) == [[0, 1, 2], [3]]


async def test_a_live_event_previews_its_output_from_the_database(client, database):
    owner = await register(client)
    run = await _run(client, owner, cases=4, repetitions=1)
    # Characters of two bytes: a cut in bytes would keep half as many.
    outputs = ["é" * OUTPUT_PREVIEW_CHARS, "é" * (OUTPUT_PREVIEW_CHARS + 1), "ü" * (3 * MB), ""]
    ids = await _write(database, owner, run, outputs)
    async with database.transaction(Tenant(owner.organization_id)) as session:
        await session.execute(
            update(Result)
            .where(Result.id == ids[3])
            .values(error_type="provider_error", error_message="ö" * (3 * REASON_CHARS))
        )
        read = await events.read_after(session, uuid.UUID(run["id"]), 0, limit=100)
        # What the database sends back: the output's first characters, not its megabytes.
        found = await recorded_results(
            session, uuid.UUID(run["id"]), ids, output_chars=7, text_chars=3
        )
    assert [found[i][0]["output"] for i in ids] == ["é" * 7, "é" * 7, "ü" * 7, ""]
    assert found[ids[3]][0]["error_message"] == "ööö"
    shown = [event.data for event in read if event.type == events.RESULT_RECORDED]
    assert [data["output"] for data in shown] == [
        "é" * OUTPUT_PREVIEW_CHARS,
        "é" * OUTPUT_PREVIEW_CHARS,
        "ü" * OUTPUT_PREVIEW_CHARS,
        "",
    ]
    assert [data["output_truncated"] for data in shown] == [False, True, True, False]
    assert shown[3]["error_message"] == "ö" * REASON_CHARS


async def test_the_text_bytes_migration_matches_the_model_and_goes_down_and_up(
    own_database: AsyncEngine,
) -> None:
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None, revision=TEXT_BYTES)
    async with own_database.connect() as connection:
        assert await connection.run_sync(model_differences, ["results"]) == []
    async with own_database.begin() as connection:
        await connection.run_sync(downgrade, BEFORE_TEXT_BYTES)
    async with own_database.connect() as connection:
        missing = await connection.run_sync(model_differences, ["results"])
    assert [(diff[0], diff[3].name) for diff in missing] == [("add_column", "text_bytes")]
    await migrate(url, None, revision=TEXT_BYTES)
    async with own_database.connect() as connection:
        assert await connection.run_sync(model_differences, ["results"]) == []


async def test_a_row_written_before_its_text_bytes_is_measured_by_its_headers(client, database):
    owner = await register(client)
    run = await _run(client, owner, cases=4, repetitions=1)
    third = "x" * (PAGE_BYTES // 3 + 1000)
    await _write(database, owner, run, [third] * 4)
    async with database.transaction(Tenant(owner.organization_id)) as session:
        await session.execute(
            update(Result).where(Result.run_id == uuid.UUID(run["id"])).values(text_bytes=None)
        )
    assert await _walk(client, owner, run, limit=100) == [[0, 1, 2], [3]]


async def test_a_flips_output_is_cut_and_flagged_by_its_characters(client, database):
    owner = await register(client)
    runs = [await _run(client, owner, cases=2, repetitions=1) for _ in range(2)]
    chars = flip_outputs.OUTPUT_CHARS
    await _write(database, owner, runs[0], ["é" * chars, "é" * (chars + 1) + "x" * (3 * MB)])
    await _write(database, owner, runs[1], ["short", "short"])
    flips = [flip_outputs.Flipped(f"k{p}", True, p, p) for p in range(2)]
    async with database.transaction(Tenant(owner.organization_id)) as session:
        baseline, candidate = [await session.get(Run, uuid.UUID(run["id"])) for run in runs]
        assert baseline is not None and candidate is not None
        found = await flip_outputs.flip_outputs(session, baseline, candidate, flips)
    shown = [found[f"k{p}", False] for p in range(2)]
    assert [output.output for output in shown] == ["é" * chars] * 2
    assert [output.truncated for output in shown] == [False, True]


async def test_a_batch_too_large_for_one_jsonb_value_is_written_in_parts(
    client, database, monkeypatch
):
    """PostgreSQL refuses a JSONB value past 256 MB: a chunk's batch of large results (each
    within its bounds, together past it) failed whole, and its chunk was run, and paid for,
    again and again. A batch past the bound is written in parts, in one transaction."""
    monkeypatch.setattr("utils.crud.MAX_DOCUMENT_CHARS", MB)  # the bound, scaled down
    owner = await register(client)
    run = await _run(client, owner, cases=6, repetitions=1)
    outputs = [chr(ord("a") + n) * (MB // 3) for n in range(6)]
    with statements_sent(database) as sent:
        ids = await _write(database, owner, run, outputs)
    inserts = [s for s in sent if s.startswith("INSERT INTO results")]
    assert len(inserts) >= 3  # about 2 MB of text, at most 1 MB a statement
    async with database.transaction(Tenant(owner.organization_id)) as session:
        stored = await session.execute(select(Result.id, Result.output).where(Result.id.in_(ids)))
        assert sorted(output for _, output in stored.all()) == outputs
