"""A metric's floor doubts a rate met only without its errors as the overall floor does: case
by case, each errored repetition counted as a failure of that case. With repetitions, a rate
of cases scaled by counts of evaluations was wrong both ways (a floor missed passed, one met
was doubted)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text

from database.core import Tenant
from database.results import gates
from database.results.crud import get_run
from tests.helpers import create_run_body

_RESULTS = text("""
INSERT INTO results (id, organization_id, run_id, position, repetition, test_id, input, output,
                     status, latency_ms, input_tokens, output_tokens, cost, cached)
SELECT id, :organization, :run, position, repetition, test_id, '{}'::jsonb, 'answer', status,
       40, 10, 20, 0.001, false
FROM unnest(CAST(:ids AS UUID[]), CAST(:positions AS INT[]), CAST(:repetitions AS INT[]),
            CAST(:test_ids AS UUID[]), CAST(:statuses AS TEXT[]))
     AS r(id, position, repetition, test_id, status)
""")
_EVALUATIONS = text("""
INSERT INTO evaluations (id, organization_id, result_id, run_id, position, metric_name,
                         metric_type, score, passed, error)
SELECT gen_random_uuid(), :organization, r.id, :run, r.position, 'contains', 'contains',
       (r.status = 'passed')::int, r.status = 'passed', NULL
FROM results r WHERE r.run_id = :run AND r.status <> 'errored' AND r.position = ANY(:scored)
""")


async def _gated_run(
    client, database, owner, cases: list[list[str]], gate: dict[str, Any], unscored: int = -1
):
    """A run of `cases` (each a list of its repetitions' statuses) whose `contains` metric
    scored every repetition that did not err, but the case at `unscored` (none it does not
    apply to), ended through its gate: the gate's result."""
    test_ids, body = await create_run_body(
        client, owner, [{"input": f"q{i}"} for i in range(len(cases))]
    )
    repetitions = len(cases[0])
    body |= {"repetitions": repetitions, "gate": {"fail_on": "never", **gate}}
    created = await client.post("/api/v1/runs", json=body, headers=owner.headers)
    assert created.status_code == 202, created.text
    run_id = uuid.UUID(created.json()["id"])
    rows: dict[str, list[Any]] = {
        "ids": [],
        "positions": [],
        "repetitions": [],
        "test_ids": [],
        "statuses": [],
    }
    for position, statuses in enumerate(cases):
        for repetition, status in enumerate(statuses):
            row = (uuid.uuid4(), position, repetition, uuid.UUID(test_ids[position]), status)
            for key, value in zip(rows, row, strict=True):
                rows[key].append(value)
    params = {"organization": owner.organization_id, "run": run_id}
    async with database.transaction(Tenant(owner.organization_id)) as session:
        await session.execute(_RESULTS, params | rows)
        scored = [position for position in range(len(cases)) if position != unscored]
        await session.execute(_EVALUATIONS, params | {"scored": scored})
    async with database.transaction(Tenant(owner.organization_id)) as session:
        run = await get_run(session, run_id)
        assert run is not None
        await gates.end_run(session, run, "completed")
    found = await client.get(f"/api/v1/runs/{run_id}", headers=owner.headers)
    return found.json()["gate_result"]


@pytest.mark.parametrize("floor_of", ["overall", "metric"])
async def test_a_floor_met_only_without_errors_is_doubted_case_by_case(
    committed_client, committed_database, committed_owner, floor_of
):
    # One case passed once and erred nine times, the other failed ten times: 50% without
    # the errors, 5% with them, below a floor of 25%.
    cases = [["passed"] + ["errored"] * 9, ["failed"] * 10]
    gate = (
        {"min_pass_rate": 0.25}
        if floor_of == "overall"
        else {"min_metric_pass_rates": {"contains": 0.25}}
    )
    result = await _gated_run(
        committed_client, committed_database, committed_owner, cases, gate | {"max_error_rate": 1}
    )
    assert result["status"] == "undecided", result
    assert any("9 err" in r and "make it 5.0%" in r for r in result["reasons"]), result


@pytest.mark.parametrize("floor_of", ["overall", "metric"])
async def test_a_floor_met_with_errors_counted_as_failures_is_not_doubted(
    committed_client, committed_database, committed_owner, floor_of
):
    # One case passed ten times, the other failed once and erred nine times: 50% either way.
    cases = [["passed"] * 10, ["failed"] + ["errored"] * 9]
    gate = (
        {"min_pass_rate": 0.4}
        if floor_of == "overall"
        else {"min_metric_pass_rates": {"contains": 0.4}}
    )
    result = await _gated_run(
        committed_client, committed_database, committed_owner, cases, gate | {"max_error_rate": 1}
    )
    assert (result["status"], result["reasons"]) == ("passed", []), result


async def test_a_case_the_metric_does_not_apply_to_is_no_error_of_its_floor(
    committed_client, committed_database, committed_owner
):
    # The metric scored the first two cases' four repetitions, all passed; the third case it
    # does not apply to (it scored none of its repetitions, one of which did not err).
    cases = [["passed", "passed"], ["passed", "passed"], ["passed", "errored"]]
    gate = {"min_metric_pass_rates": {"contains": 0.9}, "max_error_rate": 1}
    result = await _gated_run(
        committed_client, committed_database, committed_owner, cases, gate, unscored=2
    )
    assert (result["status"], result["reasons"]) == ("passed", []), result
    # Whereas a case whose every repetition erred may be one it applies to: counted.
    cases[2] = ["errored", "errored"]
    result = await _gated_run(
        committed_client, committed_database, committed_owner, cases, gate, unscored=2
    )
    assert result["status"] == "undecided", result
    assert any("2 errors" in r and "make it 66.7%" in r for r in result["reasons"]), result
