"""Deterministic checks: each one's parameters and its scorer (declared in catalogue.py)."""

from __future__ import annotations

import functools
import json
import sys
from decimal import Decimal
from typing import Annotated, Any, Literal, NoReturn

import referencing.exceptions
import regex
from pydantic import Field, StringConstraints, field_validator, model_validator
from rapidfuzz import fuzz

from database.evaluations.saved_schemas import TOO_LARGE
from database.evaluations.scopes import SCOPE
from database.evaluations.scoring import MetricSpec, Observation, ScoringError
from database.evaluations.text_forms import composed
from utils.check_budget import CHECK_SECONDS, OutOfTime, seconds_left
from utils.json_schemas import SchemaTooCostly, bounded_validator, first_error
from utils.patterns import PatternTooCostly, compile_bounded
from utils.save_checks import schema_in_body
from utils.schemas import InputModel

REGEX_SECONDS = 0.5
# Taken as given, spaces and all (request bodies are trimmed otherwise): " no " is a word.
Text = Annotated[str, StringConstraints(min_length=1, max_length=10_000, strip_whitespace=False)]


# --- parameters -----------------------------------------------------------------------------


class ExpectedText(InputModel):
    """Compare with `value`, or with the test's expected_output when no value is given. A value
    is matched as given, spaces and all (`equals` strips both sides); an expected output is
    stripped."""

    value: Text | None = None
    case_sensitive: bool = True


class TextList(InputModel):
    values: list[Text] = Field(min_length=1, max_length=200)
    case_sensitive: bool = True


class RegexParameters(InputModel):
    pattern: Annotated[
        str, StringConstraints(min_length=1, max_length=2000, strip_whitespace=False)
    ]
    flags: list[Literal["i", "m", "s"]] = Field(default_factory=list)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:  # the engine that scores it (which knows \p{L} and other classes re does not)
            compile_bounded(value)
        except regex.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class JsonSchemaParameters(InputModel):
    json_schema: dict[str, Any] = Field(alias="schema")

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        return dict(schema_in_body(value))


class MaxLatency(InputModel):
    ms: float = Field(gt=0)


class MaxCost(InputModel):
    usd: float = Field(gt=0)


class MaxTokens(InputModel):
    tokens: int = Field(gt=0)


class WordCount(InputModel):
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _a_bound(self) -> WordCount:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


# --- scorers --------------------------------------------------------------------------------


def _binary(ok: bool, reason_ok: str, reason_fail: str) -> tuple[float, str]:
    return (1.0, reason_ok) if ok else (0.0, reason_fail)


def _reference(spec: MetricSpec, obs: Observation) -> str:
    value = spec.parameters.get("value", obs.expected)
    if value is None:
        raise ScoringError("no value to compare with: set parameters.value or expected_output")
    return str(value)


def _fold(text: str, spec: MetricSpec, *, force: bool = False) -> str:
    return text.casefold() if force or not spec.parameters.get("case_sensitive", True) else text


def _compared(text: str, spec: MetricSpec, *, force: bool = False) -> str:
    """`text` as a text check compares it: composed (what looks the same is the same, an
    accent typed apart or not), then folded when the check ignores case (or `force`)."""
    return _fold(composed(text), spec, force=force)


def _output_and_reference(spec: MetricSpec, obs: Observation) -> tuple[str, str]:
    """Both stripped (equality of what was said), and compared as text checks compare."""
    return _compared(obs.output.strip(), spec), _compared(_reference(spec, obs).strip(), spec)


