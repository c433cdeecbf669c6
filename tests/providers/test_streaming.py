"""Streamed answers beyond the OpenAI wire format, through real HTTP against the fakes: the
pydantic-ai providers (Anthropic's Messages API here) hand over text as it arrives and give the
same reply as a whole answer (tokens and tool calls included), and a team's HTTP endpoint may
answer with server-sent events, each holding a piece of the answer at `stream_path`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from providers.config import TargetReply, TargetRequest, ToolCall
from providers.errors import TargetError
from providers.http_stream import EventStream
from providers.targets import call_target
from tests.fakes.anthropic_server import FakeAnthropic, FakeToolCall, FakeToolCalls
from tests.fakes.http_app import FakeHttpApp
from tests.fakes.server import Fault
from tests.providers.support import CLOCK, WEATHER, target_config

API_KEY = "sk-ant-streaming-test"
SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture
def anthropic() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(require_api_key=API_KEY) as server:
        yield server


@pytest.fixture
def app() -> Iterator[FakeHttpApp]:
    with FakeHttpApp(paths=["/chat"], sse=True) as server:
        yield server


class Pieces(list[str]):
    """The pieces handed over, with when each arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def __call__(self, piece: str) -> None:
        self.append(piece)
        self.times.append(time.perf_counter())


async def ask_anthropic(
    fake: FakeAnthropic,
    on_delta: Pieces | None,
    request: TargetRequest | None = None,
    **fields: Any,
) -> TargetReply:
    fields.setdefault("stream", True)
    config = target_config("anthropic", fake.url, model="claude-fake-1", api_key=API_KEY, **fields)
    return await call_target(
        config,
        request or TargetRequest(input="Say the sentence."),
        allow_private_networks=True,
        on_delta=on_delta,
    )


async def ask_app(app: FakeHttpApp, on_delta: Pieces | None, **fields: Any) -> TargetReply:
    settings: dict[str, Any] = {
        "http_method": "POST",
        "body_template": '{"question": {{ input | tojson }}}',
        "response_path": "$.data.answer",
        "stream_path": "$.delta",
        "stream": True,
    }
    config = target_config("http", f"{app.url}/chat", **{**settings, **fields})
    return await call_target(
        config, TargetRequest(input=SENTENCE), allow_private_networks=True, on_delta=on_delta
    )


# --- pydantic-ai providers -----------------------------------------------------------------


async def test_anthropic_streams_its_text_in_order(anthropic: FakeAnthropic) -> None:
    anthropic.reply = lambda request: SENTENCE
    anthropic.chunk_delay = 0.05
    pieces = Pieces()

    reply = await ask_anthropic(anthropic, pieces)

    assert anthropic.requests[0].json["stream"] is True
    assert len(pieces) == len(SENTENCE.split())
    assert "".join(pieces) == reply.output == SENTENCE
    assert pieces[0] == "The "
    # Handed over as they came, not all at the end.
    assert pieces.times[-1] - pieces.times[0] >= 0.05 * (len(pieces) - 2)
    assert (reply.input_tokens, reply.output_tokens) == (3, 9)
    assert reply.tool_calls == ()


async def test_anthropic_gives_the_same_reply_streamed_or_whole(anthropic: FakeAnthropic) -> None:
    anthropic.reply = lambda request: SENTENCE
    streamed = await ask_anthropic(anthropic, Pieces())
    whole = await ask_anthropic(anthropic, None)
    unasked = Pieces()
    not_configured = await ask_anthropic(anthropic, unasked, stream=False)

    assert [bool(r.json.get("stream")) for r in anthropic.requests] == [True, False, False]
    assert unasked == []  # without `stream` in the configuration, nothing is streamed
    for reply in (whole, not_configured):
        assert (reply.output, reply.input_tokens, reply.output_tokens, reply.tool_calls) == (
            streamed.output,
            streamed.input_tokens,
            streamed.output_tokens,
            streamed.tool_calls,
        )


