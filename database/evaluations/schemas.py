"""Metric definitions as the API takes and shows them, and evaluations as shown. A metric's
`type`, its parameters and its defaults come from the catalogue (catalogue.py)."""

from __future__ import annotations

import functools
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args

from pydantic import (
    Field,
    GetJsonSchemaHandler,
    TypeAdapter,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from database.evaluations.catalogue import (
    CATALOGUE,
    MetricType,
    accepted_parameters,
    validate_parameters,
)
from database.evaluations.checks import ExpectedText
from database.evaluations.scoring import Operator
from utils.schemas import InputModel, Name, OutputModel, example

if TYPE_CHECKING:
    MetricTypeName = str
else:  # the catalogue's types, as the API's enum
    MetricTypeName = Literal[tuple(CATALOGUE)]


def _choices(values: tuple[str, ...]) -> str:
    """As pydantic lists a literal's choices: 'a', 'b' or 'c'."""
    quoted = [repr(value) for value in values]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


class _MetricFields(InputModel):
    project_id: uuid.UUID
    name: Name
    negate: bool = Field(default=False, description="Pass when the comparison fails")
    weight: float = Field(
        default=1.0,
        gt=0,
        le=1000,
        description="A weight for your own combining of its scores, kept with the metric and"
        " frozen into each run's: no figure of the service uses it (a case passes when every"
        " metric passes)",
    )
    judge_model_id: uuid.UUID | None = Field(
        default=None,
        description=(
            "For judge types; else the project's default judge. A judge is asked at"
            " temperature 0 unless its model configuration sets a temperature of its own"
        ),
    )
    description: str | None = Field(default=None, max_length=2000)


class MetricCreate(_MetricFields):
    """A metric of one of the catalogue's types; `parameters` are that type's (documented as
    one schema per type, a union on `type`)."""

    type: MetricTypeName
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="The type's parameters (see each type's schema)"
    )
    threshold: float | None = Field(
        default=None, ge=0, le=1_000_000, description="Default per type (1.0 for checks)"
    )
    operator: Operator | None = Field(default=None, description="Default per type (>=)")

    @field_validator("operator")
    @classmethod
    def _not_null(cls, value: Operator | None) -> Operator:
        if value is None:  # left out, it is the type's default; sent as null, it is a mistake
            raise PydanticCustomError(
                "literal_error",
                "Input should be {expected}",
                {"expected": _choices(get_args(Operator))},
            )
        return value

    @model_validator(mode="after")
    def _parameters_of_type(self) -> MetricCreate:
        metric_type = CATALOGUE[self.type]
        self.parameters = validate_parameters(self.type, self.parameters)
        if self.threshold is None:
            self.threshold = metric_type.threshold
        if self.operator is None:
            self.operator = metric_type.operator
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """One schema per type (its parameters, threshold and operator defaults), told apart
        by `type`: what this model accepts, typed."""
        schema = handler(_one_of_types().core_schema)
        return {**schema, "description": cls.__doc__, "examples": [METRIC_EXAMPLE]}


METRIC_EXAMPLE = {
    "project_id": "3f1c2a9e-6b7d-4e58-9a01-2c3d4e5f6a7b",
    "name": "says reset",
    "type": next(name for name, t in CATALOGUE.items() if t.parameters is ExpectedText),
    "parameters": {"value": "Reset password"},
}


def _metric_of_type(metric_type: MetricType) -> type[_MetricFields]:
    """A documentation schema: MetricCreate for one type (a check's parameters include its
    `scope`)."""
    parameters = accepted_parameters(metric_type.name)
    per_test = accepted_parameters(metric_type.name, per_test=True)
    required = any(field.is_required() for field in parameters.model_fields.values())
    model: type[_MetricFields] = create_model(
        "".join(part.capitalize() for part in metric_type.name.split("-")) + "Metric",
        __base__=_MetricFields,
        __doc__=f"`{metric_type.name}`: {metric_type.summary}",
        type=(Literal[metric_type.name], ...),  # type: ignore[arg-type]
        parameters=(
            parameters | per_test,  # type: ignore[arg-type]
            ... if required else Field(default_factory=parameters),
        ),
        threshold=(float, Field(default=metric_type.threshold, ge=0, le=1_000_000)),
        operator=(Operator, metric_type.operator),
    )
    return model


@functools.cache
def _one_of_types() -> TypeAdapter[Any]:
    """The per-type schemas, built when a document is (they cost start-up time otherwise)."""
    variants = tuple(_metric_of_type(metric_type) for metric_type in CATALOGUE.values())
    one_of: Any = Annotated[Union[variants], Field(discriminator="type")]  # noqa: UP007
    return TypeAdapter(one_of)


class MetricUpdate(InputModel):
    model_config = example({"threshold": 0.8, "description": "Stricter since v2"})

    name: Name | None = None
    parameters: dict[str, Any] | None = None
    threshold: float | None = Field(default=None, ge=0, le=1_000_000)
    operator: Operator | None = None
    negate: bool | None = None
    weight: float | None = Field(default=None, gt=0, le=1000)
    judge_model_id: uuid.UUID | None = None
    description: str | None = Field(default=None, max_length=2000)


class MetricRead(OutputModel):
    id: uuid.UUID
    project_id: uuid.UUID
    name: str
    type: str
    parameters: dict[str, Any]
    threshold: float
    operator: str
    negate: bool
    weight: float
    judge_model_id: uuid.UUID | None
    description: str | None
    judge: bool
    created_at: datetime
    updated_at: datetime


class EvaluationRead(OutputModel):
    id: uuid.UUID
    metric_id: uuid.UUID | None = Field(
        description="The metric it was made with (its name and type are below). The metric may"
        " since have been deleted (the run keeps its definition); null for an evaluation whose"
        " metric was deleted before Assay kept these ids"
    )
    metric_name: str
    metric_type: str
    score: float
    passed: bool
    reason: str | None
    error: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost: float | None


class TestSetMetrics(InputModel):
    model_config = example(
        {
            "metric_ids": [
                "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d",
                "6b7c8d9e-0f1a-4b2c-9d3e-4f5a6b7c8d9e",
            ]
        }
    )

    metric_ids: list[uuid.UUID] = Field(max_length=50, description="The set's default metrics")
