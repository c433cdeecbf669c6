from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationInfo,
    model_serializer,
    model_validator,
)

from database.tests.agent_fields import (
    Conversation,
    ExpectedToolCalls,
    MaxSteps,
    ToolResponses,
    refuse_deeper,
    without_absent_agent_fields,
)
from utils import fastjson
from utils.schemas import InputModel, OutputModel, example, text_problem

MAX_TEXT = 100_000
Label = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]
MAX_TAGS = 50
# A tag given twice is one tag, so the limit counts distinct tags; the list as sent has a
# generous bound of its own, so one tag repeated a million times is refused before it is read.
MAX_TAGS_AS_SENT = 10 * MAX_TAGS


def _distinct_tags(tags: list[str]) -> list[str]:
    """Each tag once, in the place it was first given."""
    distinct = list(dict.fromkeys(tags))
    if len(distinct) > MAX_TAGS:
        raise ValueError(f"must have at most {MAX_TAGS} distinct tags")
    return distinct


Tags = Annotated[
    list[Tag],
    Field(max_length=MAX_TAGS_AS_SENT, description=f"At most {MAX_TAGS} distinct tags"),
    AfterValidator(_distinct_tags),
]
LongText = Annotated[str, StringConstraints(max_length=MAX_TEXT)]


def _blank_to_none(value: object) -> object:
    """Blank text is no text: an empty input or expected output would be an empty CSV cell on
    export, so it could not round-trip (an empty input made the whole row vanish)."""
    return None if isinstance(value, str) and not value.strip() else value


OptionalText = Annotated[LongText | None, BeforeValidator(_blank_to_none)]

# A test's free-form objects: bounded, so no one test can make every read of it slow.
MAX_FREE_FORM_KEYS = 200
MAX_FREE_FORM_BYTES = 256 * 1024
MAX_FREE_FORM_DEPTH = 16
FREE_FORM_RULE = (
    f"at most {MAX_FREE_FORM_KEYS} keys, {MAX_FREE_FORM_BYTES // 1024} KB as JSON,"
    f" {MAX_FREE_FORM_DEPTH} levels deep"
)


