"""Imports of test files into a set, native (CSV, JSON, JSONL) or foreign (promptfoo,
OpenAI Evals, Langfuse): the cases go to the set; a foreign file's assertions become metrics
that take each test's parameters, added to the set's default metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from sqlalchemy.ext.asyncio import AsyncSession

from database.evaluations import crud
from database.evaluations.catalogue import CATALOGUE, FROM_TEST, given_parameters
from database.evaluations.models import Metric
from database.evaluations.scoring import ScoringError
from database.test_sets import crud as test_set_crud
from database.test_sets.foreign import Assertion, ForeignFormat, ForeignImport, parse_foreign
from database.test_sets.foreign_assertions import MAX_KINDS
from database.test_sets.io import MAX_REPORTED_ERRORS, detect_format
from database.test_sets.models import TestSet
from database.test_sets.schemas import ImportedMetric, ImportResult, LeftOut
from database.test_sets.service import (
    ImportMode,
    off_loop,
    parsed_cases,
    published_hash,
    write_cases,
)
from utils.auth import Principal
from utils.errors import Conflict, InvalidInput

ImportFormat = Literal["csv", "json", "jsonl", "promptfoo", "openai-evals", "langfuse"]
FOREIGN: tuple[str, ...] = get_args(ForeignFormat)
MAX_METRICS = MAX_KINDS  # a set's default metrics, and a run's
MAX_NAME = 200


@dataclass
class Upload:
    content: bytes
    filename: str | None = None
    content_type: str | None = None
    attachments: dict[str, bytes] = field(default_factory=dict)  # by file name


@dataclass(frozen=True)
class Parsed:
    """An upload parsed and checked whole, before anything is written (or locked)."""

    cases: list[dict[str, Any]]
    content_hash: str | None = None  # a native file's, when a sync may be spared by it
    foreign: ForeignImport | None = None


async def parse_import(
    session: AsyncSession,
    test_set: TestSet,
    upload: Upload,
    *,
    fmt: ImportFormat | None,
    mode: ImportMode,
) -> Parsed:
    """The file parsed and checked off the event loop, holding no lock on the set meanwhile
    (a large file's seconds of parsing would hold every other import into it)."""
    if fmt is None or fmt not in FOREIGN:
        if upload.attachments:
            raise InvalidInput("only a promptfoo config refers to other files", field="file")
        native = detect_format(upload.filename, upload.content_type, fmt)
        # Hashed only when the hash may spare a sync its comparison (see write_cases).
        hashed = mode == "sync" and await published_hash(session, test_set) is not None
        cases, content_hash = await off_loop(
            test_set.organization_id, parsed_cases, upload.content, native, hashed
        )
        return Parsed(cases, content_hash)
    foreign, cases = await off_loop(
        test_set.organization_id, _parse_checked, upload.content, fmt, upload.attachments
    )
    return Parsed(cases, foreign=foreign)


async def write_import(
    session: AsyncSession,
    principal: Principal,
    test_set: TestSet,
    parsed: Parsed,
    *,
    mode: ImportMode,
) -> ImportResult:
    """All or nothing, into the set locked for its writes."""
    written, changed = await write_cases(
        session, principal, test_set, parsed.cases, mode=mode, content_hash=parsed.content_hash
    )
    result = ImportResult(
        imported=written,
        test_count=await test_set_crud.count_members(session, test_set.id),
        changed=changed,
    )
    if (foreign := parsed.foreign) is not None:
        result.metrics = await _metrics_for(session, principal, test_set, foreign.assertions)
        result.unmapped = [
            LeftOut.model_validate(item, from_attributes=True) for item in foreign.unmapped
        ]
        result.notes = foreign.notes
    return result


def _parse_checked(
    content: bytes, fmt: ForeignFormat, attachments: dict[str, bytes]
) -> tuple[ForeignImport, list[dict[str, Any]]]:
    """The foreign file parsed, with its cases dumped, and every test's parameters for each
    assertion checked as a run would, so a bad one is a 422 by line now rather than an error
    in every run."""
    parsed = parse_foreign(content, fmt, attachments)
    if len(parsed.assertions) > MAX_METRICS:
        raise InvalidInput(
            f"the file asks for {len(parsed.assertions)} kinds of assertion; at most"
            f" {MAX_METRICS} (a set's metrics)"
        )
    errors: list[dict[str, Any]] = []
    for assertion in parsed.assertions:
        if len(assertion.name) > MAX_NAME:
            message = f"over {MAX_NAME} characters"
            place = {"line": assertion.line, "file": assertion.file}
            errors.append({**place, "field": "metric", "message": message})
    complaints: dict[tuple[str, str], str | None] = {}
    for case, line, file in zip(parsed.cases, parsed.lines, parsed.files, strict=True):
        for assertion in parsed.assertions:
            given = case.metadata.get(assertion.key)
            if given is None:
                continue
            complaint = _complaint(assertion, given, complaints)
            if complaint is not None:
                field = f"assert.{assertion.source}"
                errors.append({"line": line, "file": file, "field": field, "message": complaint})
    if errors:
        first = errors[0]
        raise InvalidInput(
            f"{len(errors)} invalid assertion(s); the first, at line {first['line']}:"
            f" {first['field']}: {first['message']}",
            errors=errors[:MAX_REPORTED_ERRORS],
        )
    return parsed, [case.model_dump(mode="json") for case in parsed.cases]


def _complaint(
    assertion: Assertion, given: Any, complaints: dict[tuple[str, str], str | None]
) -> str | None:
    """What is wrong with a test's parameters for the assertion, if anything: checked once for
    each distinct value (defaultTest's are the same in every test that does not fill them in
    with its vars), remembered in `complaints`."""
    distinct = (assertion.key, json.dumps(given))
    if distinct not in complaints:
        try:
            given_parameters(assertion.type, assertion.key, given)
            complaints[distinct] = None
        except ScoringError as exc:
            complaints[distinct] = str(exc)
    return complaints[distinct]


async def _metrics_for(
    session: AsyncSession, principal: Principal, test_set: TestSet, assertions: list[Assertion]
) -> list[ImportedMetric]:
    """Each assertion's metric: the project's metric of its name when that is the same
    definition (an import again reuses it), else a new one (under a free name)."""
    if not assertions:
        return []
    project_id = test_set.project_id
    wanted = [_name_choices(a.name) for a in assertions]
    every_name = [n for choices in wanted for n in choices]
    existing = await crud.metrics_named(session, project_id, every_name, making=True)
    imported: list[ImportedMetric] = []
    for assertion, names in zip(assertions, wanted, strict=True):
        metric = next((existing[n] for n in names if _same(existing.get(n), assertion)), None)
        created = metric is None
        if metric is None:
            name = next((n for n in names if n not in existing), None)
            if name is None:
                raise Conflict(f"metrics named {names[0]!r} and its variants exist already")
            metric = _new_metric(principal, test_set, assertion, name)
            await crud.create_metric(session, metric)
            existing[name] = metric
        imported.append(
            ImportedMetric(id=metric.id, name=metric.name, type=metric.type, created=created)
        )
    present = await crud.test_set_metric_ids(session, test_set.id)
    added = list(dict.fromkeys(m.id for m in imported if m.id not in present))
    if len(present) + len(added) > MAX_METRICS:  # the request's transaction is rolled back
        raise InvalidInput(
            f"the set has {len(present)} metrics and the file adds {len(added)}; a set has at"
            f" most {MAX_METRICS}. Remove some of its metrics first (PUT /test-sets/{{id}}/metrics)"
        )
    if added:
        await crud.replace_test_set_metrics(
            session,
            test_set_id=test_set.id,
            organization_id=test_set.organization_id,
            metric_ids=[*present, *added],
        )
    return imported


def _name_choices(name: str) -> list[str]:
    """The name, then its variants, each within MAX_NAME (the name shortened to make room)."""
    suffixes = ["", " (imported)", *(f" (imported {n})" for n in range(2, 10))]
    return [f"{name[: MAX_NAME - len(suffix)]}{suffix}" for suffix in suffixes]


def _same(metric: Metric | None, assertion: Assertion) -> bool:
    return (
        metric is not None
        and metric.type == assertion.type
        and metric.parameters == {FROM_TEST: assertion.key}
        and metric.negate == assertion.negate
    )


def _new_metric(principal: Principal, test_set: TestSet, assertion: Assertion, name: str) -> Metric:
    metric_type = CATALOGUE[assertion.type]
    return Metric(
        organization_id=principal.organization_id,
        project_id=test_set.project_id,
        name=name,
        type=assertion.type,
        parameters={FROM_TEST: assertion.key},
        threshold=metric_type.threshold,
        operator=metric_type.operator,
        negate=assertion.negate,
        weight=1.0,
        description=f"Imported `{assertion.source}` assertions: each test gives its own"
        f" parameters (metadata {assertion.key!r})",
    )
