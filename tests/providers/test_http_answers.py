"""Reading a team's endpoint's answer, through real HTTP: its paths hold at most one recursive
descent and no regular expression or arithmetic, a large answer is read off the event loop, an
answer nested past any parser's depth is an invalid response (not a crash), and an error body
echoing a credential across the point where it is cut shows none of it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from database.models.service import check_jsonpath
from providers import targets
from providers.config import TargetRequest
from providers.errors import DETAIL_READ_CHARS, MESSAGE_CHARS, TargetError
from providers.targets import call_target
from tests.fakes.http_app import FakeHttpApp, Fault
from tests.providers.support import target_config
from utils.errors import InvalidInput

TOKEN = "team-app-token-0123456789abcdef"


@pytest.fixture
def app() -> Iterator[FakeHttpApp]:
    with FakeHttpApp(paths=["/chat"]) as server:
        yield server


async def _call(app: FakeHttpApp, response_path: str = "$.data.answer") -> Any:
    config = target_config(
        "http",
        f"{app.url}/chat",
        api_key=None,
        http_method="POST",
        http_headers={"Authorization": f"Bearer {TOKEN}"},
        body_template='{"message": {{ input | tojson }}}',
        response_path=response_path,
    )
    return await call_target(config, TargetRequest(input="hi"), allow_private_networks=True)


@pytest.mark.parametrize(
    "path",
    [
        "$..a..a",
        "$..a.b..c",
        "$.x..y[*]..z",
        "$[?(@..a)]..b",
        "$..['a']..b",
        # A quote inside a backtick operator's arguments is no quote to the parser: read as
        # text, everything up to the next quote looked like one quoted name.
        "$.x.`split(', *, -1)`..a..a..a[?(@.y == 'b')]",
    ],
)
def test_a_path_with_two_recursive_descents_is_refused_naming_the_field(path: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_jsonpath(path, field="http.response_path")
    [error] = refused.value.errors or []
    assert error["field"] == "http.response_path"
    assert "recursive descents" in error["message"]


@pytest.mark.parametrize("path", ["$..answer", "$.data.answer", "$['a..b'].c", "$.items[*].x"])
def test_paths_of_one_descent_or_none_are_accepted(path: str) -> None:
    check_jsonpath(path, field="http.response_path")


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ('$.items[?(@.a =~ "(a+)+$")].a', "regular expression"),
        ('$.items[?(@.b == 1 && @.a =~ "(")].a', "regular expression"),
        ("$.a.`sub(/(a+)+$/, x)`", "regular expression"),
        ("$.text * $.count", "arithmetic (`*`)"),
        ("$.items[?(@.n * 2 > 3)]", "arithmetic (`*`)"),
        ("$.a[/b.`sub(/(a+)+$/, x)`]", "regular expression"),  # within a sort's key
        ("$[/`sub(/(a+)+$/, x)`]", "regular expression"),
        ("$.a[\\(@.b * @.c)]", "arithmetic (`*`)"),
        ("$.a[/(@.b * 2)]", "arithmetic (`*`)"),
    ],
)
def test_a_path_that_could_run_without_bound_is_refused_naming_the_field(
    path: str, named: str
) -> None:
    """`(a+)+$` over 25 characters took 2.9 s on the event loop (each more doubles it), and
    `$.text * $.count` repeats a text as often as the answer says."""
    with pytest.raises(InvalidInput) as refused:
        check_jsonpath(path, field="http.response_path")
    [error] = refused.value.errors or []
    assert error["field"] == "http.response_path" and named in error["message"]


async def test_a_regular_expression_saved_before_the_rule_is_a_configuration_error(
    app: FakeHttpApp,
) -> None:
    app.reply = lambda body: {"items": [{"a": "a" * 40 + "b"}]}
    with pytest.raises(TargetError) as failed:
        await _call(app, '$.items[?(@.a =~ "(a+)+$")].a')
    assert failed.value.kind == "configuration_error"
    assert "regular expression" in failed.value.message


async def test_a_path_saved_before_the_rule_is_a_configuration_error(app: FakeHttpApp) -> None:
    """Nested 200 deep, `$..a..a..a` held the event loop for 10 s; it is not walked at all."""
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(200):
        node["a"] = node = {}
    app.reply = lambda body: deep
    with pytest.raises(TargetError) as failed:
        await _call(app, "$..a..a..a")
    assert failed.value.kind == "configuration_error"
    assert "at most 1 is allowed" in failed.value.message


async def test_a_large_answer_is_read_in_a_thread_as_a_small_one_is(
    app: FakeHttpApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_in: list[str] = []
    original = targets._read_answer

    def reading(*args: Any) -> Any:
        read_in.append(threading.current_thread().name)
        return original(*args)

    monkeypatch.setattr(targets, "_read_answer", reading)
    filler = [{"n": i, "text": "x" * 100} for i in range(2_000)]  # about 250 KB
    app.reply = lambda body: {"filler": filler, "data": {"answer": "found"}}
    assert (await _call(app, "$..answer")).output == "found"
    app.reply = lambda body: {"data": {"answer": "small"}}
    assert (await _call(app, "$..answer")).output == "small"
    assert read_in[0] != "MainThread" and read_in[1] == "MainThread"
    assert targets.READ_ON_LOOP_BYTES < 250_000


async def test_an_answer_nested_past_the_parsers_depth_is_an_invalid_response(
    app: FakeHttpApp,
) -> None:
    for nested in ("[" * 100_000, "[" * 2_000 + "]" * 2_000):
        app.enqueue(Fault.http(200, nested))
        with pytest.raises(TargetError) as failed:
            await _call(app)
        assert failed.value.kind == "invalid_response"
        assert "did not answer with JSON" in failed.value.message


@pytest.mark.parametrize("at", [250, 270, 290, 299, DETAIL_READ_CHARS - 10])
async def test_a_credential_echoed_across_a_cut_shows_none_of_it(app: FakeHttpApp, at: int) -> None:
    """The body is cut after the token is redacted: before, a token across the cut kept its
    visible part (`bad key team-app-tok`)."""
    body = "e" * at + f" bad key {TOKEN} " + "f" * 5_000
    app.enqueue(Fault.http(401, body))
    with pytest.raises(TargetError) as failed:
        await _call(app)
    message = failed.value.message
    assert "401" in message and len(message) <= MESSAGE_CHARS
    assert TOKEN[:8] not in message


@pytest.mark.parametrize(
    ("body", "output"),
    [
        ('{"data": {"answer": 123456789012345678901234567890}}', "123456789012345678901234567890"),
        ('{"data": {"answer": NaN}}', "NaN"),  # what Python's json.dumps writes by default
        ('{"data": {"answer": "plain"}}', "plain"),
    ],
)
async def test_answers_are_read_as_json_reads_them(app: FakeHttpApp, body: str, output: str):
    app.enqueue(Fault.http(200, body))
    assert (await _call(app)).output == output


@pytest.mark.parametrize("depth", [253, 300, 1000])
async def test_a_value_nested_past_what_is_stored_is_an_invalid_response(
    app: FakeHttpApp, depth: int
) -> None:
    """Read (orjson takes 1,024 levels), then written back as text, a value 1,000 deep raised
    a RecursionError that escaped the call: the case's whole chunk failed, five times over,
    and test-connection was a 500. Past 254 levels (what is stored), it is this case's."""
    app.enqueue(Fault.http(200, '{"data": {"answer": ' + "[" * depth + "]" * depth + "}}"))
    with pytest.raises(TargetError) as failed:
        await _call(app)
    assert failed.value.kind == "invalid_response"
    app.enqueue(Fault.http(200, '{"data": {"answer": ' + "[" * 252 + "]" * 252 + "}}"))
    assert (await _call(app)).output == "[" * 252 + "]" * 252  # 254 levels with its two
