"""The JSON exports' floats: byte for byte as json.dumps writes them, wherever a model's dump
holds one (in its fields, free-form JSON, unions, serializers' output or computed fields)."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import pytest
from pydantic import BaseModel, ConfigDict, Field, computed_field, field_serializer

from database.results.schemas import ResultRead
from database.test_sets.streaming import JsonArrayEncoder, model_for_orjson
from database.tests.schemas import TestCaseFields as CaseFields

# Where orjson and json.dumps differ (an exponent, NaN, the infinities), and where they agree.
EDGES = [1e-05, 2.5e-07, 1e16, 1.2345678901234568e17, 5e-324, float("nan"), float("inf")]
EDGES += [-float("inf"), -0.0, 0.0, 1.0, 0.1 + 0.2, 81.234, 1e15, 0.0001]


def floats(seed: int) -> list[float]:
    generator = random.Random(seed)
    return [generator.choice(EDGES) * generator.choice([1, -1]) for _ in range(8)]


class Inner(BaseModel):
    score: float
    maybe: float | None
    either: int | float  # a union: walked
    label: str


class Aliased(BaseModel):
    value: float = Field(serialization_alias="v")


class Serialized(BaseModel):
    text: str
    number: float

    @field_serializer("text")
    def _as_float(self, text: str) -> Any:
        return float(text)  # a float where the field's type says text


class Computed(BaseModel):
    base: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def half(self) -> float:
        return self.base / 2


class Tree(BaseModel):
    value: float
    children: list[Tree] = []


class Outer(BaseModel):
    model_config = ConfigDict(extra="allow")  # extra keys are in the dump, named by no field

    id: uuid.UUID
    at: datetime
    kind: Literal["a", "b"]
    free: dict[str, Any]
    inner: Inner
    inners: list[Inner]
    optional_inner: Inner | None
    aliased: Aliased
    serialized: Serialized
    computed: Computed
    tree: Tree


def outer(seed: int) -> Outer:
    f = floats(seed)
    inner = Inner(score=f[0], maybe=f[1], either=f[2], label="x")
    return Outer(
        id=uuid.UUID(int=seed),
        at=datetime(2026, 12, 3, tzinfo=UTC),
        kind="a",
        free={"nested": [f[3], {"deeper": f[4]}], "text": "1e-05"},
        inner=inner,
        inners=[inner, Inner(score=f[5], maybe=None, either=3, label="y")],
        optional_inner=None if seed % 2 else inner,
        aliased=Aliased(value=f[6]),
        serialized=Serialized(text=str(f[7]), number=f[7]),
        computed=Computed(base=f[0]),
        tree=Tree(value=f[1], children=[Tree(value=f[2], children=[Tree(value=f[3])])]),
        extra_float=f[4],
    )


def result(seed: int) -> ResultRead:
    f = floats(seed)
    evaluation = {
        "id": uuid.uuid4(),
        "metric_id": None,
        "metric_name": "m",
        "metric_type": "contains",
        "passed": True,
        "reason": "0.00001",
        "error": None,
        "input_tokens": 3,
        "output_tokens": None,
    }
    return ResultRead(
        id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        position=seed,
        repetition=0,
        test_id=None,
        input={"text": "q", "numbers": [f[0], {"x": f[1]}]},
        output="1e-05 as text",
        status="passed",
        latency_ms=f[2],
        input_tokens=1,
        output_tokens=2,
        cost=f[3],
        cached=False,
        error_type=None,
        error_message=None,
        trajectory=[{"tool": "t", "arguments": {"amount": f[4]}}],
        created_at=datetime(2026, 12, 3, tzinfo=UTC),
        evaluations=[
            {**evaluation, "score": f[5], "cost": f[6]},
            {**evaluation, "score": f[7], "cost": None},
        ],
    )


def standard(item: BaseModel) -> str:
    return json.dumps(item.model_dump(mode="json"), ensure_ascii=False, indent=2)


@pytest.mark.parametrize("make", [outer, result], ids=["every-kind-of-field", "a-result"])
def test_a_dump_is_written_as_json_dumps_writes_it(make):
    for seed in range(200):
        item = make(seed)
        written = orjson.dumps(
            model_for_orjson(item), option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z
        )
        assert written.decode() == standard(item), seed


def test_a_page_of_results_and_a_page_of_cases_are_written_as_json_dumps_writes_them():
    results = [result(seed) for seed in range(50)]
    cases = [
        CaseFields(input="q", variables={"x": f}, metadata={"y": [f, {"z": f}]}) for f in EDGES
    ]
    for items in (results, cases):
        encoder: JsonArrayEncoder[Any] = JsonArrayEncoder()
        document = encoder.head() + encoder.page(items[:7]) + encoder.page(items[7:])
        document += encoder.tail()
        expected = [item.model_dump(mode="json") for item in items]
        assert document.decode() == json.dumps(expected, ensure_ascii=False, indent=2)
