"""Validating with the JSON Schemas a team saved (a model's tools, a test's expected arguments)
as scoring does: they are not checked against their metaschema again (they were when saved;
checking a model's 128 tools on every result spent the check's budget before its first
validation), a tool's validator is kept by its schema's text, and what validating raises is
said as a ScoringError.

A schema saved before the rules may be none: it errs when it is used (`schema_use`)."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import jsonschema
import referencing.exceptions

from database.evaluations.scoring import ScoringError
from utils import fastjson
from utils.json_schemas import bounded_validator

# What validating with a schema that is none raises.
BROKEN_SCHEMA = (
    jsonschema.exceptions.UnknownType,  # {"type": "nope"}
    TypeError,  # {"minLength": "x"}, {"required": 5}
    AttributeError,  # {"properties": []}, {"items": 5}
    LookupError,
    ZeroDivisionError,  # {"multipleOf": 0}
)
# A float `multipleOf` divides the number by it, as a float: an integer of 309 digits or more
# overflows (longer ones are refused as the answer is read).
TOO_LARGE = "a number too large to check against the schema's multipleOf"


@contextlib.contextmanager
def schema_use(subject: str = "the call's arguments hold") -> Iterator[None]:
    """Validation inside, its failures as a ScoringError: a $ref to nowhere, a number of
    `subject` too large to check, a schema that is none."""
    try:
        yield
    except referencing.exceptions.Unresolvable as exc:  # none is fetched
        raise ScoringError(f"a $ref to nowhere: {exc}") from None
    except OverflowError:
        raise ScoringError(f"{subject} {TOO_LARGE}") from None
    except BROKEN_SCHEMA as exc:
        said = f"{type(exc).__name__}: {str(exc).partition(chr(10))[0]}"
        said = said if len(said) <= 200 else said[:199] + "…"
        raise ScoringError(f"not a valid JSON schema ({said})") from None


_VALIDATORS: OrderedDict[bytes, Any] = OrderedDict()  # by the digest of a schema's text
_VALIDATORS_KEPT = 256  # twice the tools a model may have
_VALIDATORS_LOCK = threading.Lock()


def kept_validator(schema: Any) -> Any:
    """A bounded validator of `schema` (utils.json_schemas), built once for each schema's
    text among the last _VALIDATORS_KEPT used. Validators are shared by the check threads:
    validating changes none."""
    digest = hashlib.sha256(fastjson.dumps_bytes(schema)).digest()
    with _VALIDATORS_LOCK:
        validator = _VALIDATORS.get(digest)
        if validator is not None:
            _VALIDATORS.move_to_end(digest)
            return validator
    with schema_use():
        validator = bounded_validator(schema)
    with _VALIDATORS_LOCK:
        _VALIDATORS[digest] = validator
        while len(_VALIDATORS) > _VALIDATORS_KEPT:
            _VALIDATORS.popitem(last=False)
    return validator
