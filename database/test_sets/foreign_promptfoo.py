"""promptfoo configs read into test cases (pure; foreign.py validates and collects them).

A config's `tests` are inline objects, references to files uploaded with it (CSV, JSON, JSONL,
YAML), or a list of both; `defaultTest` applies to each. An assertion with an Assay metric type
becomes the test's parameters for that metric, under metadata["assert:<name>"]; every other
assertion is listed as unmapped, and every key not imported is named in a note."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from itertools import chain
from typing import Any

from database.test_sets.foreign_assertions import (
    ASSERTION_KEYS,
    MAX_KINDS,
    SCRIPTS,
    Assertion,
    Spec,
    Unmapped,
    classify,
    parameters,
)
from database.test_sets.foreign_documents import Document, Row, error, invalid, load
from database.test_sets.foreign_templates import OverBudget
from database.test_sets.import_bounds import bounded_json, key_notes, too_wide
from database.test_sets.io import _decode
from database.test_sets.promptfoo_csv import csv_tests
from utils.errors import InvalidInput

_TEST_KEYS = {"description", "vars", "assert", "metadata"}
_INPUT_VARS = ("input", "prompt", "question", "query", "message")
_MAX_LINES = 20  # lines listed for each unmapped assertion type
_KIND = {dict: "an object", list: "a list"}
_TEST_FILES = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".yaml": "yaml", ".yml": "yaml"}
# Assertions of all the tests together, defaultTest's counted in each: they repeat in every
# test, so fifty of them over a 100 KB CSV were 2.5 million to render and check (25 s of the
# import threads every organization shares). 100,000 tests of two assertions still fit.
MAX_ASSERTIONS = 200_000


def _input(variables: Mapping[str, Any], own: Mapping[str, Any]) -> str | None:
    """The var named input (or prompt, ...), else the test's first var, else a default's."""
    named = (variables.get(name) for name in _INPUT_VARS)
    value = next((v for v in named if v is not None), None)
    for source in (own, variables):
        value = (
            next((v for v in source.values() if v is not None), None) if value is None else value
        )
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class Promptfoo:
    """Read `rows()` to the end, then `assertions`, `unmapped()` and `notes`."""

    def __init__(self, text: str, attachments: Mapping[str, bytes]) -> None:
        self.config = load(text, None, "either")
        self.attachments = attachments
        self.assertions: dict[str, Assertion] = {}
        self.notes: list[str] = []
        self._unmapped: dict[tuple[str, str | None, str], tuple[list[int], list[int]]] = {}
        self._skipped: Counter[str] = Counter()
        self._config_keys: list[str] = []
        self._file_vars = 0
        self._listed_vars = 0
        self._read: set[str] = set()
        self._defaults: list[tuple[str, Spec]] = []
        self._default_vars: dict[str, Any] = {}
        self._default_metadata: dict[str, Any] = {}
        self._assertion_count = 0

    def unmapped(self) -> list[Unmapped]:
        return [
            Unmapped(kind, count[0], lines, file, reason)
            for (kind, file, reason), (count, lines) in self._unmapped.items()
        ]

    def _unmap(self, kind: str, reason: str, line: int, file: str | None) -> None:
        count, lines = self._unmapped.setdefault((kind, file, reason), ([0], []))
        count[0] += 1
        if len(lines) < _MAX_LINES and line not in lines:
            lines.append(line)

    def rows(self) -> Iterator[Row]:
        config = {} if self.config.value is None else self.config.value  # an empty file
        if not isinstance(config, dict):
            raise invalid("A promptfoo config must be a mapping with `tests`", 1, None)
        for key, value in config.items():
            n = len(value) if isinstance(value, list | dict) else 1
            if key == "prompts":
                self.notes.append(
                    f"prompts: {n} prompt(s) are not imported; create them as Assay prompts"
                    " (`{{var}}` works the same)"
                )
            elif key == "providers":
                self.notes.append(
                    f"providers: {n} provider(s) are not imported; choose the model when you"
                    " run an evaluation"
                )
            elif key not in ("tests", "defaultTest"):
                self._config_keys.append(key)
        yield from self._read_defaults(config.get("defaultTest"))
        tests = config.get("tests")
        where = self.config.value_line(config, "tests", 1)
        if isinstance(tests, str):
            yield from self._file_tests(tests, where)
        elif isinstance(tests, list):
            for index, entry in enumerate(tests):
                line = self.config.item_line(tests, index, where)
                if isinstance(entry, str):
                    yield from self._file_tests(entry, line)
                else:
                    yield self._case(entry, line, self.config)
        elif tests is not None:
            raise invalid("`tests` must be a list of tests or a file reference", where, None)
        self._final_notes()

    def _read_defaults(self, default: Any) -> Iterator[Row]:
        if default is None:
            return
        doc, line = self.config, self.config.value_line(self.config.value, "defaultTest", 1)
        if isinstance(default, str):
            _, doc = self._attachment(default, line, ("json", "yaml"), "defaultTest")
            default, line = doc.value, 1
        if not isinstance(default, dict):
            raise invalid("defaultTest must be an object", line, doc.file, "defaultTest")
        problems: list[dict[str, Any]] = []
        variables, metadata, asserts = (default.get(k) for k in ("vars", "metadata", "assert"))
        for key, value, kind in (("vars", variables, dict), ("metadata", metadata, dict)):
            if value is not None and not isinstance(value, kind):
                problems.append(error(line, doc.file, f"defaultTest.{key}", "must be an object"))
        if asserts is not None and not isinstance(asserts, list):
            problems.append(error(line, doc.file, "defaultTest.assert", "must be a list"))
        self._default_vars = variables if isinstance(variables, dict) else {}
        self._default_metadata = metadata if isinstance(metadata, dict) else {}
        asserts = asserts if isinstance(asserts, list) else []
        for index, item in enumerate(asserts):
            at, fld = doc.item_line(asserts, index, line), f"defaultTest.assert[{index}]"
            found = self._classify(item, at, doc.file, fld, problems)
            if found:
                self._defaults.append((fld, found))
        self._skipped.update(f"defaultTest.{key}" for key in default if key not in _TEST_KEYS)
        if problems:
            yield line, doc.file, problems

    def _classify(
        self, item: Any, line: int, file: str | None, fld: str, problems: list[dict[str, Any]]
    ) -> Spec | None:
        try:
            found = classify(item, line, file)
        except ValueError as exc:
            problems.append(error(line, file, fld, str(exc)))
            return None
        if isinstance(found, tuple):
            self._unmap(*found, line, file)
            return None
        self._skipped.update(f"assert.{key}" for key in item if key not in ASSERTION_KEYS)
        return found

    def _attachment(
        self, reference: str, line: int, kinds: tuple[str, ...], fld: str = "tests"
    ) -> tuple[str, Document]:
        """The uploaded file a reference names (`file://` and `./` dropped), and its kind."""
        ref = reference.strip()
        path = ref.removeprefix("file://")
        while path.startswith("./"):
            path = path[2:]
        extension = path[path.rfind(".") :].lower() if "." in path else ""
        kind = _TEST_FILES.get(extension, "")
        problem = None
        if "://" in path:
            problem = "only files uploaded with the config are read (no other schemes)"
        elif any(char in path for char in "*?[{"):
            problem = "globs are not read: name each file, and upload it with the config"
        elif extension.split(":")[0] in SCRIPTS:  # file://make_tests.py:generate, say
            problem = "tests made by a script are not read: run it, and upload what it writes"
        elif kind not in kinds:
            problem = f"not a file of tests Assay reads ({', '.join(kinds)})"
        elif path not in self.attachments:
            problem = f"upload {path} alongside the config (a multipart part with that filename)"
        elif path in self._read:
            # Read once: a config naming one file thousands of times would have it parsed
            # as often, an upload's bytes turned into hours of parsing.
            problem = "the file is named twice: name each file once"
        if problem:
            raise invalid(f"The config refers to {ref!r}: {problem}", line, None, fld)
        self._read.add(path)
        try:
            text = _decode(self.attachments[path])
        except InvalidInput as exc:
            errors = [{**found, "file": path} for found in exc.errors or []]
            raise InvalidInput(f"{path}: {exc.detail}", errors=errors) from None
        if kind in ("csv", "jsonl"):
            return kind, Document(text, None, path)
        return kind, load(text, path, kind)

    def _file_tests(self, reference: str, line: int) -> Iterator[Row]:
        kind, doc = self._attachment(reference, line, ("csv", "json", "jsonl", "yaml"))
        name = doc.file or ""
        if kind == "csv":
            yield from self._csv_tests(doc.text, name)
        elif kind == "jsonl":
            for number, text in enumerate(doc.text.split("\n"), start=1):
                if text.strip():
                    yield self._jsonl_test(text, number, name)
        elif isinstance(doc.value, list):
            for index, entry in enumerate(doc.value):
                yield self._case(entry, doc.item_line(doc.value, index, 1), doc)
        else:
            raise invalid(f"{name} must hold a list of tests", 1, name)

    def _jsonl_test(self, text: str, number: int, name: str) -> Row:
        problem = too_wide(text)
        try:
            test = None if problem else bounded_json(text)
        except json.JSONDecodeError as exc:
            problem = f"invalid JSON: {exc.msg} at column {exc.colno}"
        except ValueError as exc:
            problem = str(exc)
        if problem:
            return number, name, [error(number, name, None, problem)]
        return self._case(test, number, Document(text, test, name))

    def _csv_tests(self, text: str, name: str) -> Iterator[Row]:
        for line, test in csv_tests(text, name):
            if isinstance(test, str):
                yield line, name, [error(line, name, None, test)]
            else:
                yield self._case(test, line, Document("", test, name))

    def _case(self, test: Any, line: int, doc: Document) -> Row:
        file = doc.file
        if not isinstance(test, dict):
            return line, file, [error(line, file, None, "a test must be an object")]
        oversize = doc.too_wide(test)
        if oversize:
            return line, file, [error(line, file, None, oversize)]
        problems: list[dict[str, Any]] = []
        own: dict[str, Any] = {}
        for key, kind in (("vars", dict), ("metadata", dict), ("assert", list)):
            own[key] = test.get(key)
            if own[key] is not None and not isinstance(own[key], kind):
                problems.append(error(line, file, key, f"must be {_KIND[kind]}"))
                own[key] = None
        variables = {**self._default_vars, **(own["vars"] or {})}
        metadata = {**self._default_metadata, **(own["metadata"] or {})}
        description = test.get("description")
        if description is not None:
            metadata["description"] = (
                description
                if isinstance(description, str)
                else json.dumps(description, ensure_ascii=False)
            )
        self._skipped.update(key for key in test if key not in _TEST_KEYS)
        values = variables.values()
        self._file_vars += sum(isinstance(v, str) and v.startswith("file://") for v in values)
        self._listed_vars += any(
            isinstance(v, list) and v and isinstance(v[0], str) for v in values
        )
        if not variables:
            problems.append(error(line, file, "vars", "a test needs vars: its input is one"))
        specs: list[tuple[str, Spec]] = []
        asserts = own["assert"] or []
        self._count_assertions(len(asserts) + len(self._defaults), line, file)
        for index, item in enumerate(asserts):
            at, fld = doc.item_line(asserts, index, line), f"assert[{index}]"
            found = self._classify(item, at, file, fld, problems)
            if found:
                specs.append((fld, found))
        used = _Claims()
        faithful = False
        for fld, spec in specs + self._defaults:
            at = spec.line if fld.startswith("assert") else line
            try:
                params = parameters(spec, variables)
            except ValueError as exc:
                problems.append(error(at, file, fld, str(exc)))
                continue
            except OverBudget as exc:
                raise invalid(str(exc), at, file, fld) from None
            if isinstance(params, str):
                self._unmap(spec.source, params, spec.line, spec.file)
                continue
            metric = self._claim(spec, used, fld)
            metadata[metric.key] = params
            faithful = faithful or metric.type == "faithfulness"
        if problems:
            return line, file, sorted(problems, key=lambda found: found["line"])
        data: dict[str, Any] = {
            "input": _input(variables, own["vars"] or {}),
            "variables": variables,
            "metadata": metadata,
        }
        context = variables.get("context")
        if faithful and isinstance(context, str | list):  # what promptfoo's judge reads
            data["context"] = [context] if isinstance(context, str) else context
        return line, file, data

    def _count_assertions(self, count: int, line: int, file: str | None) -> None:
        """Counted before they are rendered and checked: a refused file has cost no more."""
        self._assertion_count += count
        if self._assertion_count > MAX_ASSERTIONS:
            raise invalid(
                f"the tests come to more than {MAX_ASSERTIONS:,} assertions (each test's own and"
                " defaultTest's, which apply to every test): split the file",
                line,
                file,
                "assert",
            )

    def _claim(self, spec: Spec, used: _Claims, fld: str) -> Assertion:
        """The k-th use of a name in one test is name-k; a name another type took is skipped.

        A search goes on from where the test's last one for the same name and type stopped
        (the names it passed stay taken or of another type), so a test's claims take linear
        time however many share a name."""
        kind = (spec.name, spec.type, spec.negate)
        k = used.next_k.get(kind, 1)
        while True:
            name = spec.name if k == 1 else f"{spec.name}-{k}"
            k += 1
            found = self.assertions.get(name)
            if name in used.names or (found and (found.type, found.negate) != kind[1:]):
                continue
            used.names.add(name)
            used.next_k[kind] = k
            if found is None:
                if len(self.assertions) == MAX_KINDS:
                    message = (
                        f"the file asks for more than {MAX_KINDS} kinds of assertion (a set's"
                        f" metrics at most); {name!r} is the first past them"
                    )
                    raise invalid(message, spec.line, spec.file, fld)
                found = Assertion(
                    name,
                    spec.type,
                    spec.negate,
                    f"assert:{name}",
                    spec.source,
                    spec.line,
                    spec.file,
                )
                self.assertions[name] = found
            return found

    def _final_notes(self) -> None:
        keys = len(self._config_keys) + len(self._skipped)
        self.notes += key_notes(chain(self._config_notes(), self._skipped_notes()), keys)
        if self._file_vars:
            self.notes.append(
                f"vars: {self._file_vars} value(s) are file references (file://...), imported as"
                " that text, not the file's content"
            )
        if self._listed_vars:
            self.notes.append(
                f"vars: {self._listed_vars} test(s) have a var holding a list of strings, which"
                " promptfoo runs once per value; each is imported as one test, the var a list"
            )
        for name in sorted(set(self.attachments) - self._read):
            self.notes.append(f"{name}: uploaded, but the config does not refer to it; not read")

    def _config_notes(self) -> Iterator[str]:
        for key in self._config_keys:
            yield f"{key}: not imported (no Assay equivalent)"

    def _skipped_notes(self) -> Iterator[str]:
        for key, count in self._skipped.items():
            what = "assertion(s)" if key.startswith("assert.") else "test(s)"
            where = "" if key.startswith("defaultTest.") else f" set on {count} {what};"
            yield f"{key}:{where} not imported (no Assay equivalent)"


class _Claims:
    """The assertion names one test has taken, and where each search for a name resumes."""

    __slots__ = ("names", "next_k")

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.next_k: dict[tuple[str, str, bool], int] = {}
