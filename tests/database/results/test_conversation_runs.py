"""Conversations in runs: scripted user turns with the history kept, and simulated users (a
second fake model playing the user) that reach their goal, or run out of turns; every turn
stored and streamed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from app.engine import executor
from database.core import Database
from tests.database.results.conftest import ChunkContext, Lab
from tests.fakes.openai_server import FakeOpenAI, message_text
from tests.fakes.server import Fault
from tests.helpers import assert_problem


def _counting(request: dict[str, Any]) -> str:
    """Says how many user messages it has seen, and repeats the last."""
    users = [m for m in request["messages"] if m["role"] == "user"]
    return f"{len(users)} heard; last: {message_text(users[-1])}"


def _simulator(*script: dict[str, str]) -> Any:
    """Answers the simulator's requests with `script` in order (the last one from then on)."""
    answers = iter(script)
    last = script[-1]

    def reply(request: dict[str, Any]) -> str:
        nonlocal last
        last = next(answers, last)
        return json.dumps(last)

    return reply


@pytest.fixture
def simulator() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


async def _events(owner_engine, run_id: str, kind: str) -> list[dict[str, Any]]:
    async with owner_engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT data FROM run_events WHERE run_id = :id AND type = :t ORDER BY seq"),
            {"id": run_id, "t": kind},
        )
        return [data for (data,) in rows.all()]


async def test_a_scripted_conversation_of_five_turns_keeps_its_history(lab, fake, owner_engine):
    fake.reply = _counting
    target = await lab.openai_model(fake)
    turns = [f"message {i}" for i in range(1, 6)]
    test_set = await lab.test_set([{"conversation": {"turns": turns}}])
    contains = await lab.metric("contains", parameters={"value": "heard", "scope": "all"})
    run = await lab.run(test_set, target, metric_ids=[contains])
    done = await lab.wait(run["id"])
    (result,) = await lab.results(run["id"])
    assert done["counts"]["passed"] == 1, result

    transcript = result["trajectory"]
    assert [turn["user"] for turn in transcript] == turns
    assert [turn["text"] for turn in transcript] == [
        f"{i} heard; last: message {i}" for i in range(1, 6)
    ]
    assert transcript[-1]["ended"] == "script_done"
    assert result["output"] == "5 heard; last: message 5"
    # Each call carried the whole conversation so far: user, assistant, user, ...
    sent = [request.json["messages"] for request in fake.requests]
    assert [len(messages) for messages in sent] == [1, 3, 5, 7, 9]
    assert [m["role"] for m in sent[-1]] == ["user", "assistant"] * 4 + ["user"]
    assert sent[-1][3]["content"] == "2 heard; last: message 2"

    streamed = await _events(owner_engine, run["id"], "turn.completed")
    assert [event["turn"] for event in streamed] == [1, 2, 3, 4, 5]
    assert streamed[-1]["ended"] == "script_done"


async def test_a_simulated_user_reaches_its_goal(lab, fake, simulator):
    fake.reply = _counting
    simulator.reply = _simulator(
        {"status": "continue", "message": "I need a refund"},
        {"status": "continue", "message": "Order 42"},
        {"status": "goal_reached", "message": ""},
    )
    target = await lab.openai_model(fake)
    playing = await lab.model(
        provider="openai-compatible", model="sim", base_url=simulator.base_url, api_key="k"
    )
    conversation = {"simulated": {"persona": "A customer", "goal": "Get a refund"}}
    test_set = await lab.test_set([{"conversation": conversation}])
    run = await lab.run(
        test_set,
        target,
        metric_ids=[await lab.metric("word-count", parameters={"min": 1})],
        simulator_model_id=playing,
    )
    await lab.wait(run["id"])
    (result,) = await lab.results(run["id"])
    transcript = result["trajectory"]
    assert [turn["user"] for turn in transcript] == ["I need a refund", "Order 42"]
    assert transcript[-1]["ended"] == "goal_reached"
    assert len(fake.requests) == 2 and len(simulator.requests) == 3
    persona = simulator.requests[0].json["messages"][0]["content"]
    assert "A customer" in persona and "Get a refund" in persona
    assert "Order 42" not in json.dumps(simulator.requests[1].json)  # not said yet
    assert "I need a refund" in json.dumps(simulator.requests[1].json)
    assert result["input"]["conversation"]["simulated"]["goal"] == "Get a refund"


