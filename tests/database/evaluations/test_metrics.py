"""Metric definitions (`/api/v1/metrics`) and a test set's default metrics."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from database.evaluations.catalogue import validate_parameters
from database.evaluations.checks import matches_regex
from database.evaluations.scoring import MetricSpec, Observation
from tests.helpers import (
    Account,
    add_member,
    assert_problem,
    create_model,
    create_project,
    create_test_set,
    register,
    unique_name,
    until_waiting_for_locks,
)

METRICS = "/api/v1/metrics"
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}

# type -> valid parameters, and the default threshold of the type
VALID: dict[str, tuple[dict[str, Any], float]] = {
    "equals": ({"value": "Paris"}, 1.0),
    "contains": ({}, 1.0),
    "icontains": ({"value": "paris", "case_sensitive": False}, 1.0),
    "starts-with": ({"value": "Yes"}, 1.0),
    "contains-any": ({"values": ["red", "blue"]}, 1.0),
    "contains-all": ({"values": ["red", "blue"], "case_sensitive": False}, 1.0),
    "regex": ({"pattern": r"^\d+$", "flags": ["i", "m"]}, 1.0),
    "is-json": ({}, 1.0),
    "json-schema": ({"schema": SCHEMA}, 1.0),
    "similarity": ({"value": "colour"}, 0.8),
    "max-latency": ({"ms": 1500}, 1.0),
    "max-cost": ({"usd": 0.02}, 1.0),
    "max-tokens": ({"tokens": 512}, 1.0),
    "word-count": ({"min": 1, "max": 50}, 1.0),
    "llm-rubric": ({"criteria": "Is polite", "steps": ["Read", "Score"]}, 0.5),
    "answer-relevance": ({}, 0.5),
    "faithfulness": ({}, 0.5),
    "refusal": ({}, 0.5),
    "tool-call": ({"name": "search", "match": "subset", "arguments": {"q": "x"}}, 1.0),
    "tool-args-schema": ({}, 1.0),
    "trajectory": ({"mode": "in-order"}, 1.0),
    "step-count": ({"max": 5}, 1.0),
    "task-completion": ({}, 0.5),
    "tool-use-rationale": ({}, 0.5),
    "goal-completion": ({}, 0.5),
    "knowledge-retention": ({}, 0.5),
    "role-adherence": ({}, 0.5),
    "turn-relevance": ({}, 0.5),
}
JUDGES = {
    "llm-rubric",
    "answer-relevance",
    "faithfulness",
    "refusal",
    "task-completion",
    "tool-use-rationale",
    "goal-completion",
    "knowledge-retention",
    "role-adherence",
    "turn-relevance",
}


async def create_metric(
    client: httpx.AsyncClient, account: Account, project_id: str, **fields: Any
) -> dict:
    body = {"project_id": project_id, "name": unique_name("metric"), "type": "contains", **fields}
    response = await client.post(METRICS, json=body, headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def _post(
    client: httpx.AsyncClient, account: Account, project_id: str, **fields: Any
) -> httpx.Response:
    body = {"project_id": project_id, "name": unique_name("metric"), **fields}
    return await client.post(METRICS, json=body, headers=account.headers)


def _fields(body: dict) -> list[str]:
    return [error["field"] for error in body.get("errors", [])]


# --- creating ----------------------------------------------------------------------------------


@pytest.mark.parametrize("metric_type", list(VALID))
async def test_every_type_is_created_with_valid_parameters_and_its_default_threshold(
    client, metric_type
):
    owner = await register(client)
    project = await create_project(client, owner)
    parameters, threshold = VALID[metric_type]
    response = await _post(client, owner, project["id"], type=metric_type, parameters=parameters)
    assert response.status_code == 201, response.text
    metric = response.json()
    assert metric["type"] == metric_type
    assert metric["project_id"] == project["id"]
    assert metric["threshold"] == threshold
    assert metric["operator"] == ">="
    assert metric["negate"] is False
    assert metric["weight"] == 1.0
    assert metric["judge"] is (metric_type in JUDGES)
    for key, value in parameters.items():  # stored as given (the schema under "schema")
        assert metric["parameters"][key] == value
    read = await client.get(f"{METRICS}/{metric['id']}", headers=owner.headers)
    assert read.status_code == 200
    assert read.json() == metric


def test_a_regex_is_checked_by_the_engine_that_scores_it():
    """Unicode classes (\\p{L}) are the scoring engine's: saving one must not refuse it."""
    assert validate_parameters("regex", {"pattern": r"^\p{L}+$"})["pattern"] == r"^\p{L}+$"
    spec = MetricSpec(name="r", type="regex", parameters={"pattern": r"^\p{L}+$"}, threshold=1.0)
    assert matches_regex(spec, Observation(output="Ünïcödé", input="")) == (
        1.0,
        "pattern matches",
    )


