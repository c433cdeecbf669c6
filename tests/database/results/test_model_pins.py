"""A run's models are the ones it was made with: a chunk that finds its target changed since
(another model, address or parameters) fails the run saying so, and asks nothing; a change
that alters no answer (a name, a rotated key, a timeout) lets it go on."""

from __future__ import annotations

from typing import Any

from app.engine import executor
from database.core import Database
from tests.database.results.conftest import ChunkContext, Lab
from tests.fakes.openai_server import FakeOpenAI

CASES = 3


async def _first_case_run(lab: Lab, fake: FakeOpenAI, database: Database) -> tuple[str, str]:
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": f"q{i}"} for i in range(CASES)])
    run = await lab.run(test_set, target, metric_ids=[await lab.any_answer()], concurrency=1)
    await _chunk(lab, database, run["id"], [0])
    assert (await lab.get(f"/runs/{run['id']}"))["counts"]["done"] == 1
    return run["id"], target


async def _whole_run(
    lab: Lab, fake: FakeOpenAI, database: Database
) -> tuple[dict[str, Any], str, str]:
    """A run of CASES cases, its one chunk run; its target and test set."""
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": f"q{i}"} for i in range(CASES)])
    run = await lab.run(test_set, target, metric_ids=[await lab.any_answer()])
    await _chunk(lab, database, run["id"], list(range(CASES)))
    return run, target, test_set


async def _chunk(lab: Lab, database: Database, run_id: str, positions: list[int]) -> None:
    payload: dict[str, Any] = {"run_id": run_id, "positions": positions, "repetitions": [0, 1]}
    organization = lab.account.organization_id
    await executor.run_chunk(ChunkContext(database, organization, payload))


async def _patch(lab: Lab, model_id: str, body: dict[str, Any]) -> None:
    response = await lab.client.patch(
        f"/api/v1/models/{model_id}", json=body, headers=lab.account.headers
    )
    assert response.status_code == 200, response.text


async def test_a_run_whose_model_changed_midway_fails_and_asks_the_new_one_nothing(
    quiet_lab: Lab, fake: FakeOpenAI, committed_database: Database
) -> None:
    run_id, target = await _first_case_run(quiet_lab, fake, committed_database)
    await _patch(quiet_lab, target, {"model": "another-model"})
    fake.reset()
    await _chunk(quiet_lab, committed_database, run_id, [1, 2])
    run = await quiet_lab.get(f"/runs/{run_id}")
    assert run["status"] == "failed"
    assert "was changed since the run was made" in run["error"], run["error"]
    assert run["counts"]["done"] == 1
    assert fake.requests == []


async def test_a_change_that_alters_no_answer_lets_the_run_go_on(
    quiet_lab: Lab, fake: FakeOpenAI, committed_database: Database
) -> None:
    run_id, target = await _first_case_run(quiet_lab, fake, committed_database)
    # Streaming turned on to watch the rest of the run live changes no answer either.
    renamed = {"name": "renamed", "timeout_seconds": 30, "api_key": "sk-test", "stream": True}
    await _patch(quiet_lab, target, renamed)
    await _chunk(quiet_lab, committed_database, run_id, [1, 2])
    run = await quiet_lab.get(f"/runs/{run_id}")
    assert (run["status"], run["counts"]["done"]) == ("completed", CASES)


async def test_a_run_whose_model_changed_is_neither_repeated_nor_resumed(
    quiet_lab: Lab, fake: FakeOpenAI, committed_database: Database
) -> None:
    lab = quiet_lab
    run, target, test_set = await _whole_run(lab, fake, committed_database)
    assert (await lab.get(f"/runs/{run['id']}"))["status"] == "completed"
    await _patch(lab, target, {"parameters": {"temperature": 0.9}})

    repeated = await lab.post(f"/runs/{run['id']}/repeat", {"repetitions": 1, "cases": "all"})
    assert repeated.status_code == 409, repeated.text
    assert "was changed since the run was made" in repeated.json()["detail"]
    other = await lab.run(test_set, target, metric_ids=[await lab.any_answer()])
    await lab.post(f"/runs/{other['id']}/cancel", {}, expect=200)
    await _patch(lab, target, {"parameters": {"temperature": 0.1}})
    resumed = await lab.post(f"/runs/{other['id']}/resume", {})
    assert resumed.status_code == 409, resumed.text
    assert "was changed since the run was made" in resumed.json()["detail"]


async def test_a_rerun_is_a_new_run_of_the_model_as_it_is_now(
    quiet_lab: Lab, fake: FakeOpenAI, committed_database: Database
) -> None:
    lab = quiet_lab
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": "q", "expected_output": "never said"}])
    failing = await lab.metric("contains")
    run = await lab.run(test_set, target, metric_ids=[failing])
    await _chunk(lab, committed_database, run["id"], [0])
    await _patch(lab, target, {"model": "another-model"})
    rerun = (await lab.post(f"/runs/{run['id']}/rerun", {}, expect=202)).json()
    await _patch(lab, target, {"model": "a-third-model"})
    await _chunk(lab, committed_database, rerun["id"], [0])
    child = await lab.get(f"/runs/{rerun['id']}")
    assert child["status"] == "failed"
    assert "was changed since the run was made" in child["error"], child["error"]


async def test_a_rescore_is_held_to_its_judges_not_to_the_target_it_never_asks(
    quiet_lab: Lab, fake: FakeOpenAI, committed_database: Database
) -> None:
    lab = quiet_lab
    run, target, _ = await _whole_run(lab, fake, committed_database)
    body = {"metric_ids": [await lab.metric("contains", parameters={"value": "q"})]}
    rescore = (await lab.post(f"/runs/{run['id']}/rescore", body, expect=202)).json()
    await _patch(lab, target, {"model": "another-model"})
    await _chunk(lab, committed_database, rescore["id"], list(range(CASES)))
    done = await lab.get(f"/runs/{rescore['id']}")
    assert (done["status"], done["counts"]["done"]) == ("completed", CASES), done
