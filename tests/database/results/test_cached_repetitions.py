"""With the response cache, each repetition of a case has answers of its own: repetitions (and
those a repeat adds) sample the target and can show it is flaky, while a run made again with
the same settings is answered from the cache, repetition by repetition."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.database.results.conftest import Lab
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.slow

CASES = 4


def _target_calls(fake: FakeOpenAI) -> int:
    return len([r for r in fake.requests if r.path.endswith("/chat/completions")])


def _flip_a_coin_per_question(fake: FakeOpenAI) -> None:
    """A flaky model: each question is answered heads, then tails, then heads..."""
    asked: Counter[str] = Counter()

    def reply(body: dict[str, Any]) -> str:
        question = body["messages"][-1]["content"]
        asked[question] += 1
        return "heads" if asked[question] % 2 else "tails"

    fake.reply = reply


async def test_repetitions_with_the_cache_sample_the_target(lab: Lab, fake: FakeOpenAI):
    _flip_a_coin_per_question(fake)
    target = await lab.openai_model(fake)
    test_set = await lab.test_set(
        [{"input": f"q{i}", "expected_output": "heads"} for i in range(CASES)]
    )
    contains = await lab.metric("contains")
    run = await lab.run(test_set, target, metric_ids=[contains], use_cache=True, concurrency=1)
    assert (await lab.wait(run["id"]))["status"] == "completed"
    assert _target_calls(fake) == CASES

    await lab.post(f"/runs/{run['id']}/repeat", {"repetitions": 5, "cases": "all"}, expect=202)
    assert (await lab.wait(run["id"]))["status"] == "completed"
    assert _target_calls(fake) == CASES * 6  # each new repetition asked the target
    cases = (await lab.get(f"/runs/{run['id']}/cases"))["items"]
    assert [(c["repetitions"], c["passed"], c["flaky"]) for c in cases] == [(6, 3, True)] * CASES
    assert all(c["pass_hat_k"]["6"] == 0 for c in cases)

    # The same run again: every repetition answered from the cache, each with its own answer.
    again = await lab.run(
        test_set, target, metric_ids=[contains], use_cache=True, concurrency=1, repetitions=6
    )
    assert (await lab.wait(again["id"]))["status"] == "completed"
    assert _target_calls(fake) == CASES * 6

    def answers(results: list[dict[str, Any]]) -> dict[tuple[int, int], str]:
        return {(r["position"], r["repetition"]): r["output"] for r in results}

    replayed = await lab.results(again["id"])
    assert all(r["cached"] for r in replayed)
    assert answers(replayed) == answers(await lab.results(run["id"]))
