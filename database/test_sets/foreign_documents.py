"""YAML and JSON documents read within bounds, remembering where each object starts.

YAML aliases let a few lines stand for an enormous value ("billion laughs"), so the composed
node graph is measured, each node once, before any Python object is constructed: its expanded
size and its expanded depth (a recursive alias never ends, so it is refused as too deep)."""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeAlias

import yaml

from database.test_sets.import_bounds import (
    DECODER,
    LONG_INTEGER_COMPLAINT,
    MAX_NESTING,
    json_items,
    stored_float,
    too_deep,
    too_long,
    too_long_to_build,
    too_wide,
)
from database.test_sets.io import MAX_CASES
from utils.errors import InvalidInput

# Where a case starts, in which file (None: the upload itself), and its fields or its errors.
Row: TypeAlias = tuple[int, str | None, dict[str, Any] | list[dict[str, Any]]]

MAX_YAML_NODES = 1_000_000
# Values written in the text, counted while it is read: the pure-Python reader takes about 40 µs
# a value, so this bounds a YAML file's reading to seconds (JSON reads in C, and is not bound).
MAX_YAML_WRITTEN = 250_000
# Characters of YAML text: the reader scans about a megabyte a second whatever the text holds
# (a comment or one long string is a single value), so this bounds what MAX_YAML_WRITTEN cannot.
MAX_YAML_TEXT = 2 * 1024 * 1024
MAX_YAML_CHARS = 32_000_000  # of text, aliases expanded
# A case's own levels, within the list that holds it, within the config that holds the list.
MAX_DOCUMENT_NESTING = MAX_NESTING + 2


@dataclass
class _Upload:
    """What the files of one upload (a config and its attachments) share: were each YAML file
    on a budget of its own, twenty attachments would be read for minutes."""

    max_cases: int = MAX_CASES
    yaml_values: int = 0
    yaml_chars: int = 0


_UPLOAD: ContextVar[_Upload | None] = ContextVar("foreign_upload", default=None)


def _upload() -> _Upload:
    return _UPLOAD.get() or _Upload()  # outside one_upload, a budget of the file's own


@dataclass
class Document:
    """A parsed file: its value, and where (line, start, end) each of its objects and lists
    starts, by id (the document holds them all, so no id is reused while it lives)."""

    text: str
    value: Any
    file: str | None
    places: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    item_lines: dict[int, list[int]] = field(default_factory=dict)  # a list's items' lines
    value_lines: dict[int, dict[str, int]] = field(default_factory=dict)  # a mapping's values'

    def value_line(self, mapping: dict[str, Any], key: str, default: int) -> int:
        return self.value_lines.get(id(mapping), {}).get(key) or self.line(
            mapping.get(key), default
        )

    def line(self, obj: Any, default: int) -> int:
        place = self.places.get(id(obj))
        return place[0] if place else default

    def item_line(self, items: list[Any], index: int, default: int) -> int:
        lines = self.item_lines.get(id(items))
        return lines[index] if lines and index < len(lines) else self.line(items[index], default)

    def too_wide(self, obj: Any) -> str | None:
        place = self.places.get(id(obj))
        return too_wide(self.text, place[1], place[2]) if place else None


def error(line: int, file: str | None, fld: str | None, message: str) -> dict[str, Any]:
    found: dict[str, Any] = {"line": line, "field": fld, "message": message}
    if file is not None:
        found["file"] = file
    return found


def invalid(message: str, line: int, file: str | None, fld: str | None = None) -> InvalidInput:
    where = f"{file}: " if file else ""
    return InvalidInput(f"{where}{message} (line {line})", errors=[error(line, file, fld, message)])


