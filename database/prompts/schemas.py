from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints

from database.models.schemas import ModelParameters
from utils.schemas import MAX_INT4, InputModel, Name, OutputModel, WholeNumber, example

Template = Annotated[str, StringConstraints(min_length=1, max_length=100_000)]


def _not_a_version_reference(name: str) -> str:
    """A label is fetched where a version number or `latest` is: it must be neither."""
    if name == "latest":
        raise ValueError("`latest` is reserved")
    if name.isdigit():
        raise ValueError("a label must not be a number (it would read as a version number)")
    return name


LabelName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", strip_whitespace=True),
    AfterValidator(_not_a_version_reference),
]
MAX_VERSION_NUMBER = MAX_INT4  # version numbers are int4 columns
LABEL_RULE = (
    "letters, digits, '.', '_' or '-', starting with a letter or digit, 100 at most; "
    "not only digits, not `latest`"
)


class PromptVersionCreate(InputModel):
    model_config = example(
        {
            "template": "Answer the customer briefly and politely.\n\n{{ input }}",
            "system_prompt": "You are the support assistant of Example Inc.",
            "parameters": {"temperature": 0.2},
            "note": "Shorter answers",
            "labels": ["staging"],
        }
    )

    template: Template = Field(description="Jinja2 (sandboxed, strict): {{ input }}, variables")
    system_prompt: Annotated[str, StringConstraints(max_length=100_000)] | None = Field(
        default=None, description="Sent as the system message, rendered like the template"
    )
    parameters: ModelParameters = Field(default_factory=ModelParameters)
    note: str | None = Field(default=None, max_length=2000)
    labels: list[LabelName] = Field(
        default_factory=list, max_length=20, description=f"Point these labels here ({LABEL_RULE})"
    )


class PromptCreate(PromptVersionCreate):
    model_config = example(
        {
            "project_id": "3f1c2a9e-6b7d-4e58-9a01-2c3d4e5f6a7b",
            "name": "support-answer",
            "template": "Answer the customer briefly.\n\n{{ input }}",
            "labels": ["production"],
        }
    )

    project_id: uuid.UUID
    name: Name
    description: str | None = Field(default=None, max_length=10_000)


class PromptUpdate(InputModel):
    model_config = example({"description": "The support assistant's answer prompt"})

    name: Name | None = None
    description: str | None = Field(default=None, max_length=10_000)


class PromptVersionRead(OutputModel):
    id: uuid.UUID
    prompt_id: uuid.UUID
    number: int
    template: str
    system_prompt: str | None
    parameters: dict[str, Any]
    note: str | None
    labels: list[str]
    created_at: datetime


class PromptRead(OutputModel):
    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    description: str | None
    latest_version: int | None
    labels: dict[str, int] = Field(description="Label name -> version number")
    created_at: datetime
    updated_at: datetime


class LabelSet(InputModel):
    model_config = example({"version": 2})

    version: WholeNumber = Field(
        ge=1, le=MAX_VERSION_NUMBER, description="The version number the label points at"
    )


class RenderRequest(InputModel):
    model_config = example(
        {"variables": {"input": "How do I reset my password?"}, "version": "production"}
    )

    variables: dict[str, Any] = Field(
        default_factory=dict, description="Values of the template's variables, by name"
    )
    version: WholeNumber | str = Field(default="latest", description="A number, a label, or latest")


class RenderResult(OutputModel):
    version: int
    text: str
    system_prompt: str | None
