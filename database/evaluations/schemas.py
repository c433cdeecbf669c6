"""Metric definitions as the API takes and shows them, and evaluations as shown. A metric's
`type`, its parameters and its defaults come from the catalogue (catalogue.py)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

from pydantic import Field, GetJsonSchemaHandler, field_validator, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from database.evaluations.catalogue import CATALOGUE, validate_parameters
from database.evaluations.scoring import Operator
from utils.schemas import InputModel, Name, OutputModel

if TYPE_CHECKING:
    MetricTypeName = str
else:  # the catalogue's types, as the API's enum
    MetricTypeName = Literal[tuple(CATALOGUE)]


def _choices(values: tuple[str, ...]) -> str:
    """As pydantic lists a literal's choices: 'a', 'b' or 'c'."""
    quoted = [repr(value) for value in values]
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]


class MetricCreate(InputModel):
    project_id: uuid.UUID
    name: Name
    type: MetricTypeName
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="The type's parameters (see each type's schema)"
    )
    threshold: float | None = Field(
        default=None, ge=0, le=1_000_000, description="Default per type (1.0 for checks)"
    )
    operator: Operator | None = Field(default=None, description="Default per type (>=)")
    negate: bool = Field(default=False, description="Pass when the comparison fails")
    weight: float = Field(default=1.0, gt=0, le=1000)
    judge_model_id: uuid.UUID | None = Field(
        default=None, description="For judge types; else the project's default judge"
    )
    description: str | None = Field(default=None, max_length=2000)

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
        """`type` lists the catalogue's types; `parameters` is one of their parameter models
        (`x-parameters-by-type` names the one of each type)."""
        schema = handler.resolve_ref_schema(handler(core_schema))
        models = {metric_type.parameters for metric_type in CATALOGUE.values()}
        parameters = schema["properties"]["parameters"]
        parameters.pop("additionalProperties", None)
        parameters.pop("type", None)
        parameters["anyOf"] = [
            handler(model.__pydantic_core_schema__)
            for model in sorted(models, key=lambda model: model.__name__)
        ]
        parameters["x-parameters-by-type"] = {
            name: metric_type.parameters.__name__ for name, metric_type in CATALOGUE.items()
        }
        schema["properties"]["operator"] = {
            "enum": list(get_args(Operator)),
            "type": "string",
            "title": "Operator",
            "description": "Left out: the type's default ("
            + ", ".join(sorted({t.operator for t in CATALOGUE.values()}))
            + ")",
        }
        schema["properties"]["type"]["description"] = "; ".join(
            f"`{name}`: {metric_type.summary}" for name, metric_type in CATALOGUE.items()
        )
        return schema


class MetricUpdate(InputModel):
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
    metric_id: uuid.UUID | None
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
    metric_ids: list[uuid.UUID] = Field(max_length=50, description="The set's default metrics")
