"""Test cases imported from other tools' files (pure functions, no I/O, no database).

promptfoo configs (foreign_promptfoo.py), OpenAI Evals samples (JSONL) and Langfuse dataset
items (JSON or JSONL) become TestCaseFields, all or nothing like io.parse_cases: every bad case
is reported, with its line (and its file, for one uploaded alongside a promptfoo config). What
a file asks of its outputs becomes `assertions`, each test holding its own parameters for one
under metadata["assert:<name>"]; what has no Assay equivalent is listed in `unmapped` and
`notes`, never dropped silently."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from database.test_sets import foreign_assertions, foreign_documents
from database.test_sets.foreign_assertions import Assertion, Unmapped
from database.test_sets.foreign_documents import MAX_DOCUMENT_NESTING, Row, error, invalid
from database.test_sets.foreign_promptfoo import Promptfoo
from database.test_sets.import_bounds import (
    DECODER,
    bounded_json,
    json_items,
    key_notes,
    too_deep,
    too_wide,
)
from database.test_sets.io import MAX_CASES, _decode, validate_rows
from database.tests.schemas import TestCaseFields
from utils import fastjson
from utils.errors import InvalidInput

__all__ = [
    "FOREIGN_FORMATS",
    "Assertion",
    "ForeignFormat",
    "ForeignImport",
    "Unmapped",
    "parse_foreign",
]

ForeignFormat = Literal["promptfoo", "openai-evals", "langfuse"]
FOREIGN_FORMATS: tuple[str, ...] = get_args(ForeignFormat)

_ROLES = ("system", "user", "assistant")
MAX_EXPANDED_BYTES = 64 * 1024 * 1024
_IDEAL = Assertion("ideal", "contains-any", False, "assert:ideal", "ideal")
_IDEAL_NOTE = (
    "ideal: each sample's ideal answers are checked by the metric 'ideal' (contains-any: the"
    " output contains one of them); the eval's own class (Match, Includes, FuzzyMatch or"
    " model-graded) is not in the samples, so change the metric if yours differs"
)
_LANGFUSE_INPUT = ("input", "question", "query", "prompt", "text", "message")
_LANGFUSE_KEYS = {
    "id": "langfuse_id",
    "sourceTraceId": "langfuse_trace_id",
    "source_trace_id": "langfuse_trace_id",
    "sourceObservationId": "langfuse_observation_id",
    "source_observation_id": "langfuse_observation_id",
}
_LANGFUSE_READ = {"input", "expectedOutput", "expected_output", "metadata", "status"}


@dataclass
class ForeignImport:
    cases: list[TestCaseFields]
    lines: list[int]  # parallel to cases: the line (in its file) where each case starts
    files: list[str | None]  # parallel to cases: None = the uploaded file, else the attachment
    assertions: list[Assertion]
    unmapped: list[Unmapped]
    notes: list[str]


def parse_foreign(
    content: bytes,
    fmt: ForeignFormat,
    attachments: Mapping[str, bytes] | None = None,
    *,
    max_cases: int = MAX_CASES,
) -> ForeignImport:
    """Parse and validate every case of a foreign file; raise one InvalidInput listing all bad
    cases. `attachments` (promptfoo only) are the files a config's tests refer to, by name."""
    with foreign_documents.one_upload(max_cases), foreign_assertions.one_upload():
        return _parse_foreign(content, fmt, attachments or {}, max_cases)


def _parse_foreign(
    content: bytes, fmt: ForeignFormat, attachments: Mapping[str, bytes], max_cases: int
) -> ForeignImport:
    text = _decode(content)
    notes: list[str] = []
    if fmt == "promptfoo":
        promptfoo = Promptfoo(text, attachments or {})
        cases, lines, files = _collect(promptfoo.rows(), max_cases)
        assertions = list(promptfoo.assertions.values())
        return ForeignImport(cases, lines, files, assertions, promptfoo.unmapped(), promptfoo.notes)
    if fmt not in FOREIGN_FORMATS:
        raise InvalidInput(f"Unknown format {fmt!r}; one of {', '.join(FOREIGN_FORMATS)}")
    for name in sorted(attachments or {}):
        notes.append(f"{name}: uploaded, but only promptfoo configs refer to files; not read")
    skipped: Counter[str] = Counter()
    if fmt == "openai-evals":
        cases, lines, files = _collect(_evals_rows(text, skipped), max_cases)
        ideal = any(_IDEAL.key in case.metadata for case in cases)
        notes += [_IDEAL_NOTE] if ideal else []
        notes += _skipped_notes(skipped, "sample(s)")
        return ForeignImport(cases, lines, files, [_IDEAL] if ideal else [], [], notes)
    cases, lines, files = _collect(_langfuse_rows(text, skipped), max_cases)
    archived = skipped.pop("status ARCHIVED", 0)
    if archived:
        notes.append(f"status: {archived} archived item(s) skipped")
    notes += _skipped_notes(skipped, "item(s)")
    return ForeignImport(cases, lines, files, [], [], notes)


