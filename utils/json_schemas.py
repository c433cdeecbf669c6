"""JSON Schemas that tenants send (metric parameters, tool definitions, expected arguments):
checked against their own metaschema before anything is validated with them."""

from __future__ import annotations

from typing import Any

import jsonschema


def check_json_schema(value: Any) -> Any:
    """`value` when it is a valid JSON Schema; a ValueError saying where it is not."""
    try:
        jsonschema.validators.validator_for(value).check_schema(value)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(root)"
        raise ValueError(f"not a valid JSON schema at {where}: {exc.message}") from None
    return value