def load(text: str, file: str | None, kind: str) -> Document:
    """`kind` is "json", "yaml" or "either" (JSON when it parses as JSON, else YAML)."""
    if kind == "yaml" or (kind == "either" and not text.lstrip().startswith(("{", "["))):
        return _load_yaml(text, file)
    try:
        return _load_json(text, file)
    except json.JSONDecodeError as exc:
        bad_json = invalid(f"Invalid JSON: {exc.msg} at column {exc.colno}", exc.lineno, file)
    if kind == "json":
        raise bad_json from None
    try:
        return _load_yaml(text, file)  # flow-style YAML, such as {tests: [...]}
    except InvalidInput:
        raise bad_json from None


def _load_json(text: str, file: str | None) -> Document:
    deep = too_deep(text, MAX_DOCUMENT_NESTING)
    if deep is not None:
        raise invalid(f"nested more than {MAX_DOCUMENT_NESTING} levels deep", deep, file)
    document = Document(text, DECODER.decode(text), file)
    value = document.value
    tests = value.get("tests") if isinstance(value, dict) else value
    if isinstance(tests, list) and tests:
        # The same tests, with their places; past max_cases + 1 the import refuses them, so
        # they are not read again.
        limit = _upload().max_cases + 1
        items = list(islice(json_items(text), limit))
        # (The array read is the first of "tests" or "cases", in any case: where a config has
        # both, the places are of the tests only if the items are.)
        same = all(item == test for (_, _, item), test in zip(items, tests, strict=False))
        if len(items) == min(len(tests), limit) and same:
            fresh, lines, line, counted = [], [], 1, 0
            for start, end, item in items:
                line += text.count("\n", counted, start)
                counted = start
                if isinstance(item, dict | list):
                    document.places[id(item)] = (line, start, end)
                fresh.append(item)
                lines.append(line)
            document.item_lines[id(fresh)] = lines
            fresh += tests[len(items) :]
            if isinstance(value, list):
                document.value = fresh
            else:
                value["tests"] = fresh
    return document


def _text_scalar(loader: _Loader, node: yaml.Node) -> Any:
    return loader.construct_scalar(node)


def _key(key: Any) -> str:
    """A mapping key as JavaScript (promptfoo) has it: 1 and 1.0 are "1", true is "true",
    null is "null"."""
    if isinstance(key, str):
        return key
    if isinstance(key, float) and key.is_integer():
        return str(int(key))
    if isinstance(key, int | float) and not isinstance(key, bool):
        return str(key)
    return json.dumps(key, default=str)