def _skipped_notes(skipped: Counter[str], unit: str) -> list[str]:
    notes = (
        f"{key}: in {n} {'message(s)' if key.startswith('input[]') else unit}; not imported"
        for key, n in skipped.items()
    )
    return key_notes(notes, len(skipped))


def _collect(
    rows: Iterable[Row], max_cases: int
) -> tuple[list[TestCaseFields], list[int], list[str | None]]:
    """Validate each case; raise one InvalidInput listing every bad one (the first so many)."""
    validated = validate_rows(_bounded(rows), max_cases=max_cases)
    return (
        [case for _, case in validated],
        [where["line"] for where, _ in validated],
        [where.get("file") for where, _ in validated],
    )


def _bounded(rows: Iterable[Row]) -> Iterator[tuple[dict[str, Any], Any]]:
    """The rows, placed, while the cases they make stay within MAX_EXPANDED_BYTES in all: a
    config's defaults repeat in every test, and YAML aliases repeat what they name, so a
    small file can describe far more than it holds."""
    total = 0
    for line, file, data in rows:
        where = {"line": line, **({"file": file} if file is not None else {})}
        if isinstance(data, dict):
            total += _json_size(data)
            if total > MAX_EXPANDED_BYTES:
                raise invalid(
                    f"the cases come to more than {MAX_EXPANDED_BYTES:,} bytes of JSON once"
                    " defaults and aliases are filled in",
                    line,
                    file,
                )
        yield where, data


def _json_size(data: dict[str, Any]) -> int:
    try:
        return len(fastjson.dumps_bytes(data))
    except UnicodeEncodeError:  # a lone surrogate: measured escaped; the case's check names it
        return len(json.dumps(data))


def _json_line(text: str) -> Any:
    """One JSONL line's value; ValueError saying why it is not one."""
    oversize = too_wide(text)
    if oversize:
        raise ValueError(oversize)
    try:
        return bounded_json(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg} at column {exc.colno}") from None


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# --- OpenAI Evals ------------------------------------------------------------------------------


def _evals_rows(text: str, skipped: Counter[str]) -> Iterator[Row]:
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            sample = _json_line(line)
        except ValueError as exc:
            yield number, None, [error(number, None, None, str(exc))]
            continue
        if not isinstance(sample, dict):
            yield number, None, [error(number, None, None, "a sample must be a JSON object")]
            continue
        yield number, None, _sample(sample, number, skipped)


def _sample(
    sample: dict[str, Any], line: int, skipped: Counter[str]
) -> dict[str, Any] | list[dict[str, Any]]:
    problems: list[dict[str, Any]] = []
    data: dict[str, Any] = {}
    prompt = sample.get("input")
    if isinstance(prompt, str):
        data["input"] = prompt
    elif isinstance(prompt, list):
        data["messages"] = _messages(prompt, line, problems, skipped)
    else:
        kind = "missing" if prompt is None else f"a {type(prompt).__name__}"
        message = f"{kind}: input must be chat messages (a list) or a string"
        problems.append(error(line, None, "input", message))
    metadata = {key: value for key, value in sample.items() if key not in ("input", "ideal")}
    ideal = sample.get("ideal")
    if ideal is not None:
        ideals = _ideals(ideal, line, problems)
        if ideals:
            data["expected_output"] = ideals[0]
            if isinstance(ideal, list):
                metadata["ideal"] = ideals
            metadata[_IDEAL.key] = {"values": ideals}
    data["metadata"] = metadata
    return problems or data


def _messages(
    items: list[Any], line: int, problems: list[dict[str, Any]], skipped: Counter[str]
) -> list[dict[str, Any]]:
    messages = []
    for index, item in enumerate(items):
        where = f"input[{index}]"
        if not isinstance(item, dict):
            problems.append(error(line, None, where, "a message must be an object"))
            continue
        role, content = item.get("role"), item.get("content")
        if role not in _ROLES:
            message = f"unknown role {role!r}: one of {', '.join(_ROLES)}"
            problems.append(error(line, None, f"{where}.role", message))
        if not isinstance(content, str):
            message = "content must be a string (lists of content parts are not imported)"
            problems.append(error(line, None, f"{where}.content", message))
        skipped.update(f"input[].{key}" for key in item if key not in ("role", "content"))
        messages.append({"role": role, "content": content})
    return messages


