"""A run's results as files: CSV (formula cells neutralised), JSON, and JUnit XML for CI, each
written a page of results at a time (test_sets.streaming streams them)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

from sqlalchemy.ext.asyncio import AsyncSession

from database.evaluations.schemas import EvaluationRead
from database.results import crud
from database.results.crud.export_rows import result_rows_after
from database.results.models import TERMINAL, Result, Run
from database.results.schemas import ResultRead
from database.test_sets import crud as test_set_crud
from database.test_sets.streaming import (
    PAGE_ROWS,
    JsonArrayEncoder,
    PageEncoder,
    ReadPage,
    csv_cell,
    csv_quoted,
    csv_text,
    gone_midway,
    json_text,
    stream_pages,
)
from utils.auth import Principal
from utils.csv_cells import guard_formula
from utils.fastjson import standard_float, with_standard_floats

EXPORT_COLUMNS = (
    "position",
    "repetition",
    "test_id",
    "status",
    "input",
    "output",
    "latency_ms",
    "input_tokens",
    "output_tokens",
    "cost",
    "error_type",
    "error_message",
    "trajectory_summary",
)
# Characters XML 1.0 cannot hold, escaped or not (control characters of a model's output, such
# as a terminal's colour codes): a CI system would refuse the whole file over one of them.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# The characters of ASCII it can hold.
_XML_ASCII = bytes([0x09, 0x0A, 0x0D, *range(0x20, 0x80)])
_SUITE_END = b"</testsuite>"
# The column's key: the word alone is also a metric type's name, which only the catalogue names.
_TRAJECTORY = Result.trajectory.key


@dataclass(frozen=True, slots=True)
class Totals:
    """What JUnit's <testsuite> tells before its cases, counted in the database."""

    results: int
    failed: int
    errored: int
    latency_ms: float


def _input_text(value: dict[str, Any]) -> str:
    return value.get("text") or json_text(value.get("messages") or value)


def trajectory_summary(trajectory: list[dict[str, Any]] | None) -> str | None:
    """An agent's steps or a conversation's turns in one line (the JSON export has them all):
    how many, the tools called in order, and how it ended."""
    if not trajectory:
        return None
    kind = "turns" if "turn" in trajectory[0] else "steps"
    calls = [call["name"] for entry in trajectory for call in entry.get("tool_calls") or []]
    summary = f"{len(trajectory)} {kind}"
    ended = trajectory[-1].get("ended") or trajectory[-1].get("stopped")
    if ended:
        summary += f", ended {ended}"
    if calls:
        summary += "; tools: " + ", ".join(calls[:50]) + (" ..." if len(calls) > 50 else "")
    return summary


def _text_cell(value: Any) -> str:
    if value is None:
        return ""
    if type(value) is str:
        return csv_quoted(guard_formula(value))
    return csv_cell(value)  # what a result's input may hold as its text


def _number_cell(value: float | None) -> str:
    # The csv module's text of a number (never quoted); the columns are typed as numbers.
    return "" if value is None else repr(value)


class CsvEncoder:
    """One row per result; a score column per metric the run's evaluations name. It writes the
    rows as read (`result_rows`): its columns are plain values, which validating each result
    into its model, a tenth of the export's time, would not change. Each line is written from
    the columns' known types (the page's lines joined once): a generic writer's checks of every
    cell's type took half of the time of writing it."""

    def __init__(self, metric_names: Sequence[str]) -> None:
        self._metric_names = list(metric_names)

    def head(self) -> bytes:
        return csv_text([[*EXPORT_COLUMNS, *(f"score:{n}" for n in self._metric_names)]])

    def page(self, results: Sequence[Mapping[str, Any]]) -> bytes:
        return "".join([self._line(r) for r in results]).encode()

    def tail(self) -> bytes:
        return b""

    def _line(self, result: Mapping[str, Any]) -> str:
        # The columns of EXPORT_COLUMNS, in order; the test's id as the JSON export shows it
        # (its text never needs quoting nor a guard).
        test_id = result["test_id"]
        cells = [
            repr(result["position"]),
            repr(result["repetition"]),
            "" if test_id is None else str(test_id),
            _text_cell(result["status"]),
            _text_cell(_input_text(result["input"])),
            _text_cell(result["output"]),
            _number_cell(result["latency_ms"]),
            _number_cell(result["input_tokens"]),
            _number_cell(result["output_tokens"]),
            _number_cell(result["cost"]),
            _text_cell(result["error_type"]),
            _text_cell(result["error_message"]),
            _text_cell(trajectory_summary(result[_TRAJECTORY])),
        ]
        if self._metric_names:
            scores = {e["metric_name"]: e["score"] for e in result["evaluations"]}
            cells += [_number_cell(scores.get(n)) for n in self._metric_names]
        return ",".join(cells) + "\r\n"


