"""The commands besides run and watch: compare, runs list, import, export and login."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cli import config
from cli.client import ApiError, Client, CliError, sendable, shown_url
from cli.files import file_format, import_into_set, print_leftovers
from cli.outcome import (
    NOT_JUDGED,
    OK,
    Outcome,
    compare,
    comparison_outcome,
    comparison_table,
    exit_word,
)
from cli.saving import EXPORT_TYPES, check_export_type, download_export
from cli.terminal import cell, printable

EXPORT_FORMATS = tuple(EXPORT_TYPES)


# The server's reason, on its field `baseline`, for runs that share no case
# (database/results/comparison.py): a gate calls that undecided.
_NO_CASE_IN_COMMON = re.compile(r"\bbaseline: (the runs have no case in common[^;)]*)")
# A run the server will not compare yet (409): it has not ended.
_UNDER_WAY = frozenset({"queued", "running"})


def compare_runs(
    client: Client, console: Console, run_id: str, baseline: str, min_effect: float | None
) -> int:
    """Exits as the run's gate would compared with `baseline`, with its min_effect unless told
    another: as a gate, not judged (2) unless both runs completed, or when they share no
    case."""
    run = client.get(f"/runs/{run_id}")
    if min_effect is None:
        min_effect = (run.get("gate") or {}).get("min_effect")
    baseline, not_completed = _statuses(client, run, baseline)
    if not_completed is not None and not_completed.status in _UNDER_WAY:
        return _verdict(console, not_completed.outcome)
    try:
        comparison = compare(client, run_id, baseline, min_effect=min_effect)
    except ApiError as exc:
        unrelated = _NO_CASE_IN_COMMON.search(str(exc)) if exc.status == 422 else None
        if unrelated is None:
            raise
        return _verdict(
            console, Outcome(NOT_JUDGED, f"no comparison with the baseline: {unrelated[1]}")
        )
    console.print(comparison_table(comparison))
    console.print(f"{comparison['verdict']}: {comparison['reason']}", markup=False)
    gate = run.get("gate") or {}
    result = comparison_outcome(
        comparison, gate, _evaluated_if_missing(client, run_id, gate, comparison)
    )
    return _verdict(console, not_completed.outcome if not_completed else result)


def _evaluated_if_missing(
    client: Client, run_id: str, gate: dict[str, Any], comparison: dict[str, Any]
) -> set[str]:
    """The run's evaluated metrics, read only when a metric the gate lists is not compared:
    to say which of the two runs lacks it."""
    listed = gate.get("fail_on")
    compared = {metric["name"] for metric in comparison["metrics"]}
    if not isinstance(listed, list) or set(listed) <= compared:
        return set()
    summary = client.get(f"/runs/{run_id}/summary")
    return {metric["name"] for metric in summary["metrics"]}


@dataclass(frozen=True)
class _NotCompleted:
    status: str
    outcome: Outcome


def _statuses(
    client: Client, run: dict[str, Any], baseline: str
) -> tuple[str, _NotCompleted | None]:
    """The baseline as a run id (`project` resolved now, so that the comparison and this read
    are of one run; left to the server when the project has none), and the first of the two
    runs that has not completed."""
    if baseline == "project":
        project = client.get(f"/projects/{run['project_id']}")
        baseline = project.get("baseline_run_id") or baseline
    compared = [("the run", run)]
    if baseline != "project":
        found = client.get(f"/runs/{baseline}")
        if found["project_id"] != run["project_id"]:
            raise CliError("the baseline is a run of another project")
        compared.append(("the baseline", found))
    for which, side in compared:
        status = side["status"]
        if status != "completed":
            ended = "has not completed" if status in _UNDER_WAY else "did not complete"
            return baseline, _NotCompleted(
                status, Outcome(NOT_JUDGED, f"{which} {ended}: it is {status}")
            )
    return baseline, None


def _verdict(console: Console, result: Outcome) -> int:
    console.print(f"{exit_word(result.code)} (exit {result.code}): {result.reason}", markup=False)
    return result.code


WIDE_ENOUGH_FOR_A_TABLE = 120  # of `runs list`: its ids whole, and the rest readable


def list_runs(
    client: Client, console: Console, project: str | None, status: str | None, limit: int
) -> int:
    project_id = client.find("project", "/projects", project)["id"] if project else None
    page = client.get("/runs", project_id=project_id, status=status, limit=limit)
    rows = [
        (
            run["id"],
            printable(run.get("name") or ""),
            run["status"],
            *(str(run["counts"][kind]) for kind in ("passed", "failed", "errored")),
            (run.get("gate_result") or {}).get("status", ""),
            run["created_at"][:19].replace("T", " "),
        )
        for run in page["items"]
    ]
    title = f"Runs ({page['total']} in all)"
    if console.width < WIDE_ENOUGH_FOR_A_TABLE:  # a CI log's 80 columns: a line a run
        console.print(title, markup=False)
        for run_id, name, status, passed, failed, errored, gate, created in rows:
            line = f"{run_id}  {status}  {passed} passed, {failed} failed, {errored} errored"
            line += f"  gate {gate or '-'}  {created}  {name}"
            console.print(line.rstrip(), markup=False, highlight=False)
        return OK
    table = Table(title=title, title_justify="left")
    table.add_column("id", no_wrap=True)
    for column in ("name", "status", "passed", "failed", "errored", "gate", "created"):
        table.add_column(column, overflow="fold")
    for run_id, name, *rest in rows:
        table.add_row(run_id, cell(name), *rest)
    console.print(table)
    return OK


def import_tests(
    client: Client,
    console: Console,
    path: Path,
    test_set: str,
    project: str | None,
    fmt: str | None,
    create: bool,
    sync: bool,
) -> int:
    project_id = client.find("project", "/projects", project)["id"] if project else None
    found, result, created = import_into_set(
        client,
        test_set,
        project_id,
        path,
        file_format(path, fmt),
        mode="sync" if sync else "append",
        create=create,
    )
    if created:
        console.print(f"Created test set {test_set!r} ({found['id']})", markup=False)
    if not result["changed"]:
        console.print(
            f"Unchanged: {found['name']!r} already holds these {result['test_count']} tests",
            markup=False,
        )
    else:
        console.print(
            f"Imported {result['imported']} tests into {found['name']!r}"
            f" ({result['test_count']} in the set)",
            markup=False,
        )
    for metric in result.get("metrics") or []:
        made = "created" if metric["created"] else "reused"
        console.print(f"  metric {metric['name']!r} ({metric['type']}): {made}", markup=False)
    print_leftovers(console, result)
    return OK


def export_run(client: Client, run_id: str, fmt: str, output: Path | None) -> int:
    if fmt not in EXPORT_FORMATS:
        raise CliError(f"unknown export format {fmt!r}: one of {', '.join(EXPORT_FORMATS)}")
    path = f"/runs/{run_id}/export"
    if output is not None:
        download_export(client, path, fmt, output)
        return OK
    with client.stream(path, params={"format": fmt}) as response:
        check_export_type(response, fmt)
        for chunk in response.iter_bytes():
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
    return OK


def login(console: Console, url: str, api_key: str, profile: str) -> int:
    if not api_key:
        raise CliError("an API key is needed (create one in the organization's settings)")
    client = Client(url, api_key)
    try:
        client.get("/projects", limit=1)
    finally:
        client.close()
    path = config.save_profile(profile, url, sendable(api_key))
    console.print(
        f"Logged in to {shown_url(url)}; profile {profile!r} saved in {path}", markup=False
    )
    return OK
