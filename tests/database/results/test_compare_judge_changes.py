"""A judge is part of what a metric measures: two runs whose metric another judge scored (a
different model, or the same one configured otherwise) are not compared on it, and a gate
cannot pass or fail on the judge."""

from __future__ import annotations

import json

import pytest

from tests.fakes.openai_server import echo_reply

pytestmark = pytest.mark.slow

# The judge's score by the model the request names; the target (fake-model) echoes.
SCORES = {"strict": 0.3, "lenient": 0.9}


def _reply(body: dict) -> str:
    score = SCORES.get(body.get("model", ""))
    if score is None:
        return echo_reply(body)
    return json.dumps({"score": score, "reason": "judged"})


async def _judge(lab, fake, model: str) -> str:
    return await lab.model(
        provider="openai-compatible", model=model, base_url=fake.base_url, api_key="sk-test"
    )


async def _runs(lab, fake, between) -> tuple[dict, dict, str, str]:
    """A run judged by a strict judge, `between` what changes the judge, and a gated run of
    the same cases judged as lenient: the comparison, the candidate ended, the metric's name
    and the first judge's id."""
    fake.reply = _reply
    target = await lab.openai_model(fake)
    judge = await _judge(lab, fake, "strict")
    test_set = await lab.test_set([{"input": f"question {i}"} for i in range(40)])
    relevance = await lab.metric("answer-relevance", judge_model_id=judge, threshold=0.5)
    baseline = await lab.run(test_set, target, metric_ids=[relevance])
    await lab.wait(baseline["id"], seconds=60)
    await between(relevance, judge)
    gate = {"baseline": baseline["id"]}
    candidate = await lab.run(test_set, target, metric_ids=[relevance], gate=gate)
    ended = await lab.wait(candidate["id"], seconds=60)
    response = await lab.client.get(
        f"/api/v1/runs/{candidate['id']}/compare",
        params={"baseline": baseline["id"]},
        headers=lab.account.headers,
    )
    assert response.status_code == 200, response.text
    name = (await lab.get(f"/metrics/{relevance}"))["name"]
    return response.json(), ended, name, judge


def _assert_not_compared(found: dict, ended: dict, name: str, change: str) -> None:
    [metric] = found["metrics"]
    why = f"its judge changed between the runs ({change})"
    assert metric["pass_rate"]["delta"] == 1.0  # every case fails the strict judge, none the other
    assert metric["pass_rate"]["verdict"] == "inconclusive"
    assert metric["pass_rate"]["reason"].endswith(f"not comparable: {why}"), metric
    assert metric["score"]["verdict"] == "inconclusive"
    assert metric["score"]["reason"].endswith(f"not comparable: {why}"), metric
    assert found["verdict"] == found["overall"]["verdict"] == "inconclusive"
    assert found["reason"].endswith(f"not comparable: {name}'s judge changed"), found["reason"]
    result = ended["gate_result"]
    assert result["status"] == "undecided", result
    assert any(reason.endswith(f"{name}'s judge changed") for reason in result["reasons"])


async def test_a_metric_judged_by_another_model_is_not_compared(lab, fake):
    lenient: list[str] = []

    async def another_judge(metric: str, judge: str) -> None:
        lenient.append(await _judge(lab, fake, "lenient"))
        changed = await lab.client.patch(
            f"/api/v1/metrics/{metric}",
            json={"judge_model_id": lenient[0]},
            headers=lab.account.headers,
        )
        assert changed.status_code == 200, changed.text

    found, ended, name, judge = await _runs(lab, fake, another_judge)
    _assert_not_compared(found, ended, name, f"judge model {judge} → {lenient[0]}")


async def test_a_metric_judged_by_its_judge_configured_otherwise_is_not_compared(lab, fake):
    async def judge_reconfigured(metric: str, judge: str) -> None:
        changed = await lab.client.patch(
            f"/api/v1/models/{judge}", json={"model": "lenient"}, headers=lab.account.headers
        )
        assert changed.status_code == 200, changed.text

    found, ended, name, judge = await _runs(lab, fake, judge_reconfigured)
    _assert_not_compared(found, ended, name, f"judge model {judge} configured otherwise")