def equals(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    output, wanted = _output_and_reference(spec, obs)
    return _binary(output == wanted, "output equals the reference", "output differs")


def _given_reference(spec: MetricSpec, obs: Observation, *, insensitive: bool = False) -> str:
    """The metric's value as given, spaces and all (' no ' is not found in 'know', 'Yes ' does
    not start 'Yesterday'); else the test's expected output, stripped (as files end lines)."""
    reference = _reference(spec, obs)
    given = "value" in spec.parameters
    return _compared(reference if given else reference.strip(), spec, force=insensitive)


def starts_with(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    wanted = _given_reference(spec, obs)
    # The answer's leading spaces are not what it starts with, unless the reference's are.
    output = _compared(obs.output if wanted[:1].isspace() else obs.output.lstrip(), spec)
    return _binary(output.startswith(wanted), "starts as expected", "does not start so")


def contains(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    output, wanted = _compared(obs.output, spec), _given_reference(spec, obs)
    return _binary(_holds(output, wanted), "contains the reference", "reference not found")


def icontains(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    output = _compared(obs.output, spec, force=True)
    wanted = _given_reference(spec, obs, insensitive=True)
    return _binary(_holds(output, wanted), "contains the reference", "reference not found")


# Looking for a value holds the interpreter, in any thread: some 3 to 10 ns per character of
# the answer. A long answer is searched a window at a time: a check scored in a thread lets the
# event loop run between windows, and keeps to its budget.
SEARCH_WINDOW = 1_000_000


def _holds(text: str, value: str) -> bool:
    """`value in text`, a window at a time, within the check's budget."""
    last_start = len(text) - len(value)  # where an occurrence may start, at the latest
    for start in range(0, max(last_start + 1, 1), SEARCH_WINDOW):
        seconds_left(CHECK_SECONDS)  # OutOfTime once the check's budget is spent
        if text.find(value, start, start + SEARCH_WINDOW + len(value) - 1) != -1:
            return True
    return False


def _searched(
    spec: MetricSpec, obs: Observation, *, until_found: bool = False
) -> tuple[list[str], dict[str, bool]]:
    """The values, as the check compares them, and whether the output holds each one searched:
    every value, or (`until_found`) those up to the first the output holds."""
    output = _compared(obs.output, spec)
    values = [_compared(v, spec) for v in spec.parameters["values"]]
    held: dict[str, bool] = {}
    for value in values:
        if value not in held:
            held[value] = _holds(output, value)
            if until_found and held[value]:
                break
    return values, held


def contains_any(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    values, held = _searched(spec, obs, until_found=True)
    found = next((value for value in values if held.get(value)), None)
    return _binary(found is not None, f"found {found!r}", "none found")


def contains_all(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    values, held = _searched(spec, obs)
    missing = [value for value in values if not held[value]]
    score = (len(values) - len(missing)) / len(values)
    return score, ("all found" if not missing else f"missing {missing[:5]}")


# A text check that reads more than this (the answers once per value and once more to fold
# their case, at up to 25 ns a character, and the values) is scored in a thread.
INLINE_READ_CHARS = 1_000_000
# What composing a text that is not ASCII may cost (up to 300 ns a character), in reads.
COMPOSING_READS = 12


def reads_much(spec: MetricSpec, obs: Observation) -> bool:
    """Whether a text check (a value or `values` looked for in the answer) of `obs` reads
    more than INLINE_READ_CHARS, a text it composes (text_forms) counting COMPOSING_READS
    times more."""
    answers, times = [obs.output], 1
    if obs.turns and spec.parameters.get(SCOPE, "last") != "last":
        answers = [str(turn.get("text") or "") for turn in obs.turns]
        times = len(obs.turns)
    reference = spec.parameters.get("value", obs.expected)
    values = [str(value) for value in spec.parameters.get("values") or [reference or ""]]
    read = sum(map(len, answers)) * (len(values) + 1) + sum(map(len, values)) * times
    composing = sum(map(_not_ascii, answers)) + sum(map(_not_ascii, values)) * times
    return read + composing * COMPOSING_READS > INLINE_READ_CHARS


def _not_ascii(text: str) -> int:
    """The characters composing `text` reads: none when it is ASCII (which isascii() knows
    without reading it)."""
    return 0 if text.isascii() else len(text)


def matches_regex(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    flags = 0
    for flag in spec.parameters.get("flags", []):
        flags |= {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL}[flag]
    try:
        # Bounded both ways: a pathological pattern must not stall the event loop of every
        # tenant, compiling (a pattern stored before the bound) or matching. The whole answer
        # is read (within the time): a match past a cut would go unseen, a wrong verdict.
        seconds = seconds_left(REGEX_SECONDS)  # less, on the later turns of a conversation
        match = compile_bounded(spec.parameters["pattern"], flags).search(
            obs.output, timeout=seconds
        )
    except PatternTooCostly as exc:
        raise ScoringError(str(exc)) from exc
    except OutOfTime as exc:
        raise ScoringError(f"the pattern {exc}; simplify it") from exc
    except TimeoutError as exc:
        took = (
            f"{REGEX_SECONDS} s" if seconds == REGEX_SECONDS else f"the check's {CHECK_SECONDS:g} s"
        )
        raise ScoringError(f"the pattern took longer than {took}; simplify it") from exc
    return _binary(match is not None, "pattern matches", "pattern does not match")


# Decoding holds the interpreter, in any thread: ten megabytes of empty arrays held the event
# loop a second, a million characters of them a tenth.
MAX_JSON_CHARS = 1_000_000


def _json(text: str, *, exact: bool) -> Any:
    """The answer as JSON (RFC 8259: no NaN or Infinity); ValueError when it is not, and
    ScoringError when it is too long or nests too deep to read (valid, maybe, but not to be
    judged). An integer of more digits than int() reads is JSON all the same: a Decimal, or
    (`exact`, for a check that needs the values) a ScoringError."""
    if len(text) > MAX_JSON_CHARS:
        raise ScoringError(
            f"the answer is too long to read as JSON ({len(text):,} characters; at most"
            f" {MAX_JSON_CHARS:,})"
        )
    try:
        try:
            return json.loads(text, parse_constant=_not_json)
        except json.JSONDecodeError:
            raise
        except ValueError:  # an integer too long for int() (or NaN, refused again below)
            long: list[str] = []
            integer = functools.partial(_integer, long)
            document = json.loads(text, parse_constant=_not_json, parse_int=integer)
    except RecursionError:
        raise ScoringError("the answer nests too deep to be read as JSON") from None
    if long and exact:
        # Not as an int: building one takes time quadratic in its digits (a million took
        # 39 s). Nor as a Decimal: a schema's checks misjudge it (it is not of type integer,
        # and a float multipleOf cannot divide it).
        raise ScoringError(
            f"the answer holds an integer of {len(long[0].lstrip('-')):,} digits: a schema is"
            f" checked against integers of at most {sys.get_int_max_str_digits():,}"
        )
    return document


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _integer(long: list[str], digits: str) -> int | Decimal:
    try:
        return int(digits)
    except ValueError:  # past sys.get_int_max_str_digits(), which bounds int()'s quadratic work
        long.append(digits)
        return Decimal(digits)


def is_json(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    try:
        _json(obs.output, exact=False)
    except ValueError as exc:
        return 0.0, f"not JSON: {exc}"
    return 1.0, "valid JSON"


def matches_json_schema(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    try:
        document = _json(obs.output, exact=True)
    except ValueError as exc:
        return 0.0, f"not JSON: {exc}"
    schema = spec.parameters["schema"]
    try:
        error = first_error(bounded_validator(schema), document)
    except SchemaTooCostly as exc:
        raise ScoringError(str(exc)) from None
    except referencing.exceptions.Unresolvable as exc:  # a $ref to nowhere (none is fetched)
        raise ScoringError(f"the schema refers to what it does not hold: {exc}") from None
    except OverflowError:
        raise ScoringError(f"the answer holds {TOO_LARGE}") from None
    if error is not None:
        return 0.0, f"does not match the schema: {error.message}"
    return 1.0, "matches the schema"


# An edit distance costs the product of the two lengths, on the event loop (the library holds
# the interpreter throughout, in any thread): 1e8 is some 5 ms of ASCII, 30 ms of CJK text,
# whose characters the library compares more slowly. Beyond, the case errs.
MAX_SIMILARITY_CELLS = 100_000_000


def similarity(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    reference = _reference(spec, obs)
    if len(obs.output) * len(reference) > MAX_SIMILARITY_CELLS * 3:  # folding may triple them
        _too_long_to_compare(len(obs.output), len(reference))
    output, reference = _fold(obs.output.strip(), spec), _fold(reference.strip(), spec)
    if len(output) * len(reference) > MAX_SIMILARITY_CELLS:
        _too_long_to_compare(len(output), len(reference))
    ratio = fuzz.ratio(output, reference) / 100
    return ratio, f"edit-distance similarity {ratio:.2f}"


def _too_long_to_compare(output: int, reference: int) -> NoReturn:
    raise ScoringError(
        f"too long to compare by edit distance ({output:,} and {reference:,} characters; their"
        f" product may be at most {MAX_SIMILARITY_CELLS:,})"
    )


def max_latency(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    limit, latency = spec.parameters["ms"], obs.latency_ms
    if latency is None:
        raise ScoringError("the latency is unknown: the answer was recorded or came from the cache")
    return _binary(latency <= limit, f"{latency:.0f} ms", f"{latency:.0f} ms > {limit}")


def max_cost(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    if obs.cost is None:
        raise ScoringError("the cost of this call is unknown (no price for the model)")
    limit = spec.parameters["usd"]
    return _binary(obs.cost <= limit, f"${obs.cost:.6f}", f"${obs.cost:.6f} > ${limit}")


def max_tokens(spec: MetricSpec, obs: Observation) -> tuple[float, str]:
    if obs.tokens is None:
        raise ScoringError("the target reported no token usage")
    limit = spec.parameters["tokens"]
    return _binary(obs.tokens <= limit, f"{obs.tokens} tokens", f"{obs.tokens} > {limit} tokens")