async def test_anthropic_tool_calls_come_back_when_streaming(anthropic: FakeAnthropic) -> None:
    anthropic.reply = lambda request: FakeToolCalls(
        [
            FakeToolCall("get_weather", {"city": "Oslo", "unit": "C"}, id="toolu_01"),
            FakeToolCall("get_time", id="toolu_02"),
        ],
        content="Let me look.",
    )
    pieces = Pieces()

    reply = await ask_anthropic(anthropic, pieces, tools=[WEATHER, CLOCK])

    assert pieces == ["Let ", "me ", "look."]  # tool calls are not text
    assert reply.output == "Let me look."
    assert reply.tool_calls == (
        ToolCall("toolu_01", "get_weather", {"city": "Oslo", "unit": "C"}),
        ToolCall("toolu_02", "get_time", {}),
    )
    assert (reply.input_tokens, reply.output_tokens) == (3, 8)
    assert [tool["name"] for tool in anthropic.requests[0].json["tools"]] == [
        "get_weather",
        "get_time",
    ]


async def test_anthropic_only_tool_calls_stream_no_text(anthropic: FakeAnthropic) -> None:
    anthropic.reply = lambda request: FakeToolCalls([FakeToolCall("get_time", id="toolu_9")])
    pieces = Pieces()

    reply = await ask_anthropic(anthropic, pieces, tools=[CLOCK])

    assert (pieces, reply.output) == ([], "")
    assert reply.tool_calls == (ToolCall("toolu_9", "get_time", {}),)


@pytest.mark.parametrize(
    ("fault", "kind", "status"),
    [
        (Fault.http(429, retry_after=7), "rate_limited", 429),
        (Fault.http(529), "server_error", 529),
        (Fault.http(401), "auth_error", 401),
        (Fault.http(400), "client_error", 400),
        (Fault.malformed(), "invalid_response", None),
        (Fault.close(), "connection_error", None),
    ],
    ids=["429", "529", "401", "400", "malformed", "closed"],
)
async def test_anthropic_streamed_errors_keep_their_kinds(
    anthropic: FakeAnthropic, fault: Fault, kind: str, status: int | None
) -> None:
    anthropic.enqueue(fault)
    with pytest.raises(TargetError) as caught:
        await ask_anthropic(anthropic, Pieces())
    assert (caught.value.kind, caught.value.status) == (kind, status)
    if status == 429:
        assert caught.value.retry_after == 7
    assert API_KEY not in caught.value.message


async def test_anthropic_stream_that_never_answers_times_out(anthropic: FakeAnthropic) -> None:
    anthropic.enqueue(Fault.hang(10))
    started = time.perf_counter()
    with pytest.raises(TargetError) as caught:
        await ask_anthropic(anthropic, Pieces(), timeout_seconds=1)
    assert caught.value.kind == "timeout"
    assert time.perf_counter() - started < 5


async def test_a_slow_stream_is_held_to_the_overall_deadline(anthropic: FakeAnthropic) -> None:
    """Each piece comes well within the SDK's per-read timeout, but the whole answer takes
    longer than the call's time limit (and its grace): the call times out."""
    anthropic.reply = lambda request: " ".join(["word"] * 12)
    anthropic.chunk_delay = 0.3
    pieces = Pieces()
    started = time.perf_counter()
    with pytest.raises(TargetError) as caught:
        await ask_anthropic(anthropic, pieces, timeout_seconds=1)
    assert caught.value.kind == "timeout"
    assert 1.5 < time.perf_counter() - started < 3.5
    assert 2 <= len(pieces) < 12  # some text came live before the deadline


# --- a team's HTTP endpoint answering with server-sent events -------------------------------


async def test_http_events_stream_their_pieces(app: FakeHttpApp) -> None:
    app.event_delay = 0.05
    pieces = Pieces()

    reply = await ask_app(app, pieces)

    expected = f"echo: {SENTENCE}"
    assert pieces == ["echo: ", *(f"{word} " for word in SENTENCE.split()[:-1]), "dog."]
    assert "".join(pieces) == reply.output == expected
    assert pieces.times[-1] - pieces.times[0] >= 0.05 * (len(pieces) - 2)
    assert (reply.input_tokens, reply.output_tokens, reply.tool_calls) == (None, None, ())
    sent = app.requests[0]
    assert sent.json == {"question": SENTENCE}
    assert sent.headers["accept"].startswith("text/event-stream")