def test_defaults_of_parameters_are_filled_in():
    assert validate_parameters("contains", {}) == {"case_sensitive": True}
    assert validate_parameters("regex", {"pattern": "a"}) == {"pattern": "a", "flags": []}
    assert validate_parameters("json-schema", {"schema": SCHEMA}) == {"schema": SCHEMA}
    assert validate_parameters("tool-call", {}) == {}  # the test's expected_tool_calls
    assert validate_parameters("tool-call", {"name": "a"}) == {"name": "a"}  # exact match
    assert validate_parameters("trajectory", {}) == {"mode": "exact"}
    # A check's scope is kept as given, and left out when not given (the default: last).
    assert validate_parameters("contains", {"scope": "each"}) == {
        "case_sensitive": True,
        "scope": "each",
    }
    assert validate_parameters("is-json", {"scope": "last"}) == {"scope": "last"}
    assert validate_parameters("is-json", {"from_test": "k", "scope": "any"}) == {
        "from_test": "k",
        "scope": "any",
    }


async def test_a_checks_scope_is_stored_with_its_parameters_and_a_judges_refused(client):
    owner = await register(client)
    project = await create_project(client, owner)
    metric = await create_metric(
        client, owner, project["id"], type="regex", parameters={"pattern": "a", "scope": "each"}
    )
    assert metric["parameters"] == {"pattern": "a", "flags": [], "scope": "each"}
    url = f"{METRICS}/{metric['id']}"
    patched = await client.patch(
        url, json={"parameters": {"pattern": "b", "scope": "any"}}, headers=owner.headers
    )
    assert patched.json()["parameters"]["scope"] == "any"
    judged = await _post(
        client, owner, project["id"], type="turn-relevance", parameters={"scope": "each"}
    )
    body = assert_problem(judged, 422)
    assert _fields(body) == ["body.parameters.scope"]
    assert "is a judge" in body["errors"][0]["message"]


async def test_explicit_threshold_operator_negate_weight_and_description_are_kept(client):
    owner = await register(client)
    project = await create_project(client, owner)
    metric = await create_metric(
        client,
        owner,
        project["id"],
        type="max-latency",
        parameters={"ms": 100},
        threshold=0,
        operator="<",
        negate=True,
        weight=2.5,
        description="Fast enough",
    )
    assert (metric["threshold"], metric["operator"], metric["negate"]) == (0, "<", True)
    assert (metric["weight"], metric["description"]) == (2.5, "Fast enough")


def _nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {}
    for _ in range(levels):
        schema = {"items": schema}
    return schema


DEEP_SCHEMA = _nested(200)


