"""An imported file's errors read back from the form the API documents for them (a `FieldError`
of the Problem schema: `field` is where, in words, `line` and `file` are where for a program)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator

from utils.problems import FieldError

FIELD_ERROR = Draft202012Validator(FieldError.model_json_schema())


def where(error: Mapping[str, Any]) -> tuple[int, str | None]:
    """The error's line and the field at fault on it (None: the line as a whole), once it is
    checked to be a FieldError whose `field` names that place (`line 3: input`, `line 3`,
    `more.yaml line 3: vars`)."""
    faults = [fault.message for fault in FIELD_ERROR.iter_errors(dict(error))]
    assert not faults, (faults, error)
    line = error["line"]
    place = f"{error['file']} line {line}" if error.get("file") else f"line {line}"
    if error["field"] == place:
        return line, None
    assert error["field"].startswith(f"{place}: "), error
    return line, error["field"].removeprefix(f"{place}: ")
