"""Test files sent to a set's import: the format (named, or told by the file), and for a
promptfoo config the files its `tests:` refer to, attached under the paths it writes."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from cli.client import Client, CliError, NoMatch, Unreachable, is_uuid

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
    `create` (and deleted again if the import does not end well: all or nothing). A set named
    by name, not id, is looked for in the project, which only an organization of one project
    may leave unsaid: elsewhere a same-named set of another project would be written over.
    Returns the set, the import's result and whether the set was created."""
    if project_id is None and not is_uuid(name):
        project_id = only_project(client)
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
    except BaseException as exc:  # a refusal, a fault, Ctrl-C or SIGTERM: no empty set left
        try:
            client.request("DELETE", f"/test-sets/{created['id']}")
        except CliError as failed:
            exc.add_note(f"the new test set {name!r} ({created['id']}) is left: {failed}")
        raise


def only_project(client: Client) -> str:
    """The organization's one project's id; with several, which is meant is for the job to say."""
    projects = client.get("/projects", limit=2)
    if projects["total"] != 1:
        found = "no project" if not projects["total"] else f"{projects['total']} projects"
        raise CliError(
            f"which project's test set? The organization has {found}: name it with --project"
            " (or `project:` in assay.yaml)"
        )
    return str(projects["items"][0]["id"])


def print_leftovers(console: Console, result: dict[str, Any]) -> None:
    """What an import's result says was not imported, and its notes (on what it ignored)."""
    for left in result.get("unmapped") or []:
        where = f" in {left['file']}" if left.get("file") else ""
        lines = ", ".join(str(line) for line in left.get("lines") or [])
        console.print(
            f"  not imported: {left['count']} {left['type']!r} assertion(s){where}"
            f"{f' (lines {lines})' if lines else ''}: {left['reason']}",
            markup=False,
        )
    for note in result.get("notes") or []:
        console.print(f"  note: {note}", markup=False)


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
    try:
        response = client.request(
            "POST",
            f"/test-sets/{test_set_id}/import",
            params={"format": fmt, "mode": mode},
            files=files,
        )
    except Unreachable as exc:
        if mode == "append":  # a sync is the same however often; cases appended twice are not
            exc.add_note(
                "the import may have been applied: check the test set before retrying (or"
                " import with --sync, which leaves it holding the file's cases once)"
            )
        raise
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
        path = entry.removeprefix("file://") if isinstance(entry, str) else ""
        # Another scheme, or a glob: the server says it reads neither (nothing to send).
        if path and "://" not in path and not any(mark in path for mark in "*?[{"):
            found.append(_normalised(entry))
    return list(dict.fromkeys(found))


def _normalised(reference: str) -> str:
    path = reference.removeprefix("file://")
    while path.startswith("./"):
        path = path[2:]
    return path
