"""The metric catalogue: each type declared once, and every reader derived from it (the API's
schema and OpenAPI, the validation of parameters, the engine's scoring)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from database.evaluations.catalogue import CATALOGUE, MetricType, accepted_parameters, score
from database.evaluations.checks import ExpectedText
from database.evaluations.scoring import MetricSpec, Observation, Verdict
from database.test_sets.foreign import _IDEAL as IDEAL
from database.test_sets.foreign_assertions import _KINDS as KINDS
from tests.database.evaluations.test_metrics import VALID, _fields, _post
from tests.helpers import create_project, register

ROOT = Path(__file__).resolve().parents[3]
CATALOGUE_MODULE = "database/evaluations/catalogue.py"
# The service's own code (the benchmarks are clients of its API, as the tests are).
SOURCE_PACKAGES = ("app", "database", "notifications", "providers", "tasks", "utils")
# Other tools' assertion types, and the types they translate into (checked below).
TRANSLATIONS = {
    "database/test_sets/foreign.py",
    "database/test_sets/foreign_assertions.py",
    "database/test_sets/foreign_promptfoo.py",
    "utils/schema_places.py",  # JSON Schema's keyword `contains`, not the metric type
    "utils/json_schemas.py",  # JSON Schema's format `regex`, not the metric type
}


def test_the_metric_types_are_named_in_the_catalogue_and_nowhere_else():
    names = set(CATALOGUE)
    naming = {
        str(path.relative_to(ROOT))
        for package in SOURCE_PACKAGES
        for path in (ROOT / package).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in names
    }
    assert naming - TRANSLATIONS == {CATALOGUE_MODULE}


def test_other_tools_assertions_translate_into_catalogue_types():
    """The import tables of other tools' assertion types name the types they become."""
    translated = {assay_type for assay_type, _ in KINDS.values()} | {IDEAL.type}
    assert translated <= set(CATALOGUE)


def test_every_declared_type_has_its_tests():
    assert set(VALID) == set(CATALOGUE)


def test_a_declaration_has_the_scorer_of_its_kind_and_no_other():
    for metric_type in CATALOGUE.values():
        assert (metric_type.check is not None) is (metric_type.kind == "check")
        assert (metric_type.instructions is not None) is (metric_type.kind == "judge")
    with pytest.raises(TypeError):
        MetricType("half", "judge", ExpectedText, "a judge with a check", check=lambda *_: (1, ""))


def test_no_type_declares_a_parameter_named_scope_every_check_has_it():
    class Scoped(ExpectedText):
        scope: str = "mine"

    with pytest.raises(TypeError, match="scope"):
        MetricType("scoped", "check", Scoped, "a type of its own scope", check=lambda *_: (1, ""))
    for name, metric_type in CATALOGUE.items():
        fields = accepted_parameters(name).model_fields
        assert fields.keys() - metric_type.parameters.model_fields.keys() == (
            set() if metric_type.judged else {"scope"}
        )


async def test_the_api_schema_lists_the_catalogue(client):
    spec = (await client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    mapping = schemas["MetricCreate"]["discriminator"]["mapping"]
    assert set(mapping) == set(CATALOGUE)
    for name, ref in mapping.items():
        variant = schemas[ref.rsplit("/", 1)[-1]]["properties"]
        assert variant["type"]["const"] == name
        refs = [choice["$ref"] for choice in variant["parameters"]["anyOf"]]
        own, per_test = accepted_parameters(name), accepted_parameters(name, per_test=True)
        assert refs[0].endswith("/" + own.__name__)  # a check's with its scope
        assert refs[1].endswith("/" + per_test.__name__)  # or each test's
        for model in (own, per_test):
            documented = schemas[model.__name__].get("properties", {})
            assert ("scope" in documented) is (CATALOGUE[name].kind == "check")
        assert variant["threshold"]["default"] == CATALOGUE[name].threshold
        assert variant["operator"]["default"] == CATALOGUE[name].operator


@pytest.mark.parametrize("metric_type", list(CATALOGUE))
async def test_each_type_is_validated_and_defaulted_by_its_declaration(client, metric_type):
    declared = CATALOGUE[metric_type]
    owner = await register(client)
    project = await create_project(client, owner)
    unknown = await _post(
        client, owner, project["id"], type=metric_type, parameters={"no_such_parameter": 1}
    )
    assert unknown.status_code == 422
    assert "body.parameters.no_such_parameter" in _fields(unknown.json())
    created = await _post(client, owner, project["id"], type=metric_type, parameters={})
    if created.status_code == 201:  # a type whose parameters are all optional
        metric = created.json()
        assert (metric["threshold"], metric["operator"]) == (declared.threshold, declared.operator)
        assert metric["judge"] is declared.judged


class RecordingJudge:
    def __init__(self) -> None:
        self.prompts: list[str] = []

    async def __call__(self, prompt: str) -> Verdict:
        self.prompts.append(prompt)
        return Verdict(score=1.0, reason="fine")


@pytest.mark.parametrize("metric_type", list(CATALOGUE))
async def test_the_engine_scores_each_type_by_its_declaration(metric_type):
    declared = CATALOGUE[metric_type]
    parameters = declared.parameters.model_validate(VALID[metric_type][0]).model_dump(
        by_alias=True, exclude_none=True
    )
    spec = MetricSpec(
        name=metric_type, type=metric_type, parameters=parameters, threshold=declared.threshold
    )
    call = {"id": "c1", "name": "search", "arguments": {"q": "x"}}
    observation = Observation(
        output='{"a": 1}',
        input="q",
        expected="x",
        context=["c"],
        cost=0.001,
        tokens=3,
        tool_calls=[call],
        trajectory=[
            {
                "text": "",
                "tool_calls": [call],
                "tool_results": [{"id": "c1", "name": "search", "content": "found"}],
            },
            {"text": '{"a": 1}', "tool_calls": [], "tool_results": []},
        ],
        expected_tool_calls=[{"name": "search"}],
        tools=[{"type": "function", "function": {"name": "search", "parameters": {}}}],
    )
    judge = RecordingJudge()
    verdict = await score(spec, observation, judge)
    assert verdict.error is None, verdict
    assert len(judge.prompts) == (1 if declared.judged else 0)


async def test_an_operator_left_out_is_the_types_default_but_null_is_refused(client):
    owner = await register(client)
    project = await create_project(client, owner)
    refused = await _post(client, owner, project["id"], type="contains", operator=None)
    assert refused.status_code == 422
    assert _fields(refused.json()) == ["body.operator"]
    created = await _post(client, owner, project["id"], type="contains")
    assert created.json()["operator"] == CATALOGUE["contains"].operator
