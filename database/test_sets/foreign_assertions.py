"""promptfoo's assertions as Assay metrics: which type each maps to, and each test's
parameters for it, rendered with the test's vars ({{ name }} replaced by the var's value)."""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import regex

from database.test_sets import foreign_templates
from database.test_sets.foreign_templates import MAX_TEXT as _MAX_TEXT
from database.test_sets.foreign_templates import render, sole_var, text
from database.test_sets.import_bounds import bounded_json
from utils.json_schemas import check_json_schema
from utils.patterns import PatternTooCostly, compile_bounded


@dataclass(frozen=True)
class Assertion:
    """A metric the file asks for. Each test that asserts it holds its own parameters for it
    in its metadata under `key`; tests without that key are not scored by it."""

    name: str
    type: str
    negate: bool
    key: str
    source: str
    line: int = field(default=1, compare=False)  # where the file first asks for it
    file: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Unmapped:
    type: str
    count: int
    lines: list[int]
    file: str | None
    reason: str


# base type -> (Assay type, how its parameters are made)
_KINDS = {
    **{name: (name, "text") for name in ("equals", "contains", "icontains", "starts-with")},
    "contains-any": ("contains-any", "list"),
    "contains-all": ("contains-all", "list"),
    "icontains-any": ("contains-any", "ilist"),
    "icontains-all": ("contains-all", "ilist"),
    "regex": ("regex", "regex"),
    "is-json": ("is-json", "json"),
    "latency": ("max-latency", "ms"),
    "cost": ("max-cost", "usd"),
    "llm-rubric": ("llm-rubric", "rubric"),
    "answer-relevance": ("answer-relevance", "bare"),
    "context-faithfulness": ("faithfulness", "bare"),
    "is-refusal": ("refusal", "bare"),
}
_SET_REASON = "assertion sets (grouped assertions) are not imported"
_NEEDS_VALUE = {"text", "list", "ilist", "regex", "rubric"}
ASSERTION_KEYS = {"type", "value", "threshold", "metric"}
_MAX_PATTERN, _MAX_VALUES = 2_000, 200
MAX_KINDS = 50  # kinds of assertion in one file: each becomes one of the set's metrics
SCRIPTS = (".js", ".cjs", ".mjs", ".ts", ".py")
# promptfoo's assertion types, which a CSV `__expected` cell may start with (`type:value`).
_CSV_TYPE_NAMES = (
    "answer-relevance bleu classifier contains contains-all contains-any contains-html "
    "contains-json contains-sql contains-xml context-faithfulness context-recall "
    "context-relevance conversation-relevance cost equals factuality finish-reason g-eval gleu "
    "guardrails icontains icontains-all icontains-any is-html is-json is-refusal is-sql "
    "is-valid-function-call is-valid-openai-function-call is-valid-openai-tools-call is-xml "
    "javascript latency levenshtein llm-rubric meteor model-graded-closedqa "
    "model-graded-factuality moderation perplexity perplexity-score pi python regex rouge-n "
    "ruby similar starts-with tool-call-f1 webhook word-count"
)
_CSV_TYPES = frozenset(_CSV_TYPE_NAMES.split())
_CSV_CODE = (
    ("javascript:", "javascript"),
    ("fn:", "javascript"),
    ("eval:", "javascript"),
    ("python:", "python"),
)
_CSV_ASSERTION = re.compile(r"(not-)?([a-z][a-z0-9-]*)(?:\((\d+(?:\.\d+)?)\))?(?::(.*))?", re.S)


@dataclass(frozen=True)
class Spec:
    """A mapped assertion before its value is rendered with a test's vars."""

    source: str
    name: str
    type: str
    kind: str
    negate: bool
    value: Any
    threshold: float | None
    line: int
    file: str | None


def _number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number")
    try:
        number = float(value)
    except OverflowError:  # an integer past a double's range
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number")
    return number


