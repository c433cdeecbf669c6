"""Tenants' JSON Schemas: checked, and validated with patterns that cannot hang the process."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from database.evaluations.catalogue import score
from database.evaluations.scoring import MetricSpec, Observation
from utils.check_budget import one_budget
from utils.json_schemas import SchemaTooCostly, bounded_validator, check_json_schema, first_error

EVIL = "^(a|a)*$"  # backtracks exponentially on "aaaa...!", in re and in regex alike
SLOW_TEXT = "a" * 40 + "!"


def test_a_schema_is_checked_saying_where_it_is_wrong() -> None:
    assert check_json_schema({"type": "object"}) == {"type": "object"}
    with pytest.raises(ValueError, match="not a valid JSON schema at properties/x/type"):
        check_json_schema({"properties": {"x": {"type": 5}}})


def test_patterns_still_validate() -> None:
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
        "patternProperties": {"^x-": {"type": "integer"}},
        "additionalProperties": False,
    }
    validator = bounded_validator(schema)
    assert validator.is_valid({"code": "ABC", "x-count": 3})
    messages = sorted(
        error.message for error in validator.iter_errors({"code": "abc", "x-a": "s", "y": 1})
    )
    assert messages == [
        "'abc' does not match '^[A-Z]{3}$'",
        "'s' is not of type 'integer'",
        "additional properties are not allowed ('y' unexpected)",
    ]


@pytest.mark.parametrize(
    ("schema", "instance"),
    [
        ({"type": "string", "pattern": EVIL}, SLOW_TEXT),
        ({"type": "object", "patternProperties": {EVIL: {}}}, {SLOW_TEXT: 1}),
        (
            {"type": "object", "patternProperties": {EVIL: {}}, "additionalProperties": False},
            {SLOW_TEXT: 1},
        ),
        ({"type": "object", "propertyNames": {"pattern": EVIL}}, {SLOW_TEXT: 1}),
    ],
)
def test_a_backtracking_pattern_is_stopped_quickly(schema: dict, instance: object) -> None:
    started = time.process_time()
    with pytest.raises(SchemaTooCostly, match="took longer than"):
        list(bounded_validator(schema).iter_errors(instance))
    assert time.process_time() - started < 3


async def test_a_tools_backtracking_pattern_is_a_metric_error_not_a_hang() -> None:
    tools = [
        {
            "type": "function",
            "function": {"name": "find", "parameters": {"properties": {"q": {"pattern": EVIL}}}},
        }
    ]
    observation = Observation(
        output="",
        input="x",
        tool_calls=[{"id": "1", "name": "find", "arguments": {"q": SLOW_TEXT}}],
        tools=tools,
    )
    spec = MetricSpec(name="args", type="tool-args-schema", parameters={}, threshold=1.0)
    started = time.process_time()
    verdict = await score(spec, observation, None)
    assert verdict.error is not None and "took longer than" in verdict.error
    assert time.process_time() - started < 3


def _doubling_refs(depth: int) -> dict:
    """Each definition refers twice to the one before: 1.8 KB at depth 25 is 2**25 checks."""
    definitions: dict = {"a0": {"type": "object"}}
    for i in range(1, depth + 1):
        definitions[f"a{i}"] = {"allOf": [{"$ref": f"#/$defs/a{i - 1}"}] * 2}
    return {"$defs": definitions, "$ref": f"#/$defs/a{depth}"}


@pytest.mark.parametrize(
    ("schema", "output", "why"),
    [
        (_doubling_refs(25), "{}", "took longer than 1 s"),
        # several slow patterns: each within its own limit, all of them past the validation's
        (
            {"type": "array", "items": {"not": {"pattern": "(.*,){6}x"}}},
            json.dumps(["a," * 200] * 200),  # 0.12 s each: 25 s in all
            "took longer than",
        ),
    ],
)
async def test_a_costly_validation_is_a_metric_error_within_a_second(
    schema: dict, output: str, why: str
) -> None:
    check_json_schema(schema)  # each is a valid schema: the cost is in validating
    spec = MetricSpec(name="s", type="json-schema", parameters={"schema": schema}, threshold=1.0)
    started = time.monotonic()
    verdict = await score(spec, Observation(output=output, input="x"), None)
    assert verdict.error is not None and why in verdict.error, verdict
    assert time.monotonic() - started < 3


def test_unique_items_is_judged_as_json_equality_in_linear_time() -> None:
    validator = bounded_validator({"type": "array", "uniqueItems": True})
    assert first_error(validator, [{"a": [1, {"b": 2}]} for _ in range(1)] + [1, True, "1"]) is None
    assert first_error(validator, [1, 1.0]) is not None  # JSON numbers: equal
    assert first_error(validator, [{"a": 1, "b": [2]}, {"b": [2.0], "a": 1}]) is not None
    assert first_error(validator, [[1, 2], [2, 1], True, 1, None, False, 0]) is None
    # 20,000 distinct objects (jsonschema compares them pairwise: 417 s)
    started = time.monotonic()
    assert first_error(validator, [{"n": i, "s": str(i)} for i in range(20_000)]) is None
    assert time.monotonic() - started < 3


def test_one_budget_is_shared_by_a_checks_validations() -> None:
    """A check validating each of 128 tool calls has one second for all of them."""
    validator = bounded_validator({"type": "string", "pattern": "(.*,){6}x"})
    started = time.monotonic()
    with pytest.raises(SchemaTooCostly), one_budget():
        for _ in range(128):
            first_error(validator, "a," * 200)  # 0.12 s each
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("schema", "said"),
    [
        ({"type": "string", "pattern": "a{99999999999}"}, "copies of its parts"),
        ({"$schema": 5}, "at $schema: a metaschema's URI"),
        ({"$schema": [1]}, "at $schema: a metaschema's URI"),
    ],
)
def test_a_schema_its_metaschema_cannot_check_is_refused_not_raised(schema, said) -> None:
    """Each raised past the metaschema's check (OverflowError, AttributeError, TypeError): a 500
    wherever a tenant's schema is taken."""
    with pytest.raises(ValueError, match="not a valid JSON schema") as refused:
        check_json_schema(schema)
    assert said in str(refused.value)