# --- JSON: the results as ResultRead dumps them -----------------------------------------------

_RESULT_FIELDS = tuple(ResultRead.model_fields)
_EVALUATION_FIELDS = tuple(EvaluationRead.model_fields)
# The fields whose dump is not the value as read: ids (asyncpg's own UUID class, which orjson
# refuses), JSON typed Any, floats and the evaluations (datetimes are written by orjson as
# pydantic writes them).
_RESULT_IDS = ("id", "run_id", "test_id")
_EVALUATION_IDS = ("id", "metric_id")
_FREE_FORM = ("input", _TRAJECTORY)
_FLOATS = ("latency_ms", "cost")


def _result_for_orjson(row: Mapping[str, Any]) -> dict[str, Any]:
    """A result as read (`result_rows`) as ResultRead's JSON dump, for orjson: without
    validating it into the model and dumping that (which took half of the export's time)."""
    result = {field: row[field] for field in _RESULT_FIELDS}
    for field in _RESULT_IDS:
        if (value := result[field]) is not None:
            result[field] = str(value)
    for field in _FREE_FORM:
        # As pydantic dumps a field typed Any: NaN and the infinities as null.
        result[field] = with_standard_floats(result[field], non_finite_as_null=True)
    for field in _FLOATS:
        if (value := result[field]) is not None:
            result[field] = standard_float(value)
    result["evaluations"] = [_evaluation_for_orjson(e) for e in row["evaluations"]]
    return result


def _evaluation_for_orjson(row: Mapping[str, Any]) -> dict[str, Any]:
    evaluation = {field: row[field] for field in _EVALUATION_FIELDS}
    for field in _EVALUATION_IDS:
        if (value := evaluation[field]) is not None:
            evaluation[field] = str(value)
    evaluation["score"] = standard_float(evaluation["score"])
    if (cost := evaluation["cost"]) is not None:
        evaluation["cost"] = standard_float(cost)
    return evaluation


def _result_json_data(row: Mapping[str, Any]) -> Any:
    """The dump itself, through the model (for the standard library, when orjson refuses)."""
    return ResultRead.model_validate(row).model_dump(mode="json")


# --- JUnit XML -----------------------------------------------------------------------------


def _xml(text: str) -> str:
    # Most text is ASCII with no control character: found so in C, without the pattern's
    # character by character search.
    if text.isascii() and not text.encode().translate(None, _XML_ASCII):
        return text
    return _NOT_XML.sub("\ufffd", text)


def _classname(run: Run, test_set_name: str | None) -> str:
    """The same for every run of a test set (dots would nest it in CI systems' trees)."""
    name = (test_set_name or f"test set {run.test_set_id}").replace(".", "-")
    return _xml(f"assay.{name}")


# Text and attribute values escaped as ElementTree escapes them ("&" first).
_TEXT_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"))
_ATTRIBUTE_ESCAPES = (
    *_TEXT_ESCAPES,
    ('"', "&quot;"),
    ("\r", "&#13;"),
    ("\n", "&#10;"),
    ("\t", "&#09;"),
)


def _escaped(text: str, escapes: tuple[tuple[str, str], ...]) -> str:
    for raw, escaped in escapes:
        if raw in text:  # most text has none: no copy then
            text = text.replace(raw, escaped)
    return text


def _text(text: str) -> str:
    return _escaped(text, _TEXT_ESCAPES)


def _attribute(text: str) -> str:
    return _escaped(text, _ATTRIBUTE_ESCAPES)


def _element(tag: str, attributes: str, text: str) -> str:
    """An element without children, as ElementTree writes it: empty text closes it at once."""
    if text:
        return f"<{tag}{attributes}>{_text(text)}</{tag}>"
    return f"<{tag}{attributes} />"