@contextlib.contextmanager
def one_upload(max_cases: int = MAX_CASES) -> Iterator[None]:
    """The YAML files read within it share one budget of MAX_YAML_WRITTEN values and
    MAX_YAML_TEXT characters; its JSON documents' tests are read up to `max_cases` + 1."""
    token = _UPLOAD.set(_Upload(max_cases))
    try:
        yield
    finally:
        _UPLOAD.reset(token)


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads plain scalars as promptfoo's js-yaml does (YAML 1.2, see
    `_RESOLVERS`), keeps to JSON's values (dates and binary stay text, keys are strings),
    refuses nesting past the bound while composing, and records where each object starts."""

    def __init__(self, text: str, file: str | None, upload: _Upload) -> None:
        super().__init__(text)
        self.file = file
        self.levels = 0
        self.upload = upload
        self.places: dict[int, tuple[int, int, int]] = {}
        self.item_lines: dict[int, list[int]] = {}
        self.value_lines: dict[int, dict[str, int]] = {}
        self.merged: dict[int, int] = {}  # a mapping node's pairs merged in (`<<`), by id

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.upload.yaml_values += 1
        if self.upload.yaml_values > MAX_YAML_WRITTEN:
            line = self.peek_event().start_mark.line + 1
            message = (
                f"the YAML (its files together) holds more than {MAX_YAML_WRITTEN:,} values; "
                "a set this large imports as JSON, JSONL or CSV"
            )
            raise invalid(message, line, self.file)
        if not self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            return super().compose_node(parent, index)
        self.levels += 1
        try:
            if self.levels > MAX_DOCUMENT_NESTING:
                line = self.peek_event().start_mark.line + 1
                raise invalid(
                    f"nested more than {MAX_DOCUMENT_NESTING} levels deep", line, self.file
                )
            return super().compose_node(parent, index)
        finally:
            self.levels -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        obj = super().construct_object(node, deep)
        if isinstance(obj, dict | list) and id(obj) not in self.places:
            mark, end = node.start_mark, node.end_mark
            self.places[id(obj)] = (mark.line + 1, mark.index, end.index)
            if isinstance(node, yaml.SequenceNode):
                self.item_lines[id(obj)] = [item.start_mark.line + 1 for item in node.value]
            elif isinstance(node, yaml.MappingNode):
                self.value_lines[id(obj)] = {
                    str(key.value): value.start_mark.line + 1
                    for key, value in node.value
                    if isinstance(key, yaml.ScalarNode)
                }
        return obj

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Once for each node (a merged node is flattened with the first that merges it),
        remembering how many of its pairs, first in it now, were merged in."""
        if id(node) in self.merged:
            return
        own = sum(key.tag != "tag:yaml.org,2002:merge" for key, _ in node.value)
        super().flatten_mapping(node)
        self.merged[id(node)] = len(node.value) - own

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[str, Any]:
        """Keys as text (`_key`). A key whose text repeats in one mapping is refused, as
        js-yaml refuses it (1, 1.0 and "1" are one key there): one of the values would be
        lost. A key merged in (`<<`) may be overridden."""
        self.flatten_mapping(node)
        merged = self.merged[id(node)]
        mapping: dict[str, Any] = {}
        own: set[str] = set()
        for index, (key_node, value_node) in enumerate(node.value):
            if not isinstance(key_node, yaml.ScalarNode):
                raise _refused("a key must be text or a number", key_node)
            key = _key(self.construct_object(key_node, deep=True))
            if index >= merged:
                if key in own:
                    raise _refused(f"the key {key!r} appears twice in one mapping", key_node)
                own.add(key)
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


# Plain scalars as js-yaml 4 (promptfoo's reader) resolves them, by the YAML 1.2 core schema,
# not PyYAML's YAML 1.1: yes, no, on, off, 12:30 and 1_000 are text, 0755 is 755 (0o755 is
# octal). As in js-yaml, 0b101 is binary and a float needs no point (1e3). Dates keep YAML
# 1.1's pattern, which js-yaml shares, and are read as text (see the constructors below).
_INT_PATTERN = r"[-+]?(?:0b[01]+|0o[0-7]+|0x[0-9a-fA-F]+|[0-9]+)"
_FLOAT_PATTERN = (
    r"[-+]?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)
_RESOLVERS = (
    ("tag:yaml.org,2002:bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("tag:yaml.org,2002:null", r"~|null|Null|NULL|", ["~", "n", "N", ""]),
    ("tag:yaml.org,2002:int", _INT_PATTERN, "-+0123456789"),  # before float: 1 is an int
    ("tag:yaml.org,2002:float", _FLOAT_PATTERN, "-+.0123456789"),
)
_INTEGER = re.compile(_INT_PATTERN)
_KEPT_FROM_YAML_1_1 = ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:timestamp")
_BASES = {"0b": 2, "0o": 8, "0x": 16}

_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag in _KEPT_FROM_YAML_1_1]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, _pattern, _first in _RESOLVERS:
    _Loader.add_implicit_resolver(_tag, re.compile(f"^(?:{_pattern})$"), list(_first))


def _refused(problem: str, node: yaml.Node) -> yaml.constructor.ConstructorError:
    return yaml.constructor.ConstructorError(None, None, problem, node.start_mark)


def _integer(loader: _Loader, node: yaml.ScalarNode) -> int:
    text = node.value
    if _INTEGER.fullmatch(text) is None:  # tagged !!int, written otherwise
        raise _refused(f"{text[:20]!r} is not an integer", node)
    value: int | None = None
    if not too_long_to_build(text):
        with contextlib.suppress(ValueError):  # more digits than Python converts
            value = _integer_value(text)
    # A binary, octal or hexadecimal one is built without that check.
    if value is None or too_long(value):
        raise _refused(LONG_INTEGER_COMPLAINT, node)
    return value


def _integer_value(text: str) -> int:
    """`text` written as YAML 1.2 has it: 0755 is decimal, 0o755 octal."""
    digits = text.lstrip("+-")
    base = _BASES.get(digits[:2], 10)
    magnitude = int(digits[2:] if base != 10 else digits, base)
    return -magnitude if text.startswith("-") else magnitude


def _float(loader: _Loader, node: yaml.ScalarNode) -> int | float:
    """The number as the database will keep it (see `stored_number`), which is what its JSON
    spelling gives back from PostgreSQL; YAML's infinities and NaN are no JSON number."""
    value = loader.construct_yaml_float(node)
    if not math.isfinite(value):
        raise _refused(f"{node.value} is not a JSON number", node)
    return stored_float(value)


_Loader.add_constructor("tag:yaml.org,2002:int", _integer)
_Loader.add_constructor("tag:yaml.org,2002:float", _float)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _text_scalar)
_Loader.add_constructor("tag:yaml.org,2002:binary", _text_scalar)
_Loader.add_constructor(
    "tag:yaml.org,2002:set", lambda loader, node: list(loader.construct_mapping(node))
)