def _ideals(ideal: Any, line: int, problems: list[dict[str, Any]]) -> list[str]:
    values = ideal if isinstance(ideal, list) else [ideal]
    if not values:
        problems.append(error(line, None, "ideal", "an empty list: no ideal answer"))
    ideals = []
    for index, value in enumerate(values):
        where = f"ideal[{index}]" if isinstance(ideal, list) else "ideal"
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            problems.append(error(line, None, where, "an ideal answer must be text or a number"))
        elif not 1 <= len(str(value)) <= 10_000:
            problems.append(error(line, None, where, "an ideal answer is 1 to 10,000 characters"))
        else:
            ideals.append(str(value))
    return ideals


# --- Langfuse ----------------------------------------------------------------------------------


def _langfuse_rows(text: str, skipped: Counter[str]) -> Iterator[Row]:
    for line, item in _langfuse_items(text):
        if isinstance(item, ValueError):
            yield line, None, [error(line, None, None, str(item))]
        elif not isinstance(item, dict):
            yield line, None, [error(line, None, None, "an item must be a JSON object")]
        elif str(item.get("status", "")).upper() == "ARCHIVED":
            skipped["status ARCHIVED"] += 1
        else:
            yield line, None, _item(item, skipped)


def _langfuse_items(text: str) -> Iterator[tuple[int, Any]]:
    """(line, value) of each item of a JSON array, a {"data" or "items": [...]} page, or JSONL;
    a ValueError in place of a value that is not JSON or too large."""
    lines = text.split("\n")
    first = next((n for n, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return
    single = None
    if text.lstrip().startswith("{"):
        try:
            single = _json_line(lines[first])
        except ValueError:
            single = None
    if single is not None and not _page(single):  # JSONL: the first line is an item
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    yield number, _json_line(line)
                except ValueError as exc:
                    yield number, exc
        return
    try:
        yield from _json_document(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"Invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
            errors=[error(exc.lineno, None, None, exc.msg)],
        ) from None


def _page(value: Any) -> bool:
    return isinstance(value, dict) and any(
        isinstance(value.get(key), list) for key in ("data", "items")
    )


def _json_document(text: str) -> Iterator[tuple[int, Any]]:
    """The items of a JSON array or page, or a lone item, each with the line it starts at."""
    before, array = 0, text  # the lines before the array, and its text
    if not text.lstrip().startswith("["):
        deep = too_deep(text, MAX_DOCUMENT_NESTING)
        if deep is not None:
            message = f"nested more than {MAX_DOCUMENT_NESTING} levels deep"
            errors = [error(deep, None, None, message)]
            raise InvalidInput(f"Invalid JSON at line {deep}: {message}", errors=errors)
        whole = DECODER.decode(text)
        if not _page(whole):
            yield text.count("\n", 0, len(text) - len(text.lstrip())) + 1, whole
            return
        before, array = _page_array(text)
    line, counted = before + 1, 0
    for start, end, value in json_items(array):
        line += array.count("\n", counted, start)
        counted = start
        oversize = too_wide(array, start, end)
        yield line, ValueError(oversize) if oversize else value


def _page_array(text: str) -> tuple[int, str]:
    """The lines before a page's "data" (or "items") array, and the array's text."""
    position = text.index("{") + 1
    while True:
        position = _skip(text, position)
        key, position = DECODER.raw_decode(text, position)
        position = _skip(text, _skip(text, position) + 1)  # past the colon
        value, end = DECODER.raw_decode(text, position)
        if key in ("data", "items") and isinstance(value, list):
            return text.count("\n", 0, position), text[position:end]
        position = _skip(text, end) + 1  # past the comma


def _skip(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _item(item: dict[str, Any], skipped: Counter[str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    prompt = item.get("input")
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
        data["messages"] = [{"role": m.get("role"), "content": m.get("content")} for m in prompt]
        skipped.update(f"input[].{k}" for m in prompt for k in m if k not in ("role", "content"))
    elif isinstance(prompt, dict):
        data["variables"] = prompt
        named = (prompt.get(key) for key in _LANGFUSE_INPUT)
        data["input"] = next((v for v in named if isinstance(v, str)), None) or _as_text(prompt)
    elif prompt is not None:
        data["input"] = _as_text(prompt)
    expected = item.get("expectedOutput", item.get("expected_output"))
    if expected is not None:
        data["expected_output"] = _as_text(expected)
    metadata = item.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {} if metadata is None else {"value": metadata}
    for key, target in _LANGFUSE_KEYS.items():
        if item.get(key) is not None:
            metadata[target] = item[key]
    data["metadata"] = metadata
    skipped.update(key for key in item if key not in _LANGFUSE_READ and key not in _LANGFUSE_KEYS)
    return data
