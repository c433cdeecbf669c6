"""The JUnit export of a run not ended yet is partial: it leads with a case in error saying so,
so that no CI system shows it green (a step publishing it `if: always()` would show a pass)."""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

from tests.database.results.conftest import Lab
from tests.fakes.openai_server import FakeOpenAI

CASES = 6


async def _junit(lab: Lab, run_id: str) -> ElementTree.Element:
    response = await lab.client.get(
        f"/api/v1/runs/{run_id}/export", params={"format": "junit"}, headers=lab.account.headers
    )
    assert response.status_code == 200, response.text
    return ElementTree.fromstring(response.content)


def _totals(suite: ElementTree.Element) -> tuple[Any, ...]:
    return suite.get("tests"), suite.get("failures"), suite.get("errors")


async def test_a_running_runs_junit_says_it_is_unfinished_and_the_ended_one_does_not(
    lab: Lab, fake: FakeOpenAI
) -> None:
    fake.latency = 1.0
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": f"q{i}"} for i in range(CASES)])
    metric = await lab.any_answer()
    run = await lab.run(test_set, target, metric_ids=[metric], concurrency=1)
    await lab.wait_for_results(run["id"], 1)

    running = await _junit(lab, run["id"])
    fake.latency = 0.0
    ended = await _junit(lab, (await lab.wait(run["id"]))["id"])

    first = running.find("testcase")
    assert first is not None and first.get("name") == "run", ElementTree.tostring(running)
    error = first.find("error")
    assert error is not None, ElementTree.tostring(first)
    assert error.get("type") == "unfinished"
    assert error.get("message") == "the run is running: these are its results so far"
    cases = running.findall("testcase")
    assert running.get("errors") == "1" and running.get("failures") == "0"
    assert running.get("tests") == str(len(cases)) and 1 < len(cases) <= CASES + 1

    assert _totals(ended) == (str(CASES), "0", "0")
    assert "run" not in [case.get("name") for case in ended.iter("testcase")]


async def test_a_queued_runs_junit_without_results_is_not_empty_and_green(quiet_lab: Lab) -> None:
    target = await quiet_lab.model(provider="openai-compatible", model="m", base_url="http://x")
    test_set = await quiet_lab.test_set([{"input": "q"}])
    run = await quiet_lab.run(test_set, target, metric_ids=[await quiet_lab.any_answer()])

    suite = await _junit(quiet_lab, run["id"])

    assert _totals(suite) == ("1", "0", "1")
    (case,) = suite.findall("testcase")
    error = case.find("error")
    assert case.get("name") == "run" and error is not None
    assert error.get("message") == "the run is queued: these are its results so far"