@pytest.mark.parametrize(
    ("metric_type", "parameters", "field"),
    [
        ("regex", {"pattern": "(unclosed"}, "parameters.pattern"),
        ("regex", {"pattern": "(?:a{1000}){1000}"}, "parameters.pattern"),  # 11 s to compile
        ("regex", {"pattern": "(" * 400 + "a" + ")" * 400}, "parameters.pattern"),  # was a 500
        ("regex", {}, "parameters.pattern"),
        ("regex", {"pattern": "a", "flags": ["x"]}, "parameters.flags.0"),
        ("json-schema", {"schema": {"type": "no-such-type"}}, "parameters.schema"),
        ("json-schema", {"schema": {"required": "a"}}, "parameters.schema"),
        ("json-schema", {}, "parameters.schema"),
        ("json-schema", {"schema": DEEP_SCHEMA}, "parameters.schema"),  # it was a 500
        ("word-count", {}, "parameters"),
        ("word-count", {"min": 5, "max": 2}, "parameters"),
        ("word-count", {"min": -1}, "parameters.min"),
        ("contains-any", {"values": []}, "parameters.values"),
        ("contains-all", {}, "parameters.values"),
        ("max-latency", {"ms": 0}, "parameters.ms"),
        ("max-cost", {"usd": -1}, "parameters.usd"),
        ("max-tokens", {"tokens": "many"}, "parameters.tokens"),
        ("llm-rubric", {}, "parameters.criteria"),
        ("llm-rubric", {"criteria": "   "}, "parameters.criteria"),
        ("equals", {"value": "x", "expected": "y"}, "parameters.expected"),
        ("is-json", {"strict": True}, "parameters.strict"),
        ("refusal", {"criteria": "x"}, "parameters.criteria"),
        ("similarity", {"value": ""}, "parameters.value"),
        ("tool-call", {"arguments": {"q": "x"}}, "parameters"),
        ("tool-call", {"match": "subset"}, "parameters"),
        ("tool-call", {"name": ""}, "parameters.name"),
        ("tool-call", {"name": "a", "match": "fuzzy"}, "parameters.match"),
        ("tool-call", {"name": "a", "arguments": "q=x"}, "parameters.arguments"),
        (
            "tool-call",
            {"name": "a", "match": "schema", "arguments": {"type": 1}},
            "parameters.arguments",
        ),
        ("tool-call", {"name": "a", "arguments": {"q": "x" * 30_000}}, "parameters.arguments"),
        ("tool-args-schema", {"strict": True}, "parameters.strict"),
        ("trajectory", {"mode": "in_order"}, "parameters.mode"),
        ("step-count", {}, "parameters.max"),
        ("step-count", {"max": 0}, "parameters.max"),
        ("task-completion", {"criteria": "x"}, "parameters.criteria"),
        ("goal-completion", {"goal": "x"}, "parameters.goal"),
        ("contains", {"scope": "every"}, "parameters.scope"),
        ("regex", {"pattern": "(", "scope": "each"}, "parameters.pattern"),
        ("is-json", {"from_test": "k", "scope": "some"}, "parameters.scope"),
        ("role-adherence", {"scope": "each"}, "parameters.scope"),
        ("llm-rubric", {"criteria": "x", "scope": "last"}, "parameters.scope"),
        ("faithfulness", {"from_test": "k", "scope": "all"}, "parameters.scope"),
    ],
)
async def test_bad_parameters_are_422_naming_the_parameter(client, metric_type, parameters, field):
    owner = await register(client)
    project = await create_project(client, owner)
    response = await _post(client, owner, project["id"], type=metric_type, parameters=parameters)
    body = assert_problem(response, 422)
    assert f"body.{field}" in _fields(body), _fields(body)
    listed = await client.get(METRICS, params={"project_id": project["id"]}, headers=owner.headers)
    assert listed.json()["total"] == 0


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"type": "bleu"}, "type"),
        ({"type": "contains", "threshold": -0.1}, "threshold"),
        ({"type": "contains", "operator": "!="}, "operator"),
        ({"type": "contains", "weight": 0}, "weight"),
        ({"type": "contains", "colour": "red"}, "colour"),
        ({"type": "contains", "name": " "}, "name"),
    ],
)
async def test_bad_metric_fields_are_422_naming_the_field(client, fields, field):
    owner = await register(client)
    project = await create_project(client, owner)
    response = await _post(client, owner, project["id"], **fields)
    assert_problem(response, 422, field=field)