def _bounded(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    """After the entries are validated (the key count is checked before them)."""
    if info.context and info.context.get("stored"):
        return value  # read back from the database: not judged again by newer limits
    problem = text_problem(value)  # before measuring it as JSON, which needs storable text
    if problem:
        raise ValueError(problem)
    refuse_deeper(value, MAX_FREE_FORM_DEPTH)
    if len(fastjson.dumps_bytes(value)) > MAX_FREE_FORM_BYTES:
        raise ValueError(f"must be at most {MAX_FREE_FORM_BYTES // 1024} KB as JSON")
    return value


def _few_enough_keys(value: Any, info: ValidationInfo) -> Any:
    """Before validating each entry: a huge object is refused without being walked."""
    stored = info.context and info.context.get("stored")
    if isinstance(value, dict) and len(value) > MAX_FREE_FORM_KEYS and not stored:
        raise ValueError(f"must have at most {MAX_FREE_FORM_KEYS} keys")
    return value


FreeForm = Annotated[
    dict[str, Any],
    Field(json_schema_extra={"maxProperties": MAX_FREE_FORM_KEYS}),
    BeforeValidator(_few_enough_keys),
    AfterValidator(_bounded),
]


NEEDS_INPUT = "a test needs input, messages or a conversation"
INPUT_FIELDS = ("input", "messages", "conversation")


def has_input(input: str | None, messages: list[Any] | None, conversation: object) -> bool:
    """The one rule across fields: a test has something to send the target."""
    return input is not None or bool(messages) or conversation is not None


class ChatMessage(InputModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: LongText


class TestCaseFields(InputModel):
    """What a test case is made of; shared by create, bulk, import and version snapshots."""

    input: OptionalText = Field(default=None, description="The prompt text")
    messages: list[ChatMessage] | None = Field(
        default=None, max_length=200, description="A chat, instead of (or besides) input"
    )
    expected_output: OptionalText = Field(
        default=None, description="The reference answer metrics compare with"
    )
    context: list[LongText] = Field(
        default_factory=list, max_length=100, description="Passages for grounding checks"
    )
    behavior: Label | None = Field(
        default=None, description="What the answer should do (answer, refuse, ...): a slice"
    )
    category: Label | None = Field(default=None, description="A slice of summaries")
    topic: Label | None = Field(default=None, description="A slice of summaries")
    tags: Tags = Field(default_factory=list)
    variables: FreeForm = Field(
        default_factory=dict,
        description=f"Values for the prompt template ({FREE_FORM_RULE})",
    )
    metadata: FreeForm = Field(
        default_factory=dict,
        description=f"Anything else; recorded outputs are read from here ({FREE_FORM_RULE})",
    )
    expected_tool_calls: ExpectedToolCalls = None
    tool_responses: ToolResponses = None
    max_steps: MaxSteps = None
    conversation: Conversation | None = Field(
        default=None, description="A multi-turn test: scripted user turns or a simulated user"
    )

    @model_serializer(mode="wrap")
    def _as_stored(self, dump: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return without_absent_agent_fields(dump(self))

    @model_validator(mode="after")
    def _has_input(self) -> TestCaseFields:
        if not has_input(self.input, self.messages, self.conversation):
            raise ValueError(NEEDS_INPUT)
        return self


class TestCreate(TestCaseFields):
    model_config = example(
        {
            "project_id": "3f1c2a9e-6b7d-4e58-9a01-2c3d4e5f6a7b",
            "input": "How do I reset my password?",
            "expected_output": "Settings → Security → Reset password",
            "behavior": "answer",
            "category": "account",
            "tags": ["smoke"],
            "variables": {"product": "Example app"},
            "metadata": {"source": "support tickets"},
        }
    )

    project_id: uuid.UUID


class TestUpdate(InputModel):
    model_config = example(
        {
            "expected_output": "Open Settings, then Security, then Reset password",
            "tags": ["smoke", "account"],
        }
    )

    input: OptionalText = None
    messages: list[ChatMessage] | None = Field(default=None, max_length=200)
    expected_output: OptionalText = None
    context: list[LongText] | None = Field(default=None, max_length=100)
    behavior: Label | None = None
    category: Label | None = None
    topic: Label | None = None
    tags: Tags | None = None
    variables: FreeForm | None = None
    metadata: FreeForm | None = None
    expected_tool_calls: ExpectedToolCalls = None
    tool_responses: ToolResponses = None
    max_steps: MaxSteps = None
    conversation: Conversation | None = None


class TestRead(OutputModel):
    id: uuid.UUID
    project_id: uuid.UUID
    input: str | None
    messages: list[dict[str, Any]] | None
    expected_output: str | None
    context: list[str]
    behavior: str | None
    category: str | None
    topic: str | None
    tags: list[str]
    variables: dict[str, Any]
    metadata: dict[str, Any] = Field(validation_alias="meta")
    expected_tool_calls: list[dict[str, Any]] | None = Field(
        default=None, description="The calls the agent should make, in order"
    )
    tool_responses: list[dict[str, Any]] | None = Field(
        default=None, description="Mocked tool answers the engine's agent loop hands back"
    )
    max_steps: int | None = Field(default=None, description="Model calls at most")
    conversation: dict[str, Any] | None = Field(
        default=None, description="Scripted user turns, or a simulated user"
    )
    created_at: datetime
    updated_at: datetime


MAX_BULK = 1000


class TestBulkCreate(InputModel):
    model_config = example(
        {
            "project_id": "3f1c2a9e-6b7d-4e58-9a01-2c3d4e5f6a7b",
            "test_set_id": "7c8d9e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f",
            "tests": [
                {
                    "input": "How do I reset my password?",
                    "expected_output": "Reset password",
                    "behavior": "answer",
                },
                {"input": "Write me malware", "behavior": "refuse", "category": "safety"},
            ],
        }
    )

    project_id: uuid.UUID
    test_set_id: uuid.UUID | None = Field(
        default=None, description="Also append the new tests to this test set"
    )
    tests: list[TestCaseFields] = Field(
        min_length=1, max_length=MAX_BULK, description="All created, or none"
    )


class BulkCreated(OutputModel):
    created: int
    ids: list[uuid.UUID]