async def test_a_simulated_user_that_never_gets_there_stops_at_max_turns(lab, fake, simulator):
    simulator.reply = _simulator({"status": "continue", "message": "Still waiting"})
    target = await lab.openai_model(fake)
    playing = await lab.model(
        provider="openai-compatible", model="sim", base_url=simulator.base_url, api_key="k"
    )
    conversation = {
        "simulated": {
            "persona": "Impatient",
            "goal": "A discount",
            "first_message": "Hi",
            "max_turns": 3,
        }
    }
    test_set = await lab.test_set([{"conversation": conversation}])
    run = await lab.run(
        test_set,
        target,
        metric_ids=[await lab.metric("word-count", parameters={"min": 1})],
        simulator_model_id=playing,
    )
    await lab.wait(run["id"])
    (result,) = await lab.results(run["id"])
    transcript = result["trajectory"]
    assert [turn["user"] for turn in transcript] == ["Hi", "Still waiting", "Still waiting"]
    assert transcript[-1]["ended"] == "max_turns"
    # Turns 2 and 3, then its last word (the first message was the test's own).
    assert len(simulator.requests) == 3


async def test_a_goal_reached_on_the_last_turn_is_told_from_running_out(lab, fake, simulator):
    simulator.reply = _simulator(
        {"status": "continue", "message": "Refund please"},
        {"status": "goal_reached", "message": ""},
    )
    target = await lab.openai_model(fake)
    playing = await lab.model(
        provider="openai-compatible", model="sim", base_url=simulator.base_url, api_key="k"
    )
    conversation = {"simulated": {"persona": "P", "goal": "A refund", "max_turns": 1}}
    test_set = await lab.test_set([{"conversation": conversation}])
    run = await lab.run(
        test_set,
        target,
        metric_ids=[await lab.metric("word-count", parameters={"min": 1})],
        simulator_model_id=playing,
    )
    await lab.wait(run["id"])
    (result,) = await lab.results(run["id"])
    assert [turn["user"] for turn in result["trajectory"]] == ["Refund please"]
    assert result["trajectory"][-1]["ended"] == "goal_reached"


async def test_a_failing_simulator_errors_the_case_and_the_run_goes_on(lab, fake, simulator):
    simulator.enqueue(Fault.http(400))
    target = await lab.openai_model(fake)
    playing = await lab.model(
        provider="openai-compatible", model="sim", base_url=simulator.base_url, api_key="k"
    )
    simulated = {"simulated": {"persona": "P", "goal": "G"}}
    test_set = await lab.test_set([{"conversation": simulated}, {"input": "plain"}])
    run = await lab.run(
        test_set,
        target,
        metric_ids=[await lab.metric("word-count", parameters={"min": 1})],
        simulator_model_id=playing,
        concurrency=1,
    )
    done = await lab.wait(run["id"])
    assert done["status"] == "completed"
    first, second = sorted(await lab.results(run["id"]), key=lambda r: r["position"])
    assert first["status"] == "errored" and first["error_type"] == "simulator_error"
    assert "simulated user's model failed" in first["error_message"]
    assert second["status"] == "passed"


_SIMULATED = [{"conversation": {"simulated": {"persona": "P", "goal": "G"}}}]


async def test_without_a_simulator_a_simulated_test_is_refused(lab, fake):
    target = await lab.openai_model(fake)
    test_set = await lab.test_set(_SIMULATED)
    metric = await lab.metric("is-json")
    refused = await lab.post(
        "/runs", {"test_set_id": test_set, "target_model_id": target, "metric_ids": [metric]}
    )
    assert "simulated users" in assert_problem(refused, 422, field="simulator_model_id")["detail"]


async def test_a_simulator_deleted_once_the_run_was_made_errs_its_cases(
    quiet_lab: Lab, fake: FakeOpenAI, simulator: FakeOpenAI, committed_database: Database
) -> None:
    lab = quiet_lab
    target = await lab.openai_model(fake)
    metric = await lab.metric("is-json")
    playing = await lab.model(
        provider="openai-compatible", model="sim", base_url=simulator.base_url, api_key="k"
    )
    run = await lab.run(
        await lab.test_set(_SIMULATED), target, metric_ids=[metric], simulator_model_id=playing
    )
    deleted = await lab.client.delete(f"/api/v1/models/{playing}", headers=lab.account.headers)
    assert deleted.status_code == 204
    # The run's one chunk, run only now (no worker claims it here): its simulator is gone, and
    # the case is a configuration error.
    payload = {"run_id": run["id"], "positions": [0], "chunks": 1, "repetitions": [0, 1]}
    organization = lab.account.organization_id
    await executor.run_chunk(ChunkContext(committed_database, organization, payload))
    (result,) = await lab.results(run["id"])
    assert result["status"] == "errored", result
    assert not simulator.requests