@pytest.mark.parametrize(
    "ref", ["file:///etc/hostname", "http://127.0.0.1:9/schema", "other.json", "//host/x"]
)
def test_a_reference_outside_the_schema_is_refused_where_it_is(ref: str) -> None:
    with pytest.raises(ValueError, match=f"at properties/a: .*{ref[:8]}.*refers outside"):
        check_json_schema({"properties": {"a": {"$ref": ref}}})
    assert check_json_schema({"$defs": {"a": {}}, "$ref": "#/$defs/a"})
    assert check_json_schema({"$ref": "https://json-schema.org/draft/2020-12/schema"})


def test_a_reference_is_never_fetched_whatever_the_schema(tmp_path) -> None:
    """jsonschema's own registry read any URL a `$ref` named, `file://` ones included, with
    no timeout, and quoted what it read in the error a tenant saw. A schema stored before
    the check (or that passed it by its `$id`) is validated without fetching anything."""
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"enum": ["the file's content"]}))
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"enum": ["fetched"]}')

        def log_message(self, *args: object) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        for schema in (
            {"$ref": secret.as_uri()},
            {"$ref": url + "schema"},
            {"$id": url, "$ref": "relative"},
        ):
            with pytest.raises(Exception, match="Unresolvable") as refused:
                first_error(bounded_validator(schema), "x")
            assert "content" not in str(refused.value)
        server.shutdown()
    assert hits == []


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ({"properties": {"a": {"type": "string", "pattern": "(?x)a b"}}}, "properties/a/pattern"),
        ({"items": {"pattern": "a{1001}"}}, "items/pattern"),
        ({"patternProperties": {"(?x)a b": {}}}, "patternProperties"),
    ],
)
def test_a_pattern_validation_could_not_run_is_refused_when_saved(schema, where) -> None:
    """The metaschema checks a pattern with `re`; validation matches with `regex`, bounded:
    a pattern only `re` takes was saved, then errored every case."""
    with pytest.raises(ValueError, match=f"at {where}: "):
        check_json_schema(schema)


@pytest.mark.parametrize(
    "schema",
    [
        {"const": {"$ref": "https://example.com/x"}},  # data that looks like a schema
        {"type": "object", "examples": [{"b": {"$ref": "definitions.json"}}]},
        {"type": "object", "default": {"pattern": "*.py"}},  # a glob, as tool arguments have
        {"enum": [{"pattern": "*.py"}]},
        {"properties": {"pattern": {"type": "string", "pattern": "^[a-z]+$"}}},
        {  # a part with an `$id` of its own, named relative to the root's
            "$id": "https://example.com/root.json",
            "$defs": {"a": {"$id": "a.json", "type": "string"}},
            "properties": {"x": {"$ref": "a.json"}},
        },
        {"$id": "https://example.com/r.json", "$defs": {"a": {}}, "$ref": "r.json#/$defs/a"},
        {"$defs": {"a": {"$anchor": "here"}}, "$ref": "#here"},
    ],
)
def test_a_reference_or_pattern_rule_reads_only_the_schemas_own_places(schema) -> None:
    assert check_json_schema(schema) == schema
    first_error(bounded_validator(schema), "x")  # and validates, resolving nothing outside