async def test_http_events_are_read_when_no_one_takes_the_pieces(app: FakeHttpApp) -> None:
    """An endpoint that only speaks events still answers a call without `on_delta` (a
    connection test, a process without a live stream)."""
    reply = await ask_app(app, None)
    assert reply.output == f"echo: {SENTENCE}"


async def test_http_events_may_carry_tool_calls(app: FakeHttpApp) -> None:
    app.reply = lambda body: {"calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}
    pieces = Pieces()

    reply = await ask_app(app, pieces, tool_calls_path="$.calls", tools=[WEATHER])

    assert (pieces, reply.output) == ([], "")
    assert reply.tool_calls == (ToolCall("call_0", "get_weather", {"city": "Oslo"}),)


async def test_a_whole_json_answer_to_a_streaming_request_still_works(app: FakeHttpApp) -> None:
    app.sse = False
    pieces = Pieces()

    reply = await ask_app(app, pieces)

    assert reply.output == f"echo: {SENTENCE}"
    assert pieces == []


async def test_without_stream_the_endpoint_is_not_asked_for_events(app: FakeHttpApp) -> None:
    app.sse = False
    pieces = Pieces()

    reply = await ask_app(app, pieces, stream=False)

    assert reply.output == f"echo: {SENTENCE}" and pieces == []
    assert (
        "accept" not in app.requests[0].headers
        or "event-stream" not in (app.requests[0].headers["accept"])
    )


@pytest.mark.parametrize(
    ("fault", "kind", "status"),
    [
        (Fault.http(503, "upstream overloaded"), "server_error", 503),
        (Fault.http(429, retry_after=3), "rate_limited", 429),
        (Fault.http(403), "auth_error", 403),
        (Fault.http(422), "client_error", 422),
        (Fault.malformed(), "invalid_response", None),
        (Fault.close(), "connection_error", None),
    ],
    ids=["503", "429", "403", "422", "malformed-event", "closed"],
)
async def test_streamed_http_errors_keep_their_kinds(
    app: FakeHttpApp, fault: Fault, kind: str, status: int | None
) -> None:
    app.enqueue(fault)
    with pytest.raises(TargetError) as caught:
        await ask_app(app, Pieces())
    assert (caught.value.kind, caught.value.status) == (kind, status)
    if status == 503:
        assert "upstream overloaded" in caught.value.message
    if status == 429:
        assert caught.value.retry_after == 3


async def test_events_without_a_piece_at_the_path_are_invalid(app: FakeHttpApp) -> None:
    with pytest.raises(TargetError) as caught:
        await ask_app(app, Pieces(), stream_path="$.text")
    assert caught.value.kind == "invalid_response"
    assert "$.text" in caught.value.message


async def test_a_slow_event_stream_times_out(app: FakeHttpApp) -> None:
    app.event_delay = 0.4
    pieces = Pieces()
    with pytest.raises(TargetError) as caught:
        await ask_app(app, pieces, timeout_seconds=1)
    assert caught.value.kind == "timeout"
    assert 1 <= len(pieces) < 10


# --- reading events ------------------------------------------------------------------------


def _reader(pieces: Pieces, **fields: Any) -> EventStream:
    def delta(document: Any) -> list[Any]:
        return [document["delta"]] if isinstance(document, dict) and "delta" in document else []

    return EventStream(pieces, stream_path="$.delta", find_piece=delta, **fields)


def _feed(stream: EventStream, text: str) -> None:
    for line in text.split("\n"):
        stream.line(line.encode())


def test_an_event_is_its_data_lines_up_to_a_blank_line() -> None:
    pieces = Pieces()
    stream = _reader(pieces)
    _feed(
        stream,
        ': comment\nretry: 100\nevent: delta\nid: 1\ndata: {"delta":\ndata: "a"}\n\n'
        'data:{"delta": " b"}\r\n\n'
        'data: {"status": "thinking"}\n\n'
        'data: {"delta": null}\n\n'
        'data: {"delta": 7}\n\n'
        'data: {"delta": "c"}',  # the last event, closed by the end of the stream
    )
    assert stream.finish() == ("a b7c", ())
    assert pieces == ["a", " b", "7", "c"]


def test_done_ends_the_answer() -> None:
    pieces = Pieces()
    stream = _reader(pieces)
    _feed(stream, 'data: {"delta": "x"}\n\ndata: [DONE]\n\ndata: {"delta": "late"}\n\n')
    assert stream.finish() == ("x", ())
    assert pieces == ["x"]


def test_calls_of_several_events_are_numbered_together() -> None:
    def calls(document: Any) -> list[Any]:
        return list(document.get("calls") or []) if isinstance(document, dict) else []

    stream = _reader(Pieces(), tool_calls_path="$.calls", find_calls=calls)
    _feed(
        stream,
        'data: {"calls": [{"name": "a"}]}\n\n'
        'data: {"calls": [{"name": "b", "arguments": "{}"}]}\n\n',
    )
    assert stream.finish() == ("", (ToolCall("call_0", "a", {}), ToolCall("call_1", "b", {})))


def test_a_stream_with_nothing_at_the_path_is_invalid() -> None:
    stream = _reader(Pieces())
    _feed(stream, 'data: {"other": 1}\n\ndata: [DONE]\n\n')
    with pytest.raises(TargetError) as caught:
        stream.finish()
    assert caught.value.kind == "invalid_response"


def test_an_event_that_is_not_json_is_invalid() -> None:
    stream = _reader(Pieces())
    with pytest.raises(TargetError) as caught:
        _feed(stream, "data: {oops\n\n")
    assert caught.value.kind == "invalid_response"


def test_an_event_larger_than_its_cap_is_an_invalid_response() -> None:
    """An event is parsed and read at its path on the event loop: 256 KB of it at most (a
    5.9 MB event read at `$..text` held the loop for 5.3 s)."""
    from providers.http_stream import MAX_EVENT_BYTES

    pieces = Pieces()
    stream = _reader(pieces)
    _feed(stream, 'data: {"delta": "' + "x" * (MAX_EVENT_BYTES - 100) + '"}\n')
    assert len(pieces[0]) == MAX_EVENT_BYTES - 100  # within it, read as ever
    half = "x" * (MAX_EVENT_BYTES // 2)
    with pytest.raises(TargetError) as caught:
        _feed(stream, f'data: {{"delta": "{half}\ndata: {half}"}}\n')  # two lines, one event
    assert caught.value.kind == "invalid_response"
    assert f"larger than {MAX_EVENT_BYTES} bytes" in caught.value.message


@pytest.mark.parametrize(
    "failing",
    [
        'data: {"error": {"message": "the model crashed"}}\n\n',
        'event: error\ndata: {"message": "the model crashed"}\n\n',
    ],
    ids=["an error key", "an error event"],
)
def test_an_error_mid_stream_is_the_answer_not_the_pieces_before_it(failing: str) -> None:
    """The text before it was taken as the whole answer, and scored: a model that crashed
    midway could pass."""
    stream = _reader(Pieces())
    with pytest.raises(TargetError) as failed:
        _feed(stream, 'data: {"delta": "The answer is"}\n\n' + failing + "data: [DONE]\n\n")
    assert failed.value.kind == "server_error"
    assert "the stream reported an error: the model crashed" in failed.value.message


def test_an_events_name_ends_with_it_though_it_had_no_data() -> None:
    """`event: error` and a blank line, with no data, named the next event an error."""
    stream = _reader(Pieces())
    _feed(stream, 'event: error\n\ndata: {"delta": "hi"}\n\ndata: [DONE]\n\n')
    assert stream.finish() == ("hi", ())