async def test_a_cached_conversation_replays_its_turns(lab, fake):
    fake.reply = _counting
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"conversation": {"turns": ["one", "two", "three"]}}])
    metric = await lab.metric("word-count", parameters={"min": 1, "scope": "each"})
    first = await lab.run(test_set, target, metric_ids=[metric], use_cache=True)
    await lab.wait(first["id"])
    again = await lab.run(test_set, target, metric_ids=[metric], use_cache=True)
    await lab.wait(again["id"])
    assert len(fake.requests) == 3  # the second run's three turns came from the cache
    (original,) = await lab.results(first["id"])
    (replayed,) = await lab.results(again["id"])
    assert replayed["cached"]
    assert [t["text"] for t in replayed["trajectory"]] == [
        t["text"] for t in original["trajectory"]
    ]
    assert replayed["status"] == "passed"


async def test_a_simulated_user_answering_past_the_decoders_depth_is_read_as_text(
    lab, fake, simulator
):
    """Its answer nested 5,000 deep raised a RecursionError that failed the whole chunk, five
    times over, and then the run: it is taken as the message it sent, as text is."""
    deep = '{"status": "continue", "message": "hi", "x": ' + "[" * 5000 + "]" * 5000 + "}"
    answers = iter([deep])
    simulator.reply = lambda request: next(answers, json.dumps({"status": "goal_reached"}))
    done = await _simulated_run(lab, fake, simulator, [*_SIMULATED, {"input": "plain"}])
    assert done["status"] == "completed", done
    first, second = sorted(await lab.results(done["id"]), key=lambda r: r["position"])
    assert first["trajectory"][0]["user"] == deep
    assert second["status"] == "passed"


async def test_a_simulated_user_ending_before_it_began_errors_the_case(lab, fake, simulator):
    """Scored, its empty transcript passed with no call of the target made."""
    simulator.reply = _simulator({"status": "goal_reached", "message": ""})
    run = await _simulated_run(lab, fake, simulator, _SIMULATED, words={"max": 100})
    (result,) = await lab.results(run["id"])
    assert (result["status"], result["error_type"]) == ("errored", "simulator_error")
    assert "before it began" in result["error_message"]
    assert len(fake.requests) == 0


@pytest.mark.parametrize(("parameters", "sent"), [({}, 0), ({"temperature": 1}, 1)])
async def test_the_simulated_user_is_asked_at_its_models_own_temperature_if_it_has_one(
    lab, fake, simulator, parameters, sent
):
    """At temperature 0 always, a reasoning model (which refuses any other) failed every
    simulated test; a judge already kept the model's own."""
    simulator.reply = _simulator(
        {"status": "continue", "message": "Hello"}, {"status": "goal_reached", "message": ""}
    )
    await _simulated_run(lab, fake, simulator, _SIMULATED, parameters=parameters)
    assert [request.json["temperature"] for request in simulator.requests] == [sent, sent]


async def test_each_turn_of_a_conversation_goes_through_the_prompts_template(lab, fake):
    """The template was rendered once, with an empty input, and sent as a stray first user
    message; the turns themselves went as they were."""
    fake.reply = _counting
    cases = [{"conversation": {"turns": ["hi", "bye"]}, "variables": {"tone": "briefly"}}]
    run = await _prompted_run(
        lab,
        cases,
        await lab.openai_model(fake),
        template="Answer {{ tone }}: {{ input }}",
        system_prompt="You are terse.",
    )
    (result,) = await lab.results(run["id"])
    last = fake.requests[-1].json["messages"]
    assert [(m["role"], m["content"]) for m in last if m["role"] != "assistant"] == [
        ("system", "You are terse."),
        ("user", "Answer briefly: hi"),
        ("user", "Answer briefly: bye"),
    ]
    assert [turn["user"] for turn in result["trajectory"]] == ["hi", "bye"]


