"""Floats written as the standard library writes them, for the JSON exports orjson writes.

orjson writes a float as Python's `repr` does unless `repr` has an exponent (1e-05 is written
0.00001) and NaN and the infinities (written null); json.dumps writes `repr`, NaN, Infinity. A
float is handed to orjson as a Fragment of its standard text.

Finding the floats in a dumped model used to mean walking every value of it: for a result of
a run's export, forty-odd values (the walk took a fifth of that export's time) to find four
floats. A model's fields say where floats can be: a field typed as plain text, an integer, a
flag, an id or a time never holds one, a field typed float is one, and a nested model's fields
say the same of it. Everything else (free-form JSON, unions, serializers of any kind, keys no
field names) is walked whole.
"""

from __future__ import annotations

import datetime
import functools
import math
import threading
import types
import typing
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel

_FLOAT_FREE = frozenset({str, int, bool, type(None), uuid.UUID, datetime.datetime, datetime.date})
_UNIONS = (typing.Union, types.UnionType)


def python_floats(value: Any) -> Any:
    """`value` (JSON data) with every float a Fragment of its standard text."""
    if isinstance(value, float):
        return orjson.Fragment(float_text(value))
    if isinstance(value, dict):
        return {key: python_floats(item) for key, item in value.items()}
    if isinstance(value, list):
        return [python_floats(item) for item in value]
    return value


def float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def dumped_with_python_floats(item: BaseModel) -> Any:
    """`item.model_dump(mode="json")` of a validated model (its fields hold what their types
    say) with its floats as python_floats makes them."""
    dumped = item.model_dump(mode="json")
    plan = _plan(type(item))
    if plan is None or not isinstance(dumped, dict):
        return python_floats(dumped)
    return _fix(dumped, plan)


@dataclass(frozen=True)
class _Plan:
    known: frozenset[str]  # fields that never hold a float, and those below; others are walked
    floats: tuple[str, ...]
    models: tuple[tuple[str, _Plan], ...]  # a model, or a list of them, of that plan


def _fix(dumped: dict[str, Any], plan: _Plan) -> dict[str, Any]:
    """`dumped` (a fresh dump, changed in place) with its floats as python_floats makes them."""
    for key in dumped.keys() - plan.known:
        dumped[key] = python_floats(dumped[key])
    for key in plan.floats:
        value = dumped.get(key)
        if isinstance(value, float):
            dumped[key] = orjson.Fragment(float_text(value))
    for key, nested in plan.models:
        value = dumped.get(key)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                _fix(item, nested)
    return dumped


# The models being planned by this thread (the encoders run in worker threads): a model met
# again inside itself is walked whole.
_planning = threading.local()


@functools.cache
def _plan(model: type[BaseModel]) -> _Plan | None:
    """Where `model`'s dump can hold floats; None when its dump is not its fields' (a
    serializer of the model's own, aliases): then it is walked whole. (A computed field's key
    is named by no field: it is walked.)"""
    decorators = model.__pydantic_decorators__
    serialized = {name for d in decorators.field_serializers.values() for name in d.info.fields}
    planning: set[type[BaseModel]] = _planning.__dict__.setdefault("models", set())
    if (
        model in planning
        or "*" in serialized
        or decorators.model_serializers
        or model.model_config.get("serialize_by_alias")
        or any(f.serialization_alias or f.alias for f in model.model_fields.values())
    ):
        return None
    planning.add(model)
    try:
        float_free, floats, models = set(), [], []
        for name, field in model.model_fields.items():
            if name in serialized or field.metadata:  # constraints, validators, serializers
                continue
            annotation = field.annotation
            if _float_free(annotation):
                float_free.add(name)
            elif annotation is float or annotation == float | None:
                floats.append(name)
            elif (nested := _model_of(annotation)) is not None and (plan := _plan(nested)):
                models.append((name, plan))
    finally:
        planning.discard(model)
    known = frozenset(float_free | set(floats) | {name for name, _ in models})
    return _Plan(known, tuple(floats), tuple(models))


def _float_free(annotation: Any) -> bool:
    if annotation in _FLOAT_FREE:
        return True
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return all(type(value) in _FLOAT_FREE for value in typing.get_args(annotation))
    if origin in _UNIONS:
        return all(_float_free(member) for member in typing.get_args(annotation))
    return False


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model of a field typed as a model or a list of them (None allowed)."""
    if typing.get_origin(annotation) in _UNIONS:
        members = [m for m in typing.get_args(annotation) if m is not type(None)]
        return _model_of(members[0]) if len(members) == 1 else None
    if typing.get_origin(annotation) is list:
        (annotation,) = typing.get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None