class JunitEncoder:
    """A <testsuite> whose attributes come from `totals`, the gate as a case of its own, then
    one <testcase> per result: named by the test's own id (stable across runs and versions)
    and its repetition, so CI systems follow a test's history.

    The suite is written by ElementTree; each case is written as text, byte for byte as
    ElementTree writes it, from the results as read (`result_rows`): building and writing an
    element tree per result took most of the export's time.

    A run not ended yet (queued or running) leads with a case in error saying so: its results
    are partial, and may gain more between the count and the cases; no reader of the file may
    take it for a pass."""

    def __init__(self, run: Run, totals: Totals, test_set_name: str | None) -> None:
        self._classname = _classname(run, test_set_name)
        self._repeated = run.repetitions > 1
        gate = run.gate_result
        unfinished = run.status not in TERMINAL
        self._suite = ElementTree.Element(
            "testsuite",
            name=_xml(run.name or f"assay run {run.id}"),
            tests=str(totals.results + (gate is not None) + unfinished),
            failures=str(totals.failed + ((gate or {}).get("status") == "failed")),
            errors=str(totals.errored + ((gate or {}).get("status") == "undecided") + unfinished),
            time=f"{totals.latency_ms / 1000:.3f}",
        )
        if unfinished:
            _unfinished_case(self._suite, self._classname, run.status)
        if gate is not None:
            _gate_case(self._suite, self._classname, gate)
        self._case_start = f'<testcase classname="{_attribute(self._classname)}" name="'

    def head(self) -> bytes:
        document = ElementTree.tostring(self._suite, encoding="utf-8", xml_declaration=True)
        if document.endswith(_SUITE_END):
            return document.removesuffix(_SUITE_END)
        return document.removesuffix(b" />") + b">"  # no gate case: the suite is empty so far

    def page(self, results: Sequence[Mapping[str, Any]]) -> bytes:
        return "".join([self._case(r) for r in results]).encode()

    def tail(self) -> bytes:
        return _SUITE_END

    def _case(self, result: Mapping[str, Any]) -> str:
        test_id = result["test_id"]
        name = str(test_id) if test_id else f"case {result['position']}"
        if self._repeated:
            name += f" #{result['repetition'] + 1}"
        time = f"{(result['latency_ms'] or 0) / 1000:.3f}"
        output = _xml(result["output"] or "")
        summary = trajectory_summary(result[_TRAJECTORY])
        parts = [self._case_start, _attribute(name), '" time="', time, '">']
        if result["status"] == "failed":
            failed = [e for e in result["evaluations"] if not e["passed"]]
            message = "; ".join(f"{e['metric_name']}: {e['reason']}" for e in failed)
            parts.append(_element("failure", f' message="{_attribute(_xml(message))}"', output))
        elif result["status"] == "errored":
            error_message = _xml(result["error_message"] or "")
            error_type = _xml(result["error_type"] or "error")
            attributes = f' message="{_attribute(error_message)}" type="{_attribute(error_type)}"'
            parts.append(_element("error", attributes, error_message))
        shown = f"{output}\n\n[{_xml(summary)}]" if summary else output
        parts += [_element("system-out", "", shown), "</testcase>"]
        return "".join(parts)


def _unfinished_case(suite: ElementTree.Element, classname: str, status: str) -> None:
    """The run itself as a case in error while it has not ended: the file is partial."""
    case = ElementTree.SubElement(suite, "testcase", classname=classname, name="run")
    message = f"the run is {status}: these are its results so far"
    ElementTree.SubElement(case, "error", message=message, type="unfinished").text = message


def _gate_case(suite: ElementTree.Element, classname: str, gate: dict[str, Any]) -> None:
    """The gate as a test case of its own: failing with its reasons when it failed, in error
    when it could not decide."""
    case = ElementTree.SubElement(suite, "testcase", classname=classname, name="gate")
    reasons = _xml("; ".join(gate.get("reasons") or []))
    if gate.get("status") == "failed":
        ElementTree.SubElement(case, "failure", message=reasons, type="gate").text = reasons
    elif gate.get("status") == "undecided":
        ElementTree.SubElement(case, "error", message=reasons, type="gate").text = reasons


async def export_run(
    session: AsyncSession, principal: Principal, run: Run, fmt: str
) -> AsyncIterator[bytes]:
    """The run's results as a streamed document: what comes before the rows (CSV's metric
    columns, JUnit's totals) is read here, in the request's transaction; the results follow a
    page at a time."""
    encoder: PageEncoder[Mapping[str, Any]]
    if fmt == "csv":
        encoder = CsvEncoder(await crud.metric_names(session, run))
    elif fmt == "junit":
        test_set = (
            await test_set_crud.get_test_set(session, run.test_set_id) if run.test_set_id else None
        )
        totals = Totals(*await crud.result_totals(session, run.id))
        encoder = JunitEncoder(run, totals, test_set.name if test_set else None)
    else:
        encoder = JsonArrayEncoder(_result_for_orjson, _result_json_data)
    return stream_pages(principal, result_rows(run.id), encoder)


def result_rows(run_id: uuid.UUID) -> ReadPage[dict[str, Any]]:
    """Reads the run's results a page at a time, in (position, repetition) order, as rows of
    ResultRead's fields (each export writes them as read: validating them into the model is
    no change to what it writes, and took a tenth of the time of writing them)."""
    after: tuple[int, int] | None = None

    async def read(session: AsyncSession) -> list[dict[str, Any]] | None:
        nonlocal after
        rows = await result_rows_after(session, run_id, after, limit=PAGE_ROWS)
        if not rows:
            await gone_midway(session, Run, run_id, "run")
            return None
        after = (rows[-1]["position"], rows[-1]["repetition"])
        return rows

    return read
