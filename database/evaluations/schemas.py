from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import jsonschema
from pydantic import Field, StringConstraints, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from utils.schemas import InputModel, Name, OutputModel

Operator = Literal[">=", ">", "<=", "<", "=="]
Text = Annotated[str, StringConstraints(min_length=1, max_length=10_000)]


class NoParameters(InputModel):
    pass


class ExpectedText(InputModel):
    """Compare with `value`, or with the test's expected_output when no value is given."""

    value: Text | None = None
    case_sensitive: bool = True


class TextList(InputModel):
    values: list[Text] = Field(min_length=1, max_length=200)
    case_sensitive: bool = True


class RegexParameters(InputModel):
    pattern: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    flags: list[Literal["i", "m", "s"]] = Field(default_factory=list)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class JsonSchemaParameters(InputModel):
    json_schema: dict[str, Any] = Field(alias="schema")

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            jsonschema.validators.validator_for(value).check_schema(value)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON schema: {exc.message}") from exc
        return value


class MaxLatency(InputModel):
    ms: float = Field(gt=0)


class MaxCost(InputModel):
    usd: float = Field(gt=0)


class MaxTokens(InputModel):
    tokens: int = Field(gt=0)


class WordCount(InputModel):
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _a_bound(self) -> WordCount:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


class Rubric(InputModel):
    criteria: Text
    steps: list[Text] = Field(default_factory=list, max_length=20)


class RefusalParameters(InputModel):
    pass


# type -> (parameter model, default threshold, is a judge)
METRIC_TYPES: dict[str, tuple[type[InputModel], float, bool]] = {
    "equals": (ExpectedText, 1.0, False),
    "contains": (ExpectedText, 1.0, False),
    "icontains": (ExpectedText, 1.0, False),
    "starts-with": (ExpectedText, 1.0, False),
    "contains-any": (TextList, 1.0, False),
    "contains-all": (TextList, 1.0, False),
    "regex": (RegexParameters, 1.0, False),
    "is-json": (NoParameters, 1.0, False),
    "json-schema": (JsonSchemaParameters, 1.0, False),
    "similarity": (ExpectedText, 0.8, False),
    "max-latency": (MaxLatency, 1.0, False),
    "max-cost": (MaxCost, 1.0, False),
    "max-tokens": (MaxTokens, 1.0, False),
    "word-count": (WordCount, 1.0, False),
    "llm-rubric": (Rubric, 0.5, True),
    "answer-relevance": (NoParameters, 0.5, True),
    "faithfulness": (NoParameters, 0.5, True),
    "refusal": (RefusalParameters, 0.5, True),
}
MetricType = Literal[
    "equals",
    "contains",
    "icontains",
    "starts-with",
    "contains-any",
    "contains-all",
    "regex",
    "is-json",
    "json-schema",
    "similarity",
    "max-latency",
    "max-cost",
    "max-tokens",
    "word-count",
    "llm-rubric",
    "answer-relevance",
    "faithfulness",
    "refusal",
]


def is_judge(metric_type: str) -> bool:
    return METRIC_TYPES[metric_type][2]


def validate_parameters(metric_type: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a metric type, checked; errors name `parameters.<field>`."""
    model = METRIC_TYPES[metric_type][0]
    try:
        return model.model_validate(parameters).model_dump(by_alias=True, exclude_none=True)
    except ValidationError as exc:
        details = [
            InitErrorDetails(
                type=PydanticCustomError("parameters", "{message}", {"message": error["msg"]}),
                loc=("parameters", *error["loc"]),
                input=error.get("input"),
            )
            for error in exc.errors()
        ]
        raise ValidationError.from_exception_data("MetricCreate", details) from None


class MetricCreate(InputModel):
    project_id: uuid.UUID
    name: Name
    type: MetricType
    parameters: dict[str, Any] = Field(default_factory=dict)
    threshold: float | None = Field(
        default=None, ge=0, le=1_000_000, description="Default per type (1.0 for checks)"
    )
    operator: Operator = ">="
    negate: bool = Field(default=False, description="Pass when the comparison fails")
    weight: float = Field(default=1.0, gt=0, le=1000)
    judge_model_id: uuid.UUID | None = Field(
        default=None, description="For judge types; else the project's default judge"
    )
    description: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def _parameters_of_type(self) -> MetricCreate:
        self.parameters = validate_parameters(self.type, self.parameters)
        if self.threshold is None:
            self.threshold = METRIC_TYPES[self.type][1]
        return self


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


class TestSetMetrics(InputModel):
    metric_ids: list[uuid.UUID] = Field(max_length=50, description="The set's default metrics")
