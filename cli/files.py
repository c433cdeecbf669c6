"""Test files sent to a set's import: the format (named, or told by the file), and for a
promptfoo config the files its `tests:` refer to, attached under the paths it writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from cli.client import Client, CliError

FORMATS = ("csv", "json", "jsonl", "promptfoo", "openai-evals", "langfuse")
_BY_EXTENSION = {
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".yaml": "promptfoo",
    ".yml": "promptfoo",
}


def file_format(path: Path, named: str | None) -> str:
    if named is not None:
        if named not in FORMATS:
            raise CliError(f"unknown format {named!r}: one of {', '.join(FORMATS)}")
        return named
    found = _BY_EXTENSION.get(path.suffix.lower())
    if found is None:
        raise CliError(
            f"cannot tell the format of {path.name}: pass --format ({', '.join(FORMATS)})"
        )
    return found


def import_file(
    client: Client, test_set_id: str, path: Path, fmt: str, *, mode: str = "append"
) -> dict[str, Any]:
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    files: list[tuple[str, tuple[str, bytes]]] = [("file", (path.name, content))]
    if fmt == "promptfoo":
        for reference in _referenced_files(content):
            attached = path.parent / reference
            try:
                files.append(("attachment", (reference, attached.read_bytes())))
            except OSError as exc:
                raise CliError(f"{path.name} refers to {reference}: {exc.strerror}") from None
    response = client.request(
        "POST",
        f"/test-sets/{test_set_id}/import",
        params={"format": fmt, "mode": mode},
        files=files,
    )
    return dict(response.json())


def _referenced_files(content: bytes) -> list[str]:
    """The local files a promptfoo config's `tests:` names (the server parses the config; the
    command only needs to know what to send along)."""
    try:
        config = yaml.safe_load(content)
    except yaml.YAMLError:
        return []  # the server reports the error, with its line
    tests = config.get("tests") if isinstance(config, dict) else None
    entries = tests if isinstance(tests, list) else [tests]
    found = []
    for entry in entries:
        if isinstance(entry, str) and "://" not in entry.removeprefix("file://"):
            found.append(_normalised(entry))
    return list(dict.fromkeys(found))


def _normalised(reference: str) -> str:
    path = reference.removeprefix("file://")
    while path.startswith("./"):
        path = path[2:]
    return path
