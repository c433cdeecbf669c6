"""Foreign files through `POST /test-sets/{id}/import?format=...`: cases in, assertions as
metrics taking each test's parameters, what has no equivalent listed; and `mode=sync`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
from sqlalchemy import text

from database.test_sets import foreign_promptfoo
from tests.helpers import (
    Account,
    assert_problem,
    create_project,
    create_test_set,
    register,
    until_waiting_for_locks,
)

SETS = "/api/v1/test-sets"

PROMPTFOO = b"""
prompts:
  - "Answer briefly: {{question}}"
providers: [openai:gpt-4o-mini]
defaultTest:
  assert:
    - type: latency
      threshold: 5000
tests:
  - description: capital
    vars:
      question: What is the capital of France?
    assert:
      - type: icontains
        value: paris
      - type: javascript
        value: output.length < 100
  - vars:
      question: "2 + 2?"
      context: {unit: none, digits: [4]}
    assert:
      - type: equals
        value: "4"
  - file://more.csv
"""
MORE_CSV = b"""question,__expected
Who wrote Hamlet?,contains: Shakespeare
Say hi,python: len(output) < 9
"""


async def _setup(client: httpx.AsyncClient) -> tuple[Account, dict, dict]:
    account = await register(client)
    project = await create_project(client, account)
    test_set = await create_test_set(client, account, project["id"])
    return account, project, test_set


async def _import(
    client: httpx.AsyncClient,
    account: Account,
    test_set_id: str,
    content: bytes,
    fmt: str,
    *,
    mode: str = "append",
    attachments: dict[str, bytes] | None = None,
) -> httpx.Response:
    files = [("file", ("upload", content))]
    files += [("attachment", (name, data)) for name, data in (attachments or {}).items()]
    return await client.post(
        f"{SETS}/{test_set_id}/import",
        params={"format": fmt, "mode": mode},
        files=files,
        headers=account.headers,
    )


async def test_a_promptfoo_config_with_its_csv_becomes_tests_and_metrics(client):
    account, _, test_set = await _setup(client)
    response = await _import(
        client, account, test_set["id"], PROMPTFOO, "promptfoo", attachments={"more.csv": MORE_CSV}
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["imported"] == 4 and body["test_count"] == 4 and body["changed"]
    metrics = {m["name"]: m for m in body["metrics"]}
    assert {name: m["type"] for name, m in metrics.items()} == {
        "icontains": "icontains",
        "equals": "equals",
        "contains": "contains",
        "latency": "max-latency",
    }
    assert all(m["created"] for m in metrics.values())
    left_out = {item["type"]: item for item in body["unmapped"]}
    assert left_out["javascript"]["count"] == 1 and left_out["javascript"]["file"] is None
    assert left_out["python"]["file"] == "more.csv" and left_out["python"]["lines"] == [3]
    assert any("prompt" in note for note in body["notes"])

    defaults = await client.get(f"{SETS}/{test_set['id']}/metrics", headers=account.headers)
    assert {m["name"] for m in defaults.json()} == set(metrics)
    stored = (
        await client.get(f"/api/v1/metrics/{metrics['equals']['id']}", headers=account.headers)
    ).json()
    assert stored["parameters"] == {"from_test": "assert:equals"}

    exported = await client.get(f"{SETS}/{test_set['id']}/export", headers=account.headers)
    cases = exported.json()
    assert cases[0]["input"] == "What is the capital of France?"
    assert cases[0]["metadata"]["assert:icontains"] == {"value": "paris"}
    assert cases[0]["metadata"]["description"] == "capital"
    assert cases[1]["variables"]["context"] == {"unit": "none", "digits": [4]}
    assert cases[1]["metadata"]["assert:equals"] == {"value": "4"}
    assert cases[2]["input"] == "Who wrote Hamlet?"
    assert cases[2]["metadata"]["assert:contains"] == {"value": "Shakespeare"}
    assert all(case["metadata"]["assert:latency"] == {"ms": 5000} for case in cases)

    # The same file again: the metrics are the project's already, and reused.
    again = await _import(
        client, account, test_set["id"], PROMPTFOO, "promptfoo", attachments={"more.csv": MORE_CSV}
    )
    assert again.status_code == 201, again.text
    assert not any(m["created"] for m in again.json()["metrics"])
    assert {m["id"] for m in again.json()["metrics"]} == {m["id"] for m in metrics.values()}


async def test_a_reference_without_its_file_imports_nothing(client):
    account, _, test_set = await _setup(client)
    response = await _import(client, account, test_set["id"], PROMPTFOO, "promptfoo")
    problem = assert_problem(response, 422)
    assert "more.csv" in problem["detail"]
    count = await client.get(f"{SETS}/{test_set['id']}", headers=account.headers)
    assert count.json()["test_count"] == 0


async def test_a_file_named_twice_is_a_422_and_read_once(client, monkeypatch):
    """Each file is parsed once: a config naming one file over and over would have it parsed
    as often (an empty file's parse yields no test for the case limit to stop)."""
    account, _, test_set = await _setup(client)
    config = b"tests:\n" + b"  - file://empty.yaml\n" * 1000
    parsed: list[str] = []
    load = foreign_promptfoo.load

    def counted(text: str, path: str, kind: str) -> object:
        parsed.append(path)
        return load(text, path, kind)

    monkeypatch.setattr(foreign_promptfoo, "load", counted)
    response = await _import(
        client, account, test_set["id"], config, "promptfoo", attachments={"empty.yaml": b"[]"}
    )
    problem = assert_problem(response, 422, field="line 3: tests")  # the second naming
    assert "'file://empty.yaml'" in problem["detail"] and "named twice" in problem["detail"]
    assert parsed.count("empty.yaml") == 1  # (and the config, once)


async def test_an_assertion_whose_value_is_not_valid_is_a_422_by_line(client):
    account, _, test_set = await _setup(client)
    too_long = "x" * 10_001  # a reference is at most 10,000 characters
    config = (
        "tests:\n  - vars: {q: a}\n    assert:\n      - type: contains\n"
        f"        value: {too_long}\n"
    )
    response = await _import(client, account, test_set["id"], config.encode(), "promptfoo")
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["line"] == 4  # the assertion's own line
    assert "at most 10,000" in problem["errors"][0]["message"]


async def test_openai_evals_and_langfuse_through_the_api(client):
    account, _, test_set = await _setup(client)
    samples = (
        json.dumps({"input": [{"role": "user", "content": "2+2?"}], "ideal": ["4", "four"]})
        + "\n"
        + json.dumps({"input": "Capital of Peru?", "ideal": "Lima"})
        + "\n"
    ).encode()
    response = await _import(client, account, test_set["id"], samples, "openai-evals")
    assert response.status_code == 201, response.text
    assert [m["name"] for m in response.json()["metrics"]] == ["ideal"]
    items = json.dumps(
        {"data": [{"id": "i1", "input": {"question": "Why?"}, "expectedOutput": {"a": 1}}]}
    ).encode()
    response = await _import(client, account, test_set["id"], items, "langfuse")
    assert response.status_code == 201, response.text
    cases = (await client.get(f"{SETS}/{test_set['id']}/export", headers=account.headers)).json()
    assert cases[0]["messages"] == [{"role": "user", "content": "2+2?"}]
    assert cases[0]["metadata"]["assert:ideal"] == {"values": ["4", "four"]}
    assert cases[1]["expected_output"] == "Lima"
    assert cases[2]["input"] == "Why?"
    assert json.loads(cases[2]["expected_output"]) == {"a": 1}
    assert cases[2]["metadata"]["langfuse_id"] == "i1"


async def test_sync_writes_nothing_for_an_unchanged_file_and_keeps_unchanged_tests(client):
    account, _, test_set = await _setup(client)
    first = b"input,expected_output\none,1\ntwo,2\n"
    synced = await _import(client, account, test_set["id"], first, "csv", mode="sync")
    assert synced.json()["changed"] and synced.json()["imported"] == 2
    published = await client.post(
        f"{SETS}/{test_set['id']}/versions", json={}, headers=account.headers
    )
    assert published.status_code == 201, published.text
    before = (await client.get(f"{SETS}/{test_set['id']}/export", headers=account.headers)).json()

    unchanged = await _import(client, account, test_set["id"], first, "csv", mode="sync")
    assert unchanged.status_code == 201
    assert unchanged.json() | {"metrics": [], "unmapped": [], "notes": []} == {
        "imported": 0,
        "test_count": 2,
        "changed": False,
        "metrics": [],
        "unmapped": [],
        "notes": [],
    }
    read = await client.get(f"{SETS}/{test_set['id']}", headers=account.headers)
    assert read.json()["latest_version"] == 1

    ids_before = await _member_ids(client, account, test_set["id"])
    changed = await _import(
        client,
        account,
        test_set["id"],
        b"input,expected_output\nthree,3\none,1\n",
        "csv",
        mode="sync",
    )
    assert changed.json()["changed"] and changed.json()["imported"] == 1
    ids_after = await _member_ids(client, account, test_set["id"])
    assert ids_after[1] == ids_before[0]  # "one" kept its test (and so its history)
    assert ids_after[0] not in ids_before
    assert before[0]["input"] == "one"


async def _member_ids(client: httpx.AsyncClient, account: Account, test_set_id: str) -> list[str]:
    version = await client.post(f"{SETS}/{test_set_id}/versions", json={}, headers=account.headers)
    number = version.json()["number"]
    cases = await client.get(
        f"{SETS}/{test_set_id}/versions/{number}/cases", headers=account.headers
    )
    return [case["test_id"] for case in cases.json()["items"]]


async def test_a_file_key_that_clashes_with_an_assertion_is_a_422_not_a_crash(client):
    account, _, test_set = await _setup(client)
    samples = (
        json.dumps({"input": "a", "ideal": "b"})
        + "\n"
        + json.dumps({"input": "c", "assert:ideal": "not parameters"})
        + "\n"
    ).encode()
    response = await _import(client, account, test_set["id"], samples, "openai-evals")
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["line"] == 2
    assert "not an object of parameters" in problem["errors"][0]["message"]


async def test_an_assertion_threshold_out_of_range_is_a_422(client):
    account, _, test_set = await _setup(client)
    config = b"""tests:
  - vars: {q: a}
    assert:
      - {type: llm-rubric, value: ok, threshold: -5}
"""
    response = await _import(client, account, test_set["id"], config, "promptfoo")
    problem = assert_problem(response, 422)
    assert "threshold" in problem["detail"]
    count = await client.get(f"{SETS}/{test_set['id']}", headers=account.headers)
    assert count.json()["test_count"] == 0


def _named_assertions(prefix: str, count: int) -> bytes:
    asserts = ", ".join(f"{{type: contains, value: x, metric: {prefix}{i}}}" for i in range(count))
    return f"tests:\n  - vars: {{q: hi}}\n    assert: [{asserts}]\n".encode()


async def test_imports_never_give_a_set_more_metrics_than_it_may_have(client):
    account, _, test_set = await _setup(client)
    first = await _import(client, account, test_set["id"], _named_assertions("a", 30), "promptfoo")
    assert first.status_code == 201, first.text
    second = await _import(client, account, test_set["id"], _named_assertions("b", 30), "promptfoo")
    problem = assert_problem(second, 422)
    assert "the set has 30 metrics and the file adds 30; a set has at most 50" in problem["detail"]
    metrics = await client.get(f"{SETS}/{test_set['id']}/metrics", headers=account.headers)
    assert len(metrics.json()) == 30
    count = await client.get(f"{SETS}/{test_set['id']}", headers=account.headers)
    assert count.json()["test_count"] == 1  # the refused import's test is not written either


async def test_a_test_of_many_assertions_of_one_name_is_refused_at_the_first_past_the_limit(
    client,
):
    """Each use of a name in a test is a kind of its own (name-k): 8,000 uses, aliases of one
    assertion in a 32 KB file, took 11 s of the import threads before the limit was checked."""
    account, _, test_set = await _setup(client)
    config = "a: &a {type: contains, value: x}\ntests:\n  - vars: {q: hi}\n    assert: ["
    config += ", ".join(["*a"] * 8000) + "]\n"
    response = await _import(client, account, test_set["id"], config.encode(), "promptfoo")
    problem = assert_problem(response, 422)
    assert "more than 50 kinds of assertion" in problem["detail"]
    assert "'contains-51' is the first past them" in problem["detail"]


async def test_a_long_metric_names_variants_are_shortened_to_fit(client):
    """A name of the longest kind, taken by another definition: its variant is shortened to
    fit, not a database error naming no field."""
    account, _, test_set = await _setup(client)
    name = "m" * 200
    for kind in ("contains", "icontains"):
        assertion = f"{{type: {kind}, value: x, metric: {name}}}"
        config = f"tests:\n  - vars: {{q: a}}\n    assert:\n      - {assertion}\n"
        response = await _import(client, account, test_set["id"], config.encode(), "promptfoo")
        assert response.status_code == 201, response.text
    [metric] = response.json()["metrics"]
    assert metric["created"] and metric["name"] == "m" * 189 + " (imported)"


async def test_imports_into_two_sets_of_a_project_make_a_new_metric_once(
    committed_client, committed_owner, owner_engine
):
    """Both name the same new metric: they take turns on the project, and the second uses the
    first's (it was a 409 for whichever came second)."""
    account, client = committed_owner, committed_client
    project = await create_project(client, account)
    sets = [await create_test_set(client, account, project["id"]) for _ in range(2)]
    config = b"tests:\n  - vars: {q: a}\n    assert:\n      - {type: contains, value: x}\n"
    async with owner_engine.connect() as holder:
        transaction = await holder.begin()
        await holder.execute(
            text("SELECT 1 FROM projects WHERE id = :id FOR UPDATE"), {"id": project["id"]}
        )
        imports = [
            asyncio.create_task(_import(client, account, test_set["id"], config, "promptfoo"))
            for test_set in sets
        ]
        await until_waiting_for_locks(owner_engine, 2)
        await transaction.rollback()
    first, second = await asyncio.gather(*imports)
    assert (first.status_code, second.status_code) == (201, 201), (first.text, second.text)
    made = [m for r in (first, second) for m in r.json()["metrics"]]
    assert len({m["id"] for m in made}) == 1 and sum(m["created"] for m in made) == 1


async def test_an_upload_is_parsed_before_its_set_is_locked(
    committed_client, committed_owner, owner_engine
):
    """A file is read and checked without holding the set (seconds, for a large one, that
    would hold every other import into it): a bad one is refused while another holds the set,
    and a good one waits only to write."""
    account, client = committed_owner, committed_client
    project = await create_project(client, account)
    test_set = await create_test_set(client, account, project["id"])
    good = b"tests:\n  - vars: {q: a}\n    assert:\n      - {type: contains, value: x}\n"
    async with owner_engine.connect() as holder:
        transaction = await holder.begin()
        await holder.execute(
            text("SELECT 1 FROM test_sets WHERE id = :id FOR UPDATE"), {"id": test_set["id"]}
        )
        bad = await asyncio.wait_for(
            _import(client, account, test_set["id"], b"tests: [", "promptfoo"), timeout=10
        )
        assert_problem(bad, 422)
        writing = asyncio.create_task(_import(client, account, test_set["id"], good, "promptfoo"))
        await until_waiting_for_locks(owner_engine, 1, writing)
        assert not writing.done()
        await transaction.rollback()
    written = await writing
    assert written.status_code == 201 and written.json()["imported"] == 1, written.text


_WAITING_IN_TRANSACTION = text(
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE state = 'idle in transaction' AND datname = current_database()"
)


async def test_an_upload_sent_slowly_holds_no_database_connection(
    committed_client, committed_owner, owner_engine
):
    """The file is read before the credential is checked: a client sending it slowly (or a
    slow link) holds no pooled connection idle in a transaction meanwhile (a few such
    uploads held every connection of the pool)."""
    account, client = committed_owner, committed_client
    project = await create_project(client, account)
    test_set = await create_test_set(client, account, project["id"])
    halfway, go_on = asyncio.Event(), asyncio.Event()

    async def slowly() -> AsyncIterator[bytes]:
        yield b'[{"input": "first"},'
        halfway.set()
        await go_on.wait()
        yield b' {"input": "second"}]'

    sending = asyncio.create_task(
        client.post(
            f"{SETS}/{test_set['id']}/import",
            params={"format": "json"},
            content=slowly(),
            headers={**account.headers, "content-type": "application/json"},
        )
    )
    await asyncio.wait_for(halfway.wait(), 10)
    await asyncio.sleep(0.2)  # the request is waiting for the rest of its body
    async with owner_engine.connect() as connection:
        assert await connection.scalar(_WAITING_IN_TRANSACTION) == 0
    go_on.set()
    imported = await sending
    assert imported.status_code == 201 and imported.json()["imported"] == 2, imported.text