def _schema(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = bounded_json(value)
        except ValueError:
            value = None
    if not isinstance(value, dict):
        raise ValueError("is-json's value must be a JSON schema (an object)")
    return dict(check_json_schema(value))


def classify(item: Any, line: int, file: str | None) -> Spec | tuple[str, str]:
    """An assertion's metric, or (its type, why it has none); ValueError when malformed."""
    if not isinstance(item, dict) or not isinstance(item.get("type"), str) or not item["type"]:
        raise ValueError("an assertion must be an object with a type")
    source: str = item["type"]
    negate = source.startswith("not-")
    base = source.removeprefix("not-")
    if base not in _KINDS:
        return source, _SET_REASON if base == "assert-set" else "no Assay equivalent"
    if "transform" in item or "contextTransform" in item:
        return source, "it transforms the output first, which Assay does not"
    value = item.get("value")
    if isinstance(value, str) and value.strip().startswith("file://"):
        return source, f"its value is a file reference ({value.strip()}), which is not imported"
    metric_type, kind = _KINDS[base]
    threshold = _number(item.get("threshold"), "threshold")
    if kind in ("ms", "usd") and threshold is None:
        return source, "no threshold, so no limit to check"
    if kind in ("ms", "usd") and threshold is not None and threshold <= 0:
        raise ValueError(f"{source}'s threshold must be above 0")
    if kind in _NEEDS_VALUE and value is None:
        raise ValueError(f"{source} needs a value")
    if kind == "json" and value is not None:
        metric_type, value = "json-schema", _schema(value)
    metric = item.get("metric")
    if metric is not None and (not isinstance(metric, str) or not metric.strip()):
        raise ValueError("metric must be a name")
    name = metric.strip() if metric else source
    return Spec(source, name, metric_type, kind, negate, value, threshold, line, file)


def _values(value: Any, variables: Mapping[str, Any]) -> list[str]:
    if isinstance(value, str):
        name = sole_var(value)
        listed = variables.get(name) if name else None
        if isinstance(listed, list):
            value = listed
        else:
            rendered = render(value, variables, _MAX_TEXT * _MAX_VALUES)
            value = [part.strip() for part in rendered.split(",") if part.strip()]
    if not isinstance(value, list):
        raise ValueError("the values must be a list or comma-separated text")
    if not value or len(value) > _MAX_VALUES:
        raise ValueError(f"{len(value)} values; from 1 to {_MAX_VALUES}")
    return [text(item, variables) for item in value]


# The distinct regular expressions one upload may compile, in characters together. A `regex`
# assertion of defaultTest is rendered with each test's vars, a pattern of its own each time,
# and compiling takes microseconds a character in Python, holding the interpreter: a 100 KB
# upload compiled for minutes. This bounds an upload's to a few seconds.
MAX_PATTERN_CHARS = 300_000
_PATTERNS: ContextVar[tuple[set[str], list[int]] | None] = ContextVar(
    "upload_patterns", default=None
)


@contextlib.contextmanager
def one_upload() -> Iterator[None]:
    """The patterns compiled within it share one budget of MAX_PATTERN_CHARS, and its
    renders one of foreign_templates.MAX_RENDERED_CHARS."""
    token = _PATTERNS.set((set(), [0]))
    try:
        with foreign_templates.one_upload():
            yield
    finally:
        _PATTERNS.reset(token)


def _charge_pattern(pattern: str) -> None:
    budget = _PATTERNS.get()
    if budget is None or pattern in budget[0]:
        return
    seen, chars = budget
    seen.add(pattern)
    chars[0] += len(pattern)
    if chars[0] > MAX_PATTERN_CHARS:
        raise ValueError(
            f"the upload's regular expressions hold more than {MAX_PATTERN_CHARS:,} characters"
            " together (each test's vars make each rendered pattern one of its own)"
        )


def parameters(spec: Spec, variables: Mapping[str, Any]) -> dict[str, Any] | str:
    """A test's parameters for the metric, or why it cannot have them; ValueError if bad."""
    params: dict[str, Any] = {}
    if spec.kind in ("text", "rubric"):
        params["value" if spec.kind == "text" else "criteria"] = text(spec.value, variables)
    elif spec.kind in ("list", "ilist"):
        params["values"] = _values(spec.value, variables)
        if spec.kind == "ilist":
            params["case_sensitive"] = False
    elif spec.kind == "regex":
        pattern = text(spec.value, variables, _MAX_PATTERN)
        _charge_pattern(pattern)
        try:
            compile_bounded(pattern)
        except (regex.error, PatternTooCostly) as exc:
            return f"the pattern is not a regular expression Assay can run: {exc}"
        params["pattern"] = pattern
    elif spec.kind == "json" and spec.value is not None:
        params["schema"] = spec.value
    elif spec.kind in ("ms", "usd"):
        params[spec.kind] = spec.threshold
    if spec.threshold is not None and spec.kind not in ("ms", "usd"):
        params["threshold"] = spec.threshold
    return params


def csv_assertion(cell: str) -> dict[str, Any]:
    """An `__expected` cell as promptfoo reads it: `type:value`, else a value to equal."""
    for prefix, kind in _CSV_CODE:
        if cell.startswith(prefix):
            return {"type": kind, "value": cell.removeprefix(prefix).strip()}
    if cell.startswith(("grade:", "llm-rubric:")):
        return {"type": "llm-rubric", "value": cell.split(":", 1)[1].strip()}
    if cell.startswith("file://") and cell.rstrip().endswith(SCRIPTS):
        return {"type": "python" if cell.rstrip().endswith(".py") else "javascript", "value": cell}
    match = _CSV_ASSERTION.fullmatch(cell)
    if not match or match.group(2) not in _CSV_TYPES:
        return {"type": "equals", "value": cell}
    negate, kind, threshold, value = match.groups()
    found: dict[str, Any] = {"type": (negate or "") + kind}
    value = (value or "").strip()
    if kind.endswith(("contains-any", "contains-all")):
        found["value"] = [part.strip() for part in value.split(",") if part.strip()]
    elif value:
        found["value"] = value
    if threshold:
        found["threshold"] = float(threshold)
    return found
