"""What a test of an agent holds besides its input: the tool calls it expects, the tools'
mocked responses (so the engine can run the agent's loop itself), its step bound, and the
conversation it holds (scripted user turns, or a simulated user with a persona and a goal)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    JsonValue,
    StringConstraints,
    ValidationInfo,
    model_validator,
)

from database.models.schemas import ToolName
from utils import fastjson
from utils.json_schemas import MAX_SCHEMA_DEPTH
from utils.save_checks import schema_in_body
from utils.schemas import InputModel, nesting_depth

MAX_STEPS = 50
MAX_TOOL_ITEMS = 100
MAX_TOOL_RESPONSES_BYTES = 256 * 1024
MAX_ARGUMENTS_BYTES = 20_000  # an expectation's arguments (the tool-call metric's own bound)
ArgumentMatch = Literal["exact", "subset", "schema"]
# Expected arguments may be a JSON Schema, which nests up to MAX_SCHEMA_DEPTH levels: the one
# bound of a tool field's JSON. Validation accepted about 255 levels, but pydantic serializes
# fewer, so a deeper test was a 500 when created, and one edited in broke its versions' reads.
MAX_TOOL_JSON_DEPTH = MAX_SCHEMA_DEPTH


def refuse_deeper(value: Any, limit: int) -> None:
    """A ValueError when objects and lists nest in `value` more than `limit` levels deep."""
    if nesting_depth(value, limit) > limit:
        raise ValueError(f"must be at most {limit} levels deep")


def _shallow_enough(value: Any, info: ValidationInfo) -> Any:
    if not (info.context and info.context.get("stored")):  # as stored: not judged again
        refuse_deeper(value, MAX_TOOL_JSON_DEPTH)
    return value


ToolArguments = Annotated[dict[str, JsonValue] | None, AfterValidator(_shallow_enough)]


class ExpectedToolCall(InputModel):
    """A call the agent should make: its tool, and its arguments as exact values, a subset of
    them, or a JSON Schema they must satisfy (no arguments: any)."""

    name: ToolName
    arguments: ToolArguments = None
    match: ArgumentMatch = "exact"

    @model_validator(mode="after")
    def _schema_is_valid(self) -> ExpectedToolCall:
        if self.arguments is not None:
            size = len(fastjson.dumps_bytes(self.arguments))
            if size > MAX_ARGUMENTS_BYTES:
                raise ValueError(f"arguments: at most {MAX_ARGUMENTS_BYTES:,} bytes of JSON")
        if self.match == "schema" and self.arguments is not None:
            try:
                schema_in_body(self.arguments)
            except ValueError as exc:
                raise ValueError(f"arguments: {exc}") from None
        return self


def expected_schemas(calls: list[ExpectedToolCall] | None) -> list[tuple[str, Any]]:
    """The JSON Schemas of the calls that expect arguments to satisfy one, each with its
    field (for `utils.save_checks.check_schemas`)."""
    return [
        (f"expected_tool_calls.{index}.arguments", call.arguments)
        for index, call in enumerate(calls or [])
        if call.match == "schema" and call.arguments is not None
    ]


class ToolResponse(InputModel):
    """What a mocked tool answers: for calls of `name` (none: any tool without an answer of
    its own) whose arguments include `arguments` (none: any arguments)."""

    name: ToolName | None = None
    arguments: ToolArguments = None
    response: Annotated[JsonValue, AfterValidator(_shallow_enough)] = Field(
        description="Text, or any JSON, handed back to the model"
    )


def _bounded(responses: list[ToolResponse] | None) -> list[ToolResponse] | None:
    if responses is not None:
        size = len(fastjson.dumps_bytes([r.model_dump(mode="json") for r in responses]))
        if size > MAX_TOOL_RESPONSES_BYTES:
            raise ValueError(f"must be at most {MAX_TOOL_RESPONSES_BYTES // 1024} KB as JSON")
    return responses


ExpectedToolCalls = Annotated[
    list[ExpectedToolCall] | None,
    Field(
        max_length=MAX_TOOL_ITEMS,
        description="The calls the agent should make, in order (scored by tool-call and"
        " trajectory)",
    ),
]
ToolResponses = Annotated[
    list[ToolResponse] | None,
    Field(
        max_length=MAX_TOOL_ITEMS,
        description="Mocked tool answers: with them the engine runs the agent's loop (call,"
        " answer its tool calls, call again) up to max_steps; without, the first reply's calls"
        " are recorded as they are",
    ),
    AfterValidator(_bounded),
]
MaxSteps = Annotated[
    int | None,
    Field(ge=1, le=MAX_STEPS, description="Model calls at most (else the run's)"),
]
MAX_TURNS = 50
TurnText = Annotated[str, StringConstraints(min_length=1, max_length=100_000)]
Brief = Annotated[str, StringConstraints(min_length=1, max_length=4000)]


class SimulatedUser(InputModel):
    """A user played by a model (the run's simulator): it talks to the target in its persona
    until its goal is reached, the target gives up, or max_turns."""

    persona: Brief = Field(description="Who the user is and how they talk")
    goal: Brief = Field(description="What the user wants; also what goal-completion judges")
    first_message: TurnText | None = Field(
        default=None, description="The user's opening line (else the simulator writes it)"
    )
    max_turns: int = Field(default=5, ge=1, le=MAX_TURNS)


class Conversation(InputModel):
    """Scripted `turns` (the user's messages, sent one after another with the history kept)
    or a `simulated` user; exactly one of them."""

    turns: list[TurnText] | None = Field(default=None, min_length=1, max_length=MAX_TURNS)
    simulated: SimulatedUser | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Conversation:
        if (self.turns is None) == (self.simulated is None):
            raise ValueError("give either scripted turns or a simulated user")
        return self


AGENT_FIELDS = ("expected_tool_calls", "tool_responses", "max_steps", "conversation")


def without_absent_agent_fields(data: dict[str, Any]) -> dict[str, Any]:
    """A case as stored and hashed: agent fields only when set, so the cases of plain tests
    (and their versions' content hashes) read as they did before agents existed."""
    for key in AGENT_FIELDS:
        if data.get(key) is None:
            data.pop(key, None)
    return data
