"""The JSONPath expressions a team gives to read its endpoint's answers (`response_path`,
`stream_path`, `tool_calls_path`): parsed once, with at most one recursive descent (`..`),
and no regular expression or arithmetic.

A descent visits every node below it, and each further one visits every node below each
match again: `$..a..a..a` over an answer nested 200 deep held the event loop for 10 s, where
one descent costs a walk of the answer (linear in its size, which the transport caps). A
regular expression (a filter's `=~`, `sub`) may backtrack for hours over a short answer, on
the event loop, and arithmetic (`$.text * $.count`) builds a string of any size.
"""

from __future__ import annotations

import functools
from typing import Any

from jsonpath_ng.ext import parse as parse_jsonpath
from jsonpath_ng.ext.arithmetic import Operation
from jsonpath_ng.ext.filter import Expression
from jsonpath_ng.ext.string import Sub
from jsonpath_ng.jsonpath import Descendants, JSONPath

from providers.errors import TargetError

MAX_DESCENTS = 1


def checked(path: str) -> Any:
    """The path parsed; an exception saying why when it is not one to read answers with (the
    parser raises several kinds)."""
    parsed = parse_jsonpath(path)
    refused, descents = _unbounded(parsed)
    if descents > MAX_DESCENTS:
        raise ValueError(
            f"{descents} recursive descents (`..`): at most {MAX_DESCENTS} is allowed,"
            " each one walks the whole answer below it"
        )
    if refused:
        raise ValueError(f"{refused} is not allowed: it can run without bound over an answer")
    return parsed


def _unbounded(parsed: JSONPath) -> tuple[str | None, int]:
    """What in a parsed path could run without bound, if anything; and its recursive descents,
    counted in the parsed path, not its text: what reads as a quoted name there (between the
    quotes of a backtick operator's arguments) may be path to the parser."""
    nodes: list[Any] = [parsed]
    refused, descents = None, 0
    while nodes:
        node = nodes.pop()
        if isinstance(node, Sub) or (isinstance(node, Expression) and node.op == "=~"):
            refused = "a regular expression (`=~`, `sub`)"
        elif isinstance(node, Operation):
            refused = f"arithmetic (`{node.op_symbol}`)"
        descents += isinstance(node, Descendants)
        if isinstance(node, list | tuple):  # a filter's expressions; a sort's (key, reverse)s
            nodes.extend(node)
        elif isinstance(node, JSONPath):
            nodes.extend(vars(node).values())
    return refused, descents


@functools.lru_cache(maxsize=256)
def compiled(path: str) -> Any:
    """The path, checked and parsed once (parsing costs milliseconds, finding microseconds);
    a configuration error when it is not one to read with (a path saved before the rule)."""
    try:
        return checked(path)
    except Exception as exc:
        raise TargetError("configuration_error", f"{path}: {exc}") from exc


def values(path: str, document: Any) -> list[Any]:
    return [match.value for match in compiled(path).find(document)]
