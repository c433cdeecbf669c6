"""`POST /runs` with an Idempotency-Key: sent again, the same request gives the same run (one
run, one set of jobs, one gate record); another request with the key is refused, naming it."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select

from database.organizations.models import AuditEntry
from tasks.models import Job
from tests.helpers import assert_problem, tenant_session

pytestmark = pytest.mark.slow


async def _ask(lab, body: dict, key: str | None):
    headers = {**lab.account.headers, **({"Idempotency-Key": key} if key else {})}
    return await lab.client.post("/api/v1/runs", json=body, headers=headers)


async def _body(lab, fake) -> dict:
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": f"q{i}"} for i in range(3)])
    return {
        "test_set_id": test_set,
        "target_model_id": target,
        "metric_ids": [await lab.any_answer()],
        "gate": {"min_pass_rate": 0.5},
    }


async def test_the_same_request_sent_again_gives_the_same_run(lab, fake, committed_database):
    body = await _body(lab, fake)
    key = str(uuid.uuid4())
    first = await _ask(lab, body, key)
    assert first.status_code == 202, first.text
    # The same request, written otherwise (the keys in another order), after the run ended.
    await lab.wait(first.json()["id"])
    again = await _ask(lab, dict(reversed(list(body.items()))), key)
    assert again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["status"] == "completed"
    # A field given at its default is the same request as the field left out.
    explicit = await _ask(lab, {**body, "repetitions": 1, "use_cache": False}, key)
    assert explicit.json()["id"] == first.json()["id"], explicit.text
    runs = await lab.get("/runs", project_id=lab.project_id)
    assert runs["total"] == 1
    run_id = first.json()["id"]
    async with tenant_session(committed_database, lab.account.organization_id) as session:
        chunks = await session.scalar(
            select(func.count()).select_from(Job).where(Job.payload["run_id"].astext == run_id)
        )
        gates = await session.scalar(
            select(func.count())
            .select_from(AuditEntry)
            .where(AuditEntry.action == "run.gate_set", AuditEntry.target_id == run_id)
        )
    assert (chunks, gates) == (1, 1)
    # Without a key, or with another, the same request is another run.
    assert (await _ask(lab, body, None)).json()["id"] != first.json()["id"]
    assert (await _ask(lab, body, str(uuid.uuid4()))).json()["id"] != first.json()["id"]


async def test_a_key_sent_with_another_request_is_refused_naming_it(lab, fake):
    body = await _body(lab, fake)
    key = str(uuid.uuid4())
    assert (await _ask(lab, body, key)).status_code == 202
    refused = await _ask(lab, {**body, "repetitions": 2}, key)
    assert_problem(refused, 422, field="Idempotency-Key")
    assert (await lab.get("/runs", project_id=lab.project_id))["total"] == 1
    for bad in ("", "a" * 201, "has space"):
        headers = {**lab.account.headers, "Idempotency-Key": bad}
        response = await lab.client.post("/api/v1/runs", json=body, headers=headers)
        assert response.status_code == 422, (bad, response.text)
        assert "Idempotency-Key" in response.text


async def test_requests_with_one_key_at_once_make_one_run(lab, fake):
    body = await _body(lab, fake)
    key = str(uuid.uuid4())
    answers = await asyncio.gather(*(_ask(lab, body, key) for _ in range(4)))
    assert [answer.status_code for answer in answers] == [202] * 4, [a.text for a in answers]
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert (await lab.get("/runs", project_id=lab.project_id))["total"] == 1
