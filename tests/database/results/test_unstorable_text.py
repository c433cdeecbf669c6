"""Text PostgreSQL cannot store, NUL, or UTF-8 cannot encode, a lone surrogate, in what a run
writes: stored as U+FFFD, never sinking the batch it is written with (which its writer would
retry, and the queue run again, paying the provider anew each time)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fakes.openai_server import message_text
from utils.storable import storable_document

pytestmark = pytest.mark.slow


async def _run_with_template(lab, fake, template: str) -> tuple[dict, list[dict]]:
    target = await lab.openai_model(fake, input_price_per_mtok=1000, output_price_per_mtok=0)
    test_set = await lab.test_set([{"input": f"q{i}"} for i in range(3)])
    body = {"project_id": lab.project_id, "name": "p", "template": template}
    prompt = (await lab.post("/prompts", body, expect=201)).json()["id"]
    run = await lab.run(test_set, target, prompt_id=prompt, metric_ids=[await lab.any_answer()])
    done = await lab.wait(run["id"], seconds=60)
    return done, await lab.results(run["id"])


async def test_a_prompt_rendering_a_nul_is_sent_stored_and_paid_once(lab, fake):
    done, results = await _run_with_template(lab, fake, '{{ input }}{{ "\\x00" }}')
    assert done["status"] == "completed" and done["counts"]["passed"] == 3, done
    assert [message_text(r.json["messages"][-1]) for r in fake.requests] == [
        f"q{i}\x00" for i in range(3)
    ]
    assert done["spent"] > 0
    assert sorted(result["input"]["text"] for result in results) == [
        f"q{i}\ufffd" for i in range(3)
    ]


async def test_a_prompt_rendering_a_lone_surrogate_errs_its_cases_unsent(lab, fake):
    done, results = await _run_with_template(lab, fake, '{{ input }}{{ "\\ud800" }}')
    assert done["status"] == "completed" and done["counts"]["errored"] == 3, done
    assert fake.requests == []
    assert {result["error_type"] for result in results} == {"prompt_error"}
    assert "lone surrogate ('\\ud800')" in results[0]["error_message"]


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("a\x00b", "a\ufffdb"),
        ("a\\u0000b", "a\\u0000b"),  # the six characters, not an escape: kept
        ("\\\x00", "\\\ufffd"),
        ("\\\\\x00", "\\\\\ufffd"),
        ("x\ud800y\x00", "x\ufffdy\ufffd"),
        ("plain é", "plain é"),
    ],
)
def test_a_documents_unstorable_text_and_only_that_is_replaced(text, stored):
    assert json.loads(storable_document([{"t": text, text: 1}])) == [{"t": stored, stored: 1}]


def _strict(document: str) -> Any:
    """Parsed as PostgreSQL parses JSON: NaN and the infinities are not JSON."""

    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(document, parse_constant=refuse)


@pytest.mark.parametrize("beside", ["x\ud800", 2**70], ids=["a lone surrogate", "a big integer"])
def test_a_nan_beside_what_orjson_refuses_is_written_as_null(beside: object) -> None:
    """orjson writes NaN as null; a document it refuses was written by the standard library,
    NaN and all, which PostgreSQL refuses: the batch sank, as a NUL once sank it."""
    document = storable_document(
        [{"arguments": {"x": float("nan"), "y": float("inf")}, "b": beside}]
    )
    [row] = _strict(document)
    assert row["arguments"] == {"x": None, "y": None}
    assert row["b"] == ("x\ufffd" if isinstance(beside, str) else beside)