async def test_an_unknown_project_is_422_naming_project_id(client):
    owner = await register(client)
    response = await _post(client, owner, str(uuid.uuid4()), type="is-json")
    assert_problem(response, 422, field="project_id")


async def test_another_organizations_project_is_422_naming_project_id(client):
    owner = await register(client)
    stranger = await register(client)
    theirs = await create_project(client, stranger)
    response = await _post(client, owner, theirs["id"], type="is-json")
    assert_problem(response, 422, field="project_id")


async def test_judge_model_of_the_organization_is_accepted(client):
    owner = await register(client)
    project = await create_project(client, owner)
    model = await create_model(client, owner)
    metric = await create_metric(
        client, owner, project["id"], type="refusal", judge_model_id=model["id"]
    )
    assert metric["judge_model_id"] == model["id"]


@pytest.mark.parametrize("whose", ["another organization", "nobody"])
async def test_judge_model_of_another_organization_is_422_naming_it(client, whose):
    owner = await register(client)
    project = await create_project(client, owner)
    if whose == "nobody":
        model_id = str(uuid.uuid4())
    else:
        model_id = (await create_model(client, await register(client)))["id"]
    response = await _post(client, owner, project["id"], type="refusal", judge_model_id=model_id)
    assert_problem(response, 422, field="judge_model_id")
    metric = await create_metric(client, owner, project["id"])
    patched = await client.patch(
        f"{METRICS}/{metric['id']}", json={"judge_model_id": model_id}, headers=owner.headers
    )
    assert_problem(patched, 422, field="judge_model_id")


async def test_duplicate_name_in_a_project_is_409_but_other_projects_may_reuse_it(client):
    owner = await register(client)
    project = await create_project(client, owner)
    other = await create_project(client, owner)
    await create_metric(client, owner, project["id"], name="Exact")
    duplicate = await _post(client, owner, project["id"], type="is-json", name="Exact")
    assert_problem(duplicate, 409)
    await create_metric(client, owner, other["id"], name="Exact")


# --- listing, reading, editing, deleting -------------------------------------------------------


async def test_list_by_project_with_total_sorted_by_name(client):
    owner = await register(client)
    project = await create_project(client, owner)
    other = await create_project(client, owner)
    for name in ("Charlie", "Alpha", "Bravo"):
        await create_metric(client, owner, project["id"], name=name)
    await create_metric(client, owner, other["id"], name="Delta")

    listed = await client.get(METRICS, params={"project_id": project["id"]}, headers=owner.headers)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["total"] == 3
    assert [m["name"] for m in body["items"]] == ["Alpha", "Bravo", "Charlie"]

    page = await client.get(
        METRICS,
        params={"project_id": project["id"], "limit": 2, "offset": 2},
        headers=owner.headers,
    )
    assert page.json()["total"] == 3
    assert [m["name"] for m in page.json()["items"]] == ["Charlie"]

    everything = await client.get(METRICS, headers=owner.headers)
    assert everything.json()["total"] == 4


