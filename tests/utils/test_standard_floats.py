"""Floats handed to orjson as json.dumps writes them: only those whose text the two write
differently are changed, and the data given is never changed in place."""

from __future__ import annotations

import copy
import json
import math
import random
import struct

import orjson

from utils.fastjson import standard_float, with_standard_floats


def _near(value: float, ulps: int) -> list[float]:
    """`value` and the floats up to `ulps` representable steps either side of it."""
    (bits,) = struct.unpack("<q", struct.pack("<d", value))
    return [struct.unpack("<d", struct.pack("<q", bits + step))[0] for step in range(-ulps, ulps)]


def _floats() -> list[float]:
    rng = random.Random(5)
    found = [0.0, -0.0, math.nan, math.inf, -math.inf, 5e-324, 1.7976931348623157e308]
    for boundary in (1e-4, 1e16, 1.0, 0.1):
        found += _near(boundary, 500) + [-v for v in _near(boundary, 50)]
    found += [10 ** rng.uniform(-30, 30) * rng.choice((1, -1)) for _ in range(20_000)]
    return found


def test_every_float_is_written_as_the_standard_library_writes_it():
    for value in _floats():
        written = orjson.dumps(standard_float(value)).decode()
        assert written == json.dumps(value), value


def test_floats_inside_json_data_too_and_the_rest_as_it_was():
    data = {
        "floats": _floats()[::50],
        "nested": [{"a": 1e-05, "b": [1.5, {"c": math.nan}]}, "text", 3, True, None],
        "big": 2**63 - 1,
        "empty": [{}, []],
    }
    before = copy.deepcopy(data)
    written = orjson.dumps(with_standard_floats(data), option=orjson.OPT_INDENT_2)
    assert written.decode() == json.dumps(data, indent=2)
    assert json.dumps(data) == json.dumps(before)  # not changed in place


def test_containers_without_a_float_to_change_are_not_copied():
    data = {"a": [1.5, "x", {"b": 0.25}], "c": {"d": None}}
    assert with_standard_floats(data) is data
    changed = with_standard_floats({"a": [1.5, 1e-05], "c": data["c"]})
    assert changed["c"] is data["c"]


def test_non_finite_floats_as_null_for_fields_typed_any():
    data = {"a": [math.nan, math.inf, -math.inf, 1e-05, 2.5]}
    written = orjson.dumps(with_standard_floats(data, non_finite_as_null=True))
    assert written == b'{"a":[null,null,null,1e-05,2.5]}'