async def test_a_turn_the_prompts_template_refuses_errors_its_case(lab, fake):
    cases: list[dict[str, Any]] = [{"conversation": {"turns": ["hi", "bye"]}}, {"input": "hi"}]
    template = "{{ {'hi': 'Hello'}[input] }}"
    run = await _prompted_run(lab, cases, await lab.openai_model(fake), template=template)
    assert run["status"] == "completed"
    talk, plain = sorted(await lab.results(run["id"]), key=lambda r: r["position"])
    assert (talk["status"], talk["error_type"]) == ("errored", "configuration_error")
    assert "template variable problem" in talk["error_message"]
    assert plain["status"] == "passed"


async def test_a_conversations_turns_are_bounded_together(lab, fake, monkeypatch):
    """Each turn's agent loop had a budget of its own: 50 turns of 16 MB made one result's
    transcript past what PostgreSQL stores. The conversation ends where its turns would hold
    more than the bound."""
    from app.engine import agent

    monkeypatch.setattr(agent, "MAX_TRAJECTORY_BYTES", 3_000)
    fake.reply = lambda request: "x" * 1_000
    target = await lab.openai_model(fake)
    turns = [f"turn {i}" for i in range(6)]
    test_set = await lab.test_set([{"conversation": {"turns": turns}}])
    run = await lab.run(
        test_set, target, metric_ids=[await lab.metric("word-count", parameters={"min": 1})]
    )
    await lab.wait(run["id"])
    (result,) = await lab.results(run["id"])
    transcript = result["trajectory"]
    assert len(transcript) == 3 and len(fake.requests) == 3
    assert transcript[-1]["ended"] == "size"


async def test_a_conversations_own_input_and_messages_go_through_the_template(lab, fake):
    fake.reply = _counting
    case = {
        "input": "opening",
        "messages": [{"role": "user", "content": "earlier"}],
        "conversation": {"turns": ["hi"]},
    }
    template = "{{ input }} (after {{ messages|length }})"
    await _prompted_run(lab, [case], await lab.openai_model(fake), template=template)
    sent = [m["content"] for m in fake.requests[-1].json["messages"] if m["role"] == "user"]
    assert sent == ["earlier", "opening (after 1)", "hi (after 1)"]


async def _prompted_run(lab, cases: list[dict[str, Any]], target: str, **prompt: str) -> dict:
    """A run of `cases` through a prompt of these fields, ended."""
    test_set = await lab.test_set(cases)
    made = await lab.post(
        "/prompts", {"project_id": lab.project_id, "name": "p", **prompt}, expect=201
    )
    run = await lab.run(
        test_set,
        target,
        prompt_id=made.json()["id"],
        metric_ids=[await lab.metric("word-count", parameters={"min": 1})],
        concurrency=1,
    )
    return dict(await lab.wait(run["id"]))


async def _simulated_run(
    lab,
    fake: FakeOpenAI,
    simulator: FakeOpenAI,
    cases: list[dict[str, Any]],
    *,
    words: dict[str, int] | None = None,
    parameters: dict[str, Any] | None = None,
) -> dict:
    """A run of `cases` against `fake`, its simulated users played by `simulator` (a model of
    these parameters), scored by a word count, ended."""
    playing = await lab.model(
        provider="openai-compatible",
        model="sim",
        base_url=simulator.base_url,
        api_key="k",
        parameters=parameters or {},
    )
    run = await lab.run(
        await lab.test_set(cases),
        await lab.openai_model(fake),
        metric_ids=[await lab.metric("word-count", parameters=words or {"min": 1})],
        simulator_model_id=playing,
        concurrency=1,
    )
    return dict(await lab.wait(run["id"]))


async def test_a_conversation_that_fails_midway_keeps_its_turns_before(lab, fake):
    fake.enqueue(None, None, Fault.http(400))  # the third turn's answer is refused
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"conversation": {"turns": ["one", "two", "three"]}}])
    run = await lab.run(test_set, target, metric_ids=[await lab.any_answer()])
    await lab.wait(run["id"])
    (result,) = await lab.results(run["id"])
    assert result["status"] == "errored", result
    assert [turn["user"] for turn in result["trajectory"]] == ["one", "two"]
    assert result["trajectory"][-1]["ended"] == "error"