def _load_yaml(text: str, file: str | None) -> Document:
    upload = _upload()
    upload.yaml_chars += len(text)
    if upload.yaml_chars > MAX_YAML_TEXT:
        message = (
            f"the YAML (its files together) is more than {MAX_YAML_TEXT:,} characters; "
            "a set this large imports as JSON, JSONL or CSV"
        )
        raise invalid(message, 1, file)
    loader = _Loader(text, file, upload)
    try:
        node = loader.get_single_node()
        if node is None:
            return Document(text, None, file)
        measure(node, file)
        value = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise invalid(f"Invalid YAML: {exc.problem or exc.context}", line, file) from None
    except yaml.YAMLError as exc:  # a character YAML does not allow, say
        raise invalid(f"Invalid YAML: {exc}", 1, file) from None
    finally:
        loader.dispose()
    return Document(text, value, file, loader.places, loader.item_lines, loader.value_lines)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def measure(root: yaml.Node, file: str | None) -> None:
    """Refuse a graph whose expansion has more than MAX_YAML_NODES nodes or nests deeper than
    MAX_DOCUMENT_NESTING. Each node is measured once (memoised), so aliases cost nothing."""
    measured: dict[int, tuple[int, int, int]] = {}  # id -> (levels, expanded size, chars)
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    deeper = f"the YAML nests (through aliases) more than {MAX_DOCUMENT_NESTING} levels deep"
    larger = f"the YAML expands (through aliases) to more than {MAX_YAML_NODES:,} values"
    longer = f"the YAML expands (through aliases) to more than {MAX_YAML_CHARS:,} characters"
    while stack:
        node, depth, children_done = stack.pop()
        if children_done:
            children = [measured[id(child)] for child in _children(node)]
            levels = 1 + max((child[0] for child in children), default=0)
            size = 1 + sum(child[1] for child in children)
            chars = sum(child[2] for child in children)
            if size > MAX_YAML_NODES:
                raise invalid(larger, node.start_mark.line + 1, file)
            if chars > MAX_YAML_CHARS:
                raise invalid(longer, node.start_mark.line + 1, file)
            if levels > MAX_DOCUMENT_NESTING:
                raise invalid(deeper, node.start_mark.line + 1, file)
            measured[id(node)] = (levels, size, chars)
        elif id(node) in measured:
            continue  # an alias of a node measured already
        elif isinstance(node, yaml.ScalarNode):
            measured[id(node)] = (0, 1, len(node.value))
        elif depth > MAX_DOCUMENT_NESTING:  # a recursive alias ends here too
            raise invalid(deeper, node.start_mark.line + 1, file)
        else:
            stack.append((node, depth, True))
            stack.extend((child, depth + 1, False) for child in _children(node))
