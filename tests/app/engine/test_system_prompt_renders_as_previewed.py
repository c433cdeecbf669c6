"""A prompt's system prompt is rendered like its template, in a run as in the render preview: with
the case's variables, its input as given (not the template's rendering of it) and its messages.
A system prompt failing to render errs the case naming the system prompt."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.database.results.conftest import Lab, working_lab
from tests.fakes.openai_server import FakeOpenAI

pytestmark = pytest.mark.slow


@pytest.fixture
async def lab(
    committed_database, app, owner_engine, database_urls, runtime, monkeypatch
) -> AsyncIterator[Lab]:
    monkeypatch.setattr(runtime.settings, "allow_private_networks", True)
    async with working_lab(
        committed_database, app, owner_engine, database_urls, "system-prompt"
    ) as lab:
        yield lab


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(require_api_key="sk-test") as server:
        yield server


async def _prompt(lab: Lab, system_prompt: str) -> str:
    body = {
        "project_id": lab.project_id,
        "name": "briefly",
        "template": "Answer briefly: {{ input }}",
        "system_prompt": system_prompt,
    }
    return str((await lab.post("/prompts", body, expect=201)).json()["id"])


async def _run_one_case(lab: Lab, fake: FakeOpenAI, prompt_id: str) -> dict[str, Any]:
    target = await lab.openai_model(fake)
    test_set = await lab.test_set([{"input": "hi", "variables": {"tone": "warm"}}])
    run = await lab.run(test_set, target, prompt_id=prompt_id, metric_ids=[await lab.any_answer()])
    done = await lab.wait(run["id"])
    assert done["status"] == "completed", done
    [result] = await lab.results(run["id"])
    return result


async def test_a_run_sends_the_system_prompt_the_preview_shows(lab: Lab, fake: FakeOpenAI):
    prompt_id = await _prompt(
        lab, "The user asked: {{ input }} ({{ messages|length }} earlier, {{ tone }})"
    )
    preview = await lab.post(
        f"/prompts/{prompt_id}/render", {"variables": {"input": "hi", "tone": "warm"}}, expect=200
    )
    previewed = preview.json()["system_prompt"]
    assert previewed == "The user asked: hi (0 earlier, warm)"

    result = await _run_one_case(lab, fake, prompt_id)

    assert result["status"] != "errored", result["error_message"]
    [sent] = fake.requests
    system, user = sent.json["messages"]
    assert system == {"role": "system", "content": previewed}
    assert user == {"role": "user", "content": "Answer briefly: hi"}


async def test_a_system_prompt_failing_to_render_errs_the_case_naming_it(
    lab: Lab, fake: FakeOpenAI
):
    prompt_id = await _prompt(lab, "{{ 1/0 }}")

    result = await _run_one_case(lab, fake, prompt_id)

    assert result["error_type"] == "prompt_error"
    assert result["error_message"] == "system prompt failed to render: division by zero"
    assert fake.requests == []