async def test_patch_changes_fields_and_revalidates_parameters_by_the_stored_type(client):
    owner = await register(client)
    project = await create_project(client, owner)
    metric = await create_metric(
        client, owner, project["id"], type="regex", parameters={"pattern": "a+"}
    )
    url = f"{METRICS}/{metric['id']}"
    response = await client.patch(
        url,
        json={
            "name": "Digits",
            "parameters": {"pattern": r"\d+", "flags": ["s"]},
            "threshold": 0.5,
            "operator": ">",
            "negate": True,
            "weight": 3,
            "description": "Only digits",
        },
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["name"] == "Digits"
    assert patched["parameters"] == {"pattern": r"\d+", "flags": ["s"]}
    assert (patched["threshold"], patched["operator"], patched["negate"]) == (0.5, ">", True)
    assert (patched["weight"], patched["description"]) == (3, "Only digits")
    assert patched["type"] == "regex"
    assert (await client.get(url, headers=owner.headers)).json() == patched


@pytest.mark.parametrize(
    ("metric_type", "parameters", "bad", "field"),
    [
        ("regex", {"pattern": "a"}, {"pattern": "[z-a]"}, "parameters.pattern"),
        ("json-schema", {"schema": SCHEMA}, {"schema": {"type": 5}}, "parameters.schema"),
        (
            "json-schema",
            {"schema": SCHEMA},
            {"schema": {"$ref": "file:///etc/passwd"}},
            "parameters.schema",
        ),
        (
            "json-schema",
            {"schema": SCHEMA},
            {"schema": {"enum": ["x" * 40_000]}},
            "parameters.schema",
        ),
        ("word-count", {"min": 1}, {}, "parameters"),
        ("max-latency", {"ms": 500}, {"ms": "inf"}, "parameters.ms"),  # else stored as null
        ("max-cost", {"usd": 1}, {"usd": "1e999"}, "parameters.usd"),
        ("contains", {}, {"values": ["x"]}, "parameters.values"),
        ("max-tokens", {"tokens": 5}, {"tokens": 0}, "parameters.tokens"),
    ],
)
async def test_bad_parameters_on_patch_are_422_and_change_nothing(
    client, metric_type, parameters, bad, field
):
    owner = await register(client)
    project = await create_project(client, owner)
    metric = await create_metric(
        client, owner, project["id"], type=metric_type, parameters=parameters
    )
    url = f"{METRICS}/{metric['id']}"
    response = await client.patch(url, json={"parameters": bad}, headers=owner.headers)
    body = assert_problem(response, 422)
    assert f"body.{field}" in _fields(body), _fields(body)
    assert (await client.get(url, headers=owner.headers)).json()["parameters"] == (
        metric["parameters"]
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": None}, "name"),
        ({"threshold": None}, "threshold"),
        ({"parameters": None}, "parameters"),
        ({"type": "equals"}, "type"),
        ({"operator": "~"}, "operator"),
    ],
)
async def test_patch_refuses_nulls_of_required_fields_and_a_type_change(client, change, field):
    owner = await register(client)
    project = await create_project(client, owner)
    metric = await create_metric(client, owner, project["id"])
    response = await client.patch(f"{METRICS}/{metric['id']}", json=change, headers=owner.headers)
    assert_problem(response, 422, field=field)


async def test_patch_to_a_duplicate_name_is_409(client):
    owner = await register(client)
    project = await create_project(client, owner)
    await create_metric(client, owner, project["id"], name="Taken")
    metric = await create_metric(client, owner, project["id"])
    response = await client.patch(
        f"{METRICS}/{metric['id']}", json={"name": "Taken"}, headers=owner.headers
    )
    assert_problem(response, 409)


async def test_judge_model_can_be_set_and_cleared(client):
    owner = await register(client)
    project = await create_project(client, owner)
    model = await create_model(client, owner)
    metric = await create_metric(client, owner, project["id"], type="answer-relevance")
    url = f"{METRICS}/{metric['id']}"
    set_ = await client.patch(url, json={"judge_model_id": model["id"]}, headers=owner.headers)
    assert set_.json()["judge_model_id"] == model["id"]
    cleared = await client.patch(url, json={"judge_model_id": None}, headers=owner.headers)
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["judge_model_id"] is None


async def test_delete_then_not_found(client):
    owner = await register(client)
    project = await create_project(client, owner)
    metric = await create_metric(client, owner, project["id"])
    url = f"{METRICS}/{metric['id']}"
    deleted = await client.delete(url, headers=owner.headers)
    assert deleted.status_code == 204, deleted.text
    assert_problem(await client.get(url, headers=owner.headers), 404)
    assert_problem(await client.delete(url, headers=owner.headers), 404)


