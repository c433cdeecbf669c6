"""GET /runs/{id}/export streams: page by page, read as the caller, byte for byte the document
the whole-run export wrote before (kept below as the reference)."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Sequence
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
from sqlalchemy import insert, select, update

from database.core import Database, Tenant
from database.evaluations.models import Evaluation
from database.results import crud, export
from database.results.models import TERMINAL, Result, Run
from database.results.reads import result_reads
from database.results.schemas import ResultRead
from database.test_sets import crud as set_crud
from database.test_sets import streaming
from database.test_sets.streaming import PAGE_ROWS, GoneMidway, stream_pages
from tests.helpers import (
    Account,
    assert_problem,
    create_model,
    create_project,
    create_test_set,
    register,
)
from utils.auth import Principal, Role
from utils.csv_cells import guard_formula
from utils.ids import new_id

FORMATS = ("csv", "json", "junit")
MEDIA = {"csv": "text/csv", "json": "application/json", "junit": "application/xml"}
# Outputs that stress each format: separators, quotes, newlines, formula triggers, markup.
OUTPUTS = [
    'plain answer, with "quotes"',
    '=HYPERLINK("http://evil.example")',
    "-2 degrees\nsecond line",
    "<b>bold</b> & 'more' ]]>",
    "日本語 🚀",
    None,
]


# --- the export as it was: the whole run in memory (the reference) ---------------------------

_COLUMNS = (
    "position",
    "repetition",
    "test_id",
    "status",
    "input",
    "output",
    "latency_ms",
    "input_tokens",
    "output_tokens",
    "cost",
    "error_type",
    "error_message",
    "trajectory_summary",  # empty for a plain answer (these results are plain)
)


def _reference(run: Run, results: Sequence[ResultRead], fmt: str, set_name: str | None) -> bytes:
    if fmt == "json":
        dumped = [r.model_dump(mode="json") for r in results]
        return json.dumps(dumped, ensure_ascii=False, indent=2).encode()
    if fmt == "csv":
        planned = {m["name"] for m in run.metrics}
        names = sorted(planned | {e.metric_name for r in results for e in r.evaluations})
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([*_COLUMNS, *(f"score:{n}" for n in names)])
        for r in results:
            scores = {e.metric_name: e.score for e in r.evaluations}
            row = r.model_dump(mode="json") | {"trajectory_summary": None}
            row["input"] = r.input.get("text") or json.dumps(
                r.input.get("messages") or r.input, ensure_ascii=False
            )
            cells = [row[c] for c in _COLUMNS]
            cells = [
                guard_formula(v) if isinstance(v, str) else "" if v is None else v for v in cells
            ]
            writer.writerow(cells + [scores.get(n, "") for n in names])
        return buffer.getvalue().encode()
    classname = "assay." + (set_name or f"test set {run.test_set_id}").replace(".", "-")
    gate = run.gate_result
    unfinished = run.status not in TERMINAL  # (no worker runs these runs: they stay queued)
    suite = ElementTree.Element(
        "testsuite",
        name=run.name or f"assay run {run.id}",
        tests=str(len(results) + (gate is not None) + unfinished),
        failures=str(
            sum(r.status == "failed" for r in results) + ((gate or {}).get("status") == "failed")
        ),
        errors=str(
            sum(r.status == "errored" for r in results)
            + ((gate or {}).get("status") == "undecided")
            + unfinished
        ),
        time=f"{sum((r.latency_ms or 0) for r in results) / 1000:.3f}",
    )
    if unfinished:
        case = ElementTree.SubElement(suite, "testcase", classname=classname, name="run")
        message = f"the run is {run.status}: these are its results so far"
        ElementTree.SubElement(case, "error", message=message, type="unfinished").text = message
    if gate is not None:
        case = ElementTree.SubElement(suite, "testcase", classname=classname, name="gate")
        reasons = "; ".join(gate.get("reasons") or [])
        kind = {"failed": "failure", "undecided": "error"}.get(gate.get("status", ""))
        if kind:
            ElementTree.SubElement(case, kind, message=reasons, type="gate").text = reasons
    for r in results:
        name = str(r.test_id) if r.test_id else f"case {r.position}"
        case = ElementTree.SubElement(
            suite,
            "testcase",
            classname=classname,
            name=name + (f" #{r.repetition + 1}" if run.repetitions > 1 else ""),
            time=f"{(r.latency_ms or 0) / 1000:.3f}",
        )
        if r.status == "failed":
            message = "; ".join(
                f"{e.metric_name}: {e.reason}" for e in r.evaluations if not e.passed
            )
            ElementTree.SubElement(case, "failure", message=message).text = r.output or ""
        elif r.status == "errored":
            error = ElementTree.SubElement(
                case, "error", message=r.error_message or "", type=r.error_type or "error"
            )
            error.text = r.error_message or ""
        ElementTree.SubElement(case, "system-out").text = r.output or ""
    return ElementTree.tostring(suite, encoding="utf-8", xml_declaration=True)


# --- a run whose results are written straight into the database -------------------------------


async def _run(
    client: httpx.AsyncClient, owner: Account, cases: int, repetitions: int, **extra: Any
) -> dict[str, Any]:
    """A run, created through the API (no worker runs it here)."""
    project = await create_project(client, owner)
    created = await client.post(
        "/api/v1/tests/bulk",
        json={
            "project_id": project["id"],
            "tests": [{"input": f"question {i}"} for i in range(cases)],
        },
        headers=owner.headers,
    )
    assert created.status_code == 201, created.text
    test_set = await create_test_set(client, owner, project["id"], created.json()["ids"])
    metric = await client.post(
        "/api/v1/metrics",
        json={"project_id": project["id"], "name": "Zeta contains", "type": "contains"},
        headers=owner.headers,
    )
    body = {
        "test_set_id": test_set["id"],
        "target_model_id": (await create_model(client, owner))["id"],
        "metric_ids": [metric.json()["id"]],
        "repetitions": repetitions,
        **extra,
    }
    run = await client.post("/api/v1/runs", json=body, headers=owner.headers)
    assert run.status_code == 202, run.text
    return {**run.json(), "test_ids": created.json()["ids"]}


def _status(index: int) -> str:
    return ("passed", "failed", "errored")[index % 3]


async def _write_results(
    database: Database, owner: Account, run: dict[str, Any], outputs: Sequence[str | None]
) -> None:
    """One result per case and repetition, with varied content; evaluations by two metrics
    (one missing now and then), named so that Python and the database collation sort apart."""
    results, evaluations = [], []
    keys = [(p, r) for p in range(len(run["test_ids"])) for r in range(run["repetitions"])]
    for index, (position, repetition) in enumerate(keys):
        status = _status(index)
        result_id = new_id()
        results.append(
            {
                "id": result_id,
                "organization_id": owner.organization_id,
                "run_id": uuid.UUID(run["id"]),
                "position": position,
                "repetition": repetition,
                "test_id": uuid.UUID(run["test_ids"][position]),
                "input": {"text": f"question {position}"}
                if position % 4
                else {"messages": [{"role": "user", "content": f"+{position}"}]},
                "output": outputs[index % len(outputs)],
                "status": status,
                "latency_ms": None if index % 7 == 0 else 10.125 + index,
                "input_tokens": index,
                "output_tokens": None if index % 5 == 0 else 2 * index,
                "cost": 0.000125 * index,
                "cached": False,
                "error_type": "timeout" if status == "errored" else None,
                "error_message": f"@took {index} s" if status == "errored" else None,
            }
        )
        if status == "errored":
            continue
        for name, score in (("Zeta contains", 1.0), ("alpha relevance", index / 1000)):
            if name.startswith("alpha") and index % 4 == 1:
                continue
            evaluations.append(
                {
                    "organization_id": owner.organization_id,
                    "result_id": result_id,
                    "run_id": uuid.UUID(run["id"]),
                    "position": position,
                    "metric_name": name,
                    "metric_type": "contains" if name.startswith("Zeta") else "relevance",
                    "score": score,
                    "passed": status == "passed",
                    "reason": None if index % 2 else f'reason <{index}>, "=quoted"',
                }
            )
    async with database.transaction(Tenant(owner.organization_id)) as session:
        await session.execute(insert(Result), results)
        if evaluations:
            await session.execute(insert(Evaluation), evaluations)


async def _reference_for(
    database: Database, owner: Account, run_id: str, fmt: str
) -> tuple[bytes, list[ResultRead]]:
    async with database.transaction(Tenant(owner.organization_id)) as session:
        run = await crud.get_run(session, uuid.UUID(run_id))
        assert run is not None
        rows = await session.execute(
            select(*Result.__table__.columns)
            .where(Result.run_id == run.id)
            .order_by(Result.position, Result.repetition)
        )
        results = await result_reads(session, list(rows.all()))
        test_set = (
            await set_crud.get_test_set(session, run.test_set_id) if run.test_set_id else None
        )
        return _reference(run, results, fmt, test_set.name if test_set else None), results


async def _export(client: httpx.AsyncClient, account: Account, run_id: str, fmt: str):
    return await client.get(
        f"/api/v1/runs/{run_id}/export", params={"format": fmt}, headers=account.headers
    )


# --- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_run_of_several_pages_exports_as_it_always_did(client, database, fmt):
    # 3 repetitions of 200 cases: a page ends between two repetitions of one case.
    owner = await register(client)
    run = await _run(client, owner, cases=200, repetitions=3, name='nightly "<run>" & co')
    await _write_results(database, owner, run, OUTPUTS)
    assert PAGE_ROWS < 600 and PAGE_ROWS % 3

    response = await _export(client, owner, run["id"], fmt)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(MEDIA[fmt])
    extension = "xml" if fmt == "junit" else fmt
    assert response.headers["content-disposition"] == (
        f'attachment; filename="run-{run["id"]}.{extension}"'
    )
    expected, results = await _reference_for(database, owner, run["id"], fmt)
    assert response.content == expected

    # complete and in order, by each format's own reading
    keys = [(r.position, r.repetition) for r in results]
    assert keys == [(p, r) for p in range(200) for r in range(3)]
    if fmt == "json":
        assert [(r["position"], r["repetition"]) for r in response.json()] == keys
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [(int(r["position"]), int(r["repetition"])) for r in rows] == keys
        assert list(rows[0])[-2:] == ["score:Zeta contains", "score:alpha relevance"]
        assert all(cell[:1] not in "=+-@" for row in rows for cell in row.values() if cell)
    else:
        suite = ElementTree.fromstring(response.content)
        names = [case.get("name") for case in suite.iter("testcase")]
        assert names == ["run", *(f"{run['test_ids'][p]} #{r + 1}" for p, r in keys)]
        assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == (
            "601",  # (the run's own case: it has not ended)
            "200",
            "201",
        )


async def test_json_pages_of_results_as_read_are_written_by_orjson(client, database, monkeypatch):
    """The standard library's writer is for what orjson refuses (an integer beyond 64 bits),
    not for results as read (ids of asyncpg's own class, say): it takes several times longer."""
    owner = await register(client)
    run = await _run(client, owner, cases=7, repetitions=2)
    await _write_results(database, owner, run, OUTPUTS)

    def refused(dumped: list[Any]) -> bytes:
        raise AssertionError("a page was written by the standard library")

    monkeypatch.setattr(streaming, "_standard_elements", refused)
    response = await _export(client, owner, run["id"], "json")
    assert response.content == (await _reference_for(database, owner, run["id"], "json"))[0]


async def test_the_junit_gate_case_and_a_single_repetition(client, database):
    owner = await register(client)
    run = await _run(client, owner, cases=7, repetitions=1)
    await _write_results(database, owner, run, OUTPUTS)
    gate = {"status": "failed", "reasons": ["pass rate regressed: 90% → 80% <worse>"]}
    async with database.transaction(Tenant(owner.organization_id)) as session:
        await session.execute(
            update(Run).where(Run.id == uuid.UUID(run["id"])).values(gate_result=gate)
        )
    for fmt in FORMATS:
        response = await _export(client, owner, run["id"], fmt)
        assert response.content == (await _reference_for(database, owner, run["id"], fmt))[0]
    suite = ElementTree.fromstring(response.content)
    names = [c.get("name") for c in suite.iter("testcase")]
    assert names[:3] == ["run", "gate", run["test_ids"][0]]


async def test_a_run_without_results(client, database):
    owner = await register(client)
    run = await _run(client, owner, cases=2, repetitions=1)
    assert (await _export(client, owner, run["id"], "json")).content == b"[]"
    csv_export = await _export(client, owner, run["id"], "csv")
    assert csv_export.content == (await _reference_for(database, owner, run["id"], "csv"))[0]
    # A metric the run plans has its column before anything has scored it.
    assert csv_export.text.splitlines()[0].endswith(",score:Zeta contains")
    junit = await _export(client, owner, run["id"], "junit")
    expected = (await _reference_for(database, owner, run["id"], "junit"))[0]
    # The same document: no result, only the case saying the run has not ended.
    assert junit.content == expected
    assert [case.get("name") for case in ElementTree.fromstring(junit.content)] == ["run"]


async def test_junit_stays_well_formed_with_control_characters(client, database):
    owner = await register(client)
    run = await _run(client, owner, cases=3, repetitions=1, name="run \x07 bell")
    await _write_results(database, owner, run, ["\x1b[31mred\x1b[0m", "tab \x0b vertical", "ok"])
    response = await _export(client, owner, run["id"], "junit")
    suite = ElementTree.fromstring(response.content)
    assert suite.get("name") == "run \ufffd bell"
    outputs = [case.findtext("system-out") for case in suite.iter("testcase")][1:]  # (run)
    assert outputs[0] == "\ufffd[31mred\ufffd[0m"


async def test_another_organization_gets_404_and_a_bad_format_422(client, database):
    owner = await register(client)
    run = await _run(client, owner, cases=2, repetitions=1)
    await _write_results(database, owner, run, OUTPUTS)
    stranger = await register(client)
    for fmt in FORMATS:
        assert_problem(await _export(client, stranger, run["id"], fmt), 404)
    assert_problem(await _export(client, owner, run["id"], "xlsx"), 422, field="format")
    assert_problem(await _export(client, owner, str(uuid.uuid4()), "csv"), 404)


async def test_the_pages_are_read_as_the_caller(client, database):
    """The streamed body reads with transactions of its own, acting for the caller: given the
    very run, another organization's principal reads no row of it (row-level security), nor
    the run, so its document ends as an error after its head."""
    owner = await register(client)
    run = await _run(client, owner, cases=3, repetitions=1)
    await _write_results(database, owner, run, OUTPUTS)
    stranger = await register(client)

    async def body(principal: Principal) -> bytes:
        async with database.transaction(Tenant(owner.organization_id)) as session:
            found = await crud.get_run(session, uuid.UUID(run["id"]))
            assert found is not None
            chunks = await export.export_run(session, principal, found, "json")
        return b"".join([chunk async for chunk in chunks])

    as_owner = Principal(organization_id=owner.organization_id, role=Role.viewer)
    as_stranger = Principal(organization_id=stranger.organization_id, role=Role.viewer)
    assert len(json.loads(await body(as_owner))) == 3
    with pytest.raises(GoneMidway):
        await body(as_stranger)


async def test_stream_pages_stops_at_the_end_and_skips_empty_pages(database):
    pages: list[list[int] | None] = [[1, 2], [], [3], None]

    class Numbers:
        def head(self) -> bytes:
            return b"<"

        def page(self, items: Sequence[int]) -> bytes:
            return b",".join(str(i).encode() for i in items) + b";"

        def tail(self) -> bytes:
            return b">"

    async def read(_session: Any) -> list[int] | None:
        return pages.pop(0)

    principal = Principal(organization_id=uuid.uuid4(), role=Role.viewer)
    chunks = [chunk async for chunk in stream_pages(principal, read, Numbers())]
    assert chunks == [b"<", b"1,2;", b"3;", b">"]
    assert pages == []
