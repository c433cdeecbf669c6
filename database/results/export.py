"""A run's results as files: CSV (formula cells neutralised), JSON, and JUnit XML for CI."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any
from xml.etree import ElementTree

from database.results.models import Run
from database.results.schemas import ResultRead
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
)


def _input_text(value: dict[str, Any]) -> str:
    return value.get("text") or json.dumps(value.get("messages") or value, ensure_ascii=False)


def export_results(
    run: Run, results: Sequence[ResultRead], fmt: str, *, test_set_name: str | None = None
) -> bytes:
    """`test_set_name` names the JUnit classname, so CI systems follow a test across runs."""
    if fmt == "json":
        return json.dumps(
            [r.model_dump(mode="json") for r in results], ensure_ascii=False, indent=2
        ).encode()
    if fmt == "csv":
        metric_names = sorted({e.metric_name for r in results for e in r.evaluations})
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow([*EXPORT_COLUMNS, *(f"score:{n}" for n in metric_names)])
        for r in results:
            scores = {e.metric_name: e.score for e in r.evaluations}
            row = r.model_dump(mode="json")
            row["input"] = _input_text(r.input)
            writer.writerow(
                [_cell(row[c]) for c in EXPORT_COLUMNS] + [scores.get(n, "") for n in metric_names]
            )
        return buffer.getvalue().encode()
    return _junit(run, results, test_set_name)


def _cell(value: Any) -> Any:
    if isinstance(value, str):
        return guard_formula(value)
    return "" if value is None else value


def _classname(run: Run, test_set_name: str | None) -> str:
    """The same for every run of a test set (dots would nest it in CI systems' trees)."""
    name = (test_set_name or f"test set {run.test_set_id}").replace(".", "-")
    return f"assay.{name}"


def _case_name(run: Run, result: ResultRead) -> str:
    """A test's own id (stable across runs and versions), with its repetition."""
    name = str(result.test_id) if result.test_id else f"case {result.position}"
    return name + (f" #{result.repetition + 1}" if run.repetitions > 1 else "")


def _junit(run: Run, results: Sequence[ResultRead], test_set_name: str | None) -> bytes:
    classname = _classname(run, test_set_name)
    gate = run.gate_result
    suite = ElementTree.Element(
        "testsuite",
        name=run.name or f"assay run {run.id}",
        tests=str(len(results) + (gate is not None)),
        failures=str(
            sum(r.status == "failed" for r in results) + ((gate or {}).get("status") == "failed")
        ),
        errors=str(
            sum(r.status == "errored" for r in results)
            + ((gate or {}).get("status") == "undecided")
        ),
        time=f"{sum((r.latency_ms or 0) for r in results) / 1000:.3f}",
    )
    if gate is not None:
        _gate_case(suite, classname, gate)
    for r in results:
        case = ElementTree.SubElement(
            suite,
            "testcase",
            classname=classname,
            name=_case_name(run, r),
            time=f"{(r.latency_ms or 0) / 1000:.3f}",
        )
        if r.status == "failed":
            failed = [e for e in r.evaluations if not e.passed]
            failure = ElementTree.SubElement(
                case, "failure", message="; ".join(f"{e.metric_name}: {e.reason}" for e in failed)
            )
            failure.text = r.output or ""
        elif r.status == "errored":
            error = ElementTree.SubElement(
                case, "error", message=r.error_message or "", type=r.error_type or "error"
            )
            error.text = r.error_message or ""
        output = ElementTree.SubElement(case, "system-out")
        output.text = r.output or ""
    return ElementTree.tostring(suite, encoding="utf-8", xml_declaration=True)


def _gate_case(suite: ElementTree.Element, classname: str, gate: dict[str, Any]) -> None:
    """The gate as a test case of its own: failing with its reasons when it failed, in error
    when it could not decide."""
    case = ElementTree.SubElement(suite, "testcase", classname=classname, name="gate")
    reasons = "; ".join(gate.get("reasons") or [])
    if gate.get("status") == "failed":
        ElementTree.SubElement(case, "failure", message=reasons, type="gate").text = reasons
    elif gate.get("status") == "undecided":
        ElementTree.SubElement(case, "error", message=reasons, type="gate").text = reasons