async def test_a_viewer_reads_but_cannot_write(client):
    owner = await register(client)
    viewer = await add_member(client, owner, "viewer")
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    metric = await create_metric(client, owner, project["id"])
    url = f"{METRICS}/{metric['id']}"
    sets = f"/api/v1/test-sets/{test_set['id']}/metrics"
    for path in (METRICS, url, sets):
        assert (await client.get(path, headers=viewer.headers)).status_code == 200, path
    for response in (
        await _post(client, viewer, project["id"], type="is-json"),
        await client.patch(url, json={"name": "Mine"}, headers=viewer.headers),
        await client.delete(url, headers=viewer.headers),
        await client.put(sets, json={"metric_ids": [metric["id"]]}, headers=viewer.headers),
    ):
        assert_problem(response, 403)
    assert (await client.get(url, headers=owner.headers)).json()["name"] == metric["name"]
    assert (await client.get(sets, headers=owner.headers)).json() == []


async def test_a_member_may_write(client):
    owner = await register(client)
    member = await add_member(client, owner, "member")
    project = await create_project(client, owner)
    metric = await create_metric(client, member, project["id"])
    response = await client.patch(
        f"{METRICS}/{metric['id']}", json={"threshold": 0.3}, headers=member.headers
    )
    assert response.status_code == 200, response.text


async def test_another_organizations_metric_is_not_found_everywhere(client):
    owner = await register(client)
    stranger = await register(client)
    project = await create_project(client, owner)
    metric = await create_metric(client, owner, project["id"])
    url = f"{METRICS}/{metric['id']}"
    for response in (
        await client.get(url, headers=stranger.headers),
        await client.patch(url, json={"name": "Stolen"}, headers=stranger.headers),
        await client.delete(url, headers=stranger.headers),
    ):
        assert_problem(response, 404)
    listed = await client.get(METRICS, headers=stranger.headers)
    assert listed.json()["total"] == 0
    by_project = await client.get(
        METRICS, params={"project_id": project["id"]}, headers=stranger.headers
    )
    assert by_project.json()["total"] == 0
    assert (await client.get(url, headers=owner.headers)).json()["name"] == metric["name"]


# --- a test set's default metrics --------------------------------------------------------------


async def _set_metrics(
    client: httpx.AsyncClient, account: Account, test_set_id: str, metric_ids: list[str]
) -> httpx.Response:
    return await client.put(
        f"/api/v1/test-sets/{test_set_id}/metrics",
        json={"metric_ids": metric_ids},
        headers=account.headers,
    )


async def _get_metrics(client: httpx.AsyncClient, account: Account, test_set_id: str) -> list[str]:
    response = await client.get(f"/api/v1/test-sets/{test_set_id}/metrics", headers=account.headers)
    assert response.status_code == 200, response.text
    return [metric["id"] for metric in response.json()]


async def test_default_metrics_set_at_once_take_turns(
    committed_client, committed_owner, owner_engine
):
    """Two replacements of one set's list at once each deleted the list they found, and the
    second's rows then met the first's: a 500. They take turns on the set, and the list is
    one of the two."""
    owner, client = committed_owner, committed_client
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    a, b = [(await create_metric(client, owner, project["id"]))["id"] for _ in range(2)]
    assert (await _set_metrics(client, owner, test_set["id"], [a])).status_code == 200
    async with owner_engine.connect() as holder:
        transaction = await holder.begin()
        await holder.execute(
            text("SELECT 1 FROM test_sets WHERE id = :id FOR UPDATE"), {"id": test_set["id"]}
        )
        lists = ([a, b], [b, a])
        puts = [
            asyncio.create_task(_set_metrics(client, owner, test_set["id"], ids)) for ids in lists
        ]
        await until_waiting_for_locks(owner_engine, 2)
        await transaction.rollback()
    answers = await asyncio.gather(*puts)
    assert [answer.status_code for answer in answers] == [200, 200], [a.text for a in answers]
    assert await _get_metrics(client, owner, test_set["id"]) in [list(ids) for ids in lists]


