"""A run's results as files: CSV (formula cells neutralised), JSON, and JUnit XML for CI, each
written a page of results at a time (test_sets.streaming streams them)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession

from database.results import crud
from database.results.crud.export_rows import result_rows_after
from database.results.models import Result, Run
from database.results.schemas import ResultRead
from database.test_sets import crud as test_set_crud
from database.test_sets.streaming import (
    PAGE_ROWS,
    JsonArrayEncoder,
    PageEncoder,
    ReadPage,
    csv_text,
    json_text,
    stream_pages,
)
from utils.auth import Principal
from utils.csv_cells import guard_formula

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
_SUITE_END = b"</testsuite>"
_RESULT_PAGE = TypeAdapter(list[ResultRead])
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


def _cell(value: Any) -> Any:
    if isinstance(value, str):
        return guard_formula(value)
    return "" if value is None else value


class CsvEncoder:
    """One row per result; a score column per metric the run's evaluations name. It writes the
    rows as read (`result_rows`): its columns are plain values, which validating each result
    into its model, a tenth of the export's time, would not change."""

    def __init__(self, metric_names: Sequence[str]) -> None:
        self._metric_names = list(metric_names)

    def head(self) -> bytes:
        return csv_text([[*EXPORT_COLUMNS, *(f"score:{n}" for n in self._metric_names)]])

    def page(self, results: Sequence[Mapping[str, Any]]) -> bytes:
        return csv_text(self._row(r) for r in results)

    def tail(self) -> bytes:
        return b""

    def _row(self, result: Mapping[str, Any]) -> list[Any]:
        scores = {e["metric_name"]: e["score"] for e in result["evaluations"]}
        # The columns as the JSON export shows them (ids as text), without dumping the rest of
        # the result (its evaluations, input and trajectory).
        shown = {
            "test_id": None if result["test_id"] is None else str(result["test_id"]),
            "input": _input_text(result["input"]),
            "trajectory_summary": trajectory_summary(result[_TRAJECTORY]),
        }
        return [_cell(shown[c] if c in shown else result[c]) for c in EXPORT_COLUMNS] + [
            scores.get(n, "") for n in self._metric_names
        ]


def _xml(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _classname(run: Run, test_set_name: str | None) -> str:
    """The same for every run of a test set (dots would nest it in CI systems' trees)."""
    name = (test_set_name or f"test set {run.test_set_id}").replace(".", "-")
    return _xml(f"assay.{name}")


class JunitEncoder:
    """A <testsuite> whose attributes come from `totals`, the gate as a case of its own, then
    one <testcase> per result: named by the test's own id (stable across runs and versions)
    and its repetition, so CI systems follow a test's history.

    A run still being written may gain results between the count and the cases."""

    def __init__(self, run: Run, totals: Totals, test_set_name: str | None) -> None:
        self._classname = _classname(run, test_set_name)
        self._repeated = run.repetitions > 1
        gate = run.gate_result
        self._suite = ElementTree.Element(
            "testsuite",
            name=_xml(run.name or f"assay run {run.id}"),
            tests=str(totals.results + (gate is not None)),
            failures=str(totals.failed + ((gate or {}).get("status") == "failed")),
            errors=str(totals.errored + ((gate or {}).get("status") == "undecided")),
            time=f"{totals.latency_ms / 1000:.3f}",
        )
        if gate is not None:
            _gate_case(self._suite, self._classname, gate)

    def head(self) -> bytes:
        document = ElementTree.tostring(self._suite, encoding="utf-8", xml_declaration=True)
        if document.endswith(_SUITE_END):
            return document.removesuffix(_SUITE_END)
        return document.removesuffix(b" />") + b">"  # no gate case: the suite is empty so far

    def page(self, results: Sequence[ResultRead]) -> bytes:
        return b"".join(ElementTree.tostring(self._case(r), encoding="utf-8") for r in results)

    def tail(self) -> bytes:
        return _SUITE_END

    def _case(self, result: ResultRead) -> ElementTree.Element:
        name = str(result.test_id) if result.test_id else f"case {result.position}"
        case = ElementTree.Element(
            "testcase",
            classname=self._classname,
            name=name + (f" #{result.repetition + 1}" if self._repeated else ""),
            time=f"{(result.latency_ms or 0) / 1000:.3f}",
        )
        output = _xml(result.output or "")
        summary = trajectory_summary(result.trajectory)
        if result.status == "failed":
            failed = [e for e in result.evaluations if not e.passed]
            message = "; ".join(f"{e.metric_name}: {e.reason}" for e in failed)
            ElementTree.SubElement(case, "failure", message=_xml(message)).text = output
        elif result.status == "errored":
            error_message = _xml(result.error_message or "")
            error_type = _xml(result.error_type or "error")
            error = ElementTree.SubElement(case, "error", message=error_message, type=error_type)
            error.text = error_message
        shown = f"{output}\n\n[{_xml(summary)}]" if summary else output
        ElementTree.SubElement(case, "system-out").text = shown
        return case


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
    if fmt == "csv":
        names = await crud.metric_names(session, run.id)
        return stream_pages(principal, result_rows(run.id), CsvEncoder(names))
    encoder: PageEncoder[ResultRead]
    if fmt == "junit":
        test_set = (
            await test_set_crud.get_test_set(session, run.test_set_id) if run.test_set_id else None
        )
        totals = Totals(*await crud.result_totals(session, run.id))
        encoder = JunitEncoder(run, totals, test_set.name if test_set else None)
    else:
        encoder = JsonArrayEncoder()
    return stream_pages(principal, result_pages(run.id), encoder)


def result_rows(run_id: uuid.UUID) -> ReadPage[dict[str, Any]]:
    """Reads the run's results a page at a time, in (position, repetition) order, as rows of
    ResultRead's fields."""
    after: tuple[int, int] | None = None

    async def read(session: AsyncSession) -> list[dict[str, Any]] | None:
        nonlocal after
        rows = await result_rows_after(session, run_id, after, limit=PAGE_ROWS)
        if not rows:
            return None
        after = (rows[-1]["position"], rows[-1]["repetition"])
        return rows

    return read


def result_pages(run_id: uuid.UUID) -> ReadPage[ResultRead]:
    """The same pages, each result validated as ResultRead (what the JSON and JUnit exports
    write, and the API's model of a result)."""
    read_rows = result_rows(run_id)

    async def read(session: AsyncSession) -> list[ResultRead] | None:
        rows = await read_rows(session)
        return None if rows is None else _RESULT_PAGE.validate_python(rows)

    return read
