"""Test files sent to a set's import: the format (named, or told by the file), and for a
promptfoo config the files its `tests:` refer to, attached under the paths it writes."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import yaml

from cli.client import Client, CliError, NoMatch

# Far past any server's import limit (ASSAY_IMPORT_MAX_BYTES, 10 MB unless raised): a file
# this large is a mistake, and is not read into memory to find out.
MAX_FILE_BYTES = 1 << 30
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


def import_into_set(
    client: Client,
    name: str,
    project_id: str | None,
    path: Path,
    fmt: str,
    *,
    mode: str,
    create: bool,
) -> tuple[dict[str, Any], dict[str, Any], bool]:
    """Imports the file into the named set, created first in the project when missing and
    `create` (and deleted again if the file is refused: all or nothing). Returns the set, the
    import's result and whether the set was created."""
    try:
        found: dict[str, Any] | None = client.find(
            "test set", "/test-sets", name, project_id=project_id
        )
    except NoMatch:
        if not create:
            raise
        found = None
    if found is not None:
        return found, import_file(client, found["id"], path, fmt, mode=mode), False
    if project_id is None:
        raise CliError(f"to create the test set {name!r}, name its project (--project)")
    created = client.post("/test-sets", {"project_id": project_id, "name": name})
    try:
        return created, import_file(client, created["id"], path, fmt, mode=mode), True
    except CliError:
        client.request("DELETE", f"/test-sets/{created['id']}")
        raise


def import_file(
    client: Client, test_set_id: str, path: Path, fmt: str, *, mode: str = "append"
) -> dict[str, Any]:
    content = _read(path, path)
    files: list[tuple[str, tuple[str, bytes]]] = [("file", (path.name, content))]
    if fmt == "promptfoo":
        folder = path.parent.resolve()
        for reference in _referenced_files(content):
            attached = (folder / reference).resolve()
            if not attached.is_relative_to(folder):  # a config sends only its own folder's files
                raise CliError(f"{path.name} refers to {reference}, outside its folder")
            files.append(("attachment", (reference, _read(attached, f"{path.name}'s {reference}"))))
    response = client.request(
        "POST",
        f"/test-sets/{test_set_id}/import",
        params={"format": fmt, "mode": mode},
        files=files,
    )
    return dict(client.json_of(response))


def _read(path: Path, named: object) -> bytes:
    """A regular file's bytes (a device or a pipe could be read, or block, for ever), up to
    the bound."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # before opening: a pipe's open blocks
            raise CliError(f"cannot read {named}: not a regular file")
        with path.open("rb") as handle:
            content = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise CliError(f"cannot read {named}: {exc.strerror}") from None
    if len(content) > MAX_FILE_BYTES:
        raise CliError(f"cannot read {named}: larger than {MAX_FILE_BYTES >> 20} MB")
    return content


def _referenced_files(content: bytes) -> list[str]:
    """The local files a promptfoo config's `tests:` and `defaultTest:` name (the server
    parses the config; the command only needs to know what to send along)."""
    try:
        config = yaml.safe_load(content)
    except yaml.YAMLError:
        return []  # the server reports the error, with its line
    if not isinstance(config, dict):
        return []
    tests = config.get("tests")
    entries = [*(tests if isinstance(tests, list) else [tests]), config.get("defaultTest")]
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