async def test_test_set_default_metrics_are_kept_in_the_given_order(client):
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    a, b, c = [
        (await create_metric(client, owner, project["id"], name=name))["id"]
        for name in ("A", "B", "C")
    ]
    assert await _get_metrics(client, owner, test_set["id"]) == []

    response = await _set_metrics(client, owner, test_set["id"], [c, a, b])
    assert response.status_code == 200, response.text
    assert [m["id"] for m in response.json()] == [c, a, b]
    assert await _get_metrics(client, owner, test_set["id"]) == [c, a, b]

    replaced = await _set_metrics(client, owner, test_set["id"], [b])
    assert [m["id"] for m in replaced.json()] == [b]
    assert await _get_metrics(client, owner, test_set["id"]) == [b]

    assert (await _set_metrics(client, owner, test_set["id"], [])).json() == []
    assert await _get_metrics(client, owner, test_set["id"]) == []


async def test_deleting_a_metric_removes_it_from_the_defaults(client):
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    a = (await create_metric(client, owner, project["id"]))["id"]
    b = (await create_metric(client, owner, project["id"]))["id"]
    assert (await _set_metrics(client, owner, test_set["id"], [a, b])).status_code == 200
    await client.delete(f"{METRICS}/{a}", headers=owner.headers)
    assert await _get_metrics(client, owner, test_set["id"]) == [b]


async def test_a_metric_of_another_project_is_422(client):
    owner = await register(client)
    project = await create_project(client, owner)
    other = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    mine = (await create_metric(client, owner, project["id"]))["id"]
    foreign = (await create_metric(client, owner, other["id"]))["id"]
    response = await _set_metrics(client, owner, test_set["id"], [mine, foreign])
    body = assert_problem(response, 422, field="metric_ids")
    assert foreign in body["detail"] and mine not in body["detail"]
    assert await _get_metrics(client, owner, test_set["id"]) == []


@pytest.mark.parametrize("whose", ["another organization", "nobody"])
async def test_an_unknown_or_foreign_organizations_metric_is_422(client, whose):
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    if whose == "nobody":
        metric_id = str(uuid.uuid4())
    else:
        stranger = await register(client)
        metric_id = (
            await create_metric(client, stranger, (await create_project(client, stranger))["id"])
        )["id"]
    response = await _set_metrics(client, owner, test_set["id"], [metric_id])
    assert_problem(response, 422, field="metric_ids")


async def test_duplicates_in_the_list_are_422(client):
    owner = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    a = (await create_metric(client, owner, project["id"]))["id"]
    b = (await create_metric(client, owner, project["id"]))["id"]
    assert (await _set_metrics(client, owner, test_set["id"], [b])).status_code == 200
    response = await _set_metrics(client, owner, test_set["id"], [a, b, a])
    assert_problem(response, 422, field="metric_ids")
    assert await _get_metrics(client, owner, test_set["id"]) == [b]


async def test_another_organizations_test_set_metrics_are_not_found(client):
    owner = await register(client)
    stranger = await register(client)
    project = await create_project(client, owner)
    test_set = await create_test_set(client, owner, project["id"])
    a = (await create_metric(client, owner, project["id"]))["id"]
    assert (await _set_metrics(client, owner, test_set["id"], [a])).status_code == 200
    url = f"/api/v1/test-sets/{test_set['id']}/metrics"
    assert_problem(await client.get(url, headers=stranger.headers), 404)
    assert_problem(await _set_metrics(client, stranger, test_set["id"], []), 404)
    assert await _get_metrics(client, owner, test_set["id"]) == [a]


@pytest.mark.parametrize(
    ("metric_type", "parameters"),
    [
        ("regex", {"pattern": "USD ", "flags": []}),
        ("contains-any", {"values": [" no ", "nope"], "case_sensitive": True}),
        ("contains", {"value": " ok", "case_sensitive": True}),
    ],
)
async def test_a_checks_texts_are_kept_as_given_spaces_and_all(client, metric_type, parameters):
    """Trimmed, 'USD ' matched 'USD5' and ' no ' was found inside 'know'."""
    owner = await register(client)
    project = await create_project(client, owner)
    metric = await create_metric(
        client, owner, project["id"], type=metric_type, parameters=parameters
    )
    assert metric["parameters"] == parameters
