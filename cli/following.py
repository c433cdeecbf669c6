"""Following a run live to its end (`assay run` once it is made, and `assay watch`), leaving
it (Ctrl-C, SIGTERM, a closed stdout: it goes on, or is cancelled when told to), and how it
ends the command: tables, reports and the exit code, which always agree."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from cli.client import ApiError, Client, CliError, Unreachable
from cli.outcome import (
    INTERRUPTED,
    OK,
    UNREACHABLE,
    USAGE,
    Outcome,
    compare,
    comparison_table,
    exit_word,
    failures_table,
    outcome,
    print_tables,
    summary_line,
)
from cli.progress import Tally, display_for
from cli.running import RunOptions
from cli.saving import download_export, write_file
from cli.stream import RunGone, follow
from cli.terminal import TextConsole, stdout_closed


def started_line(run: dict[str, Any]) -> str:
    return f"Run {run['id']} started: {run['counts']['total']} cases"


def follow_run(
    client: Client,
    run: dict[str, Any],
    console: Console,
    options: RunOptions,
    connection: Sequence[str],
    *,
    quiet: bool,
    cancel: bool,
    announce: bool = False,
) -> int:
    """Follows the run to its end and returns the exit code. Whatever stops the command on
    the way (a server lost, an interrupt) is said with what became of the run, and how to
    follow it again."""
    again = watch_again(run["id"], options, connection)
    with noted(goes_on(run["id"], again)):
        tally, ended = watch(
            client,
            run,
            console,
            quiet=quiet,
            cancel_on_interrupt=cancel,
            again=again,
            announce=announce,
        )
    if not ended:
        return INTERRUPTED
    with noted(f"run {run['id']} has ended; its verdict and reports: {again}"):
        return conclude(client, run["id"], tally, console, options, quiet=quiet)


@contextmanager
def noted(note: str) -> Iterator[None]:
    """An error or interrupt out of the block carries `note`, said after its own line; but not
    one saying the run no longer exists, of which nothing goes on or can be followed again."""
    try:
        yield
    except (Exception, KeyboardInterrupt) as exc:
        if not _run_gone(exc):
            exc.add_note(note)
        raise


def _run_gone(exc: BaseException) -> bool:
    """The run was deleted (or its project was) while the command had it: the server no
    longer finds it."""
    return isinstance(exc, RunGone) or (isinstance(exc, ApiError) and exc.status == 404)


def goes_on(run_id: str, again: str | None = None) -> str:
    return f"run {run_id} goes on. Follow it again with: {again or f'assay watch {run_id}'}"


def watch(
    client: Client,
    run: dict[str, Any],
    console: Console,
    *,
    quiet: bool,
    cancel_on_interrupt: bool = False,
    again: str | None = None,
    announce: bool = False,
) -> tuple[Tally, bool]:
    """Follows the run to its end; returns what was counted and whether it ended (False:
    detached by Ctrl-C, SIGTERM or a closed stdout, after asking the server to cancel it only
    when told to). `announce`: print that the run started first."""
    tally = Tally(total=run["counts"]["total"])
    display = display_for(console, quiet=quiet)
    try:
        if announce:
            console.print(started_line(run), markup=False)
        display.start(run)

        def reconnected(_: int) -> None:
            tally.reconnects += 1

        for event in follow(client, run["id"], on_reconnect=reconnected):
            if tally.add(event):
                display.update(tally)
    except (KeyboardInterrupt, BrokenPipeError) as stopped:
        said = console
        if isinstance(stopped, BrokenPipeError):
            stdout_closed()
            said = _errors()
            said.print("assay: stdout was closed", markup=False)
        display.stop()
        detach(client, run["id"], said, cancel=cancel_on_interrupt, again=again)
        return tally, False
    finally:
        display.stop()
    return tally, True


def detach(
    client: Client, run_id: str, console: Console, *, cancel: bool, again: str | None = None
) -> None:
    """The command stops following the run: it goes on, or it is cancelled when told to.
    `again`: the command that follows it again as this one would have (its verdict's rule
    and reports)."""
    if cancel:
        _cancel(client, run_id, console)
    else:
        console.print(f"Detached: {goes_on(run_id, again)}", markup=False)


def watch_again(run_id: str, options: RunOptions, connection: Sequence[str] = ()) -> str:
    """`assay watch` with what decides this command's verdict and writes its reports (the
    server's gate holds the rest, but not `--fail-on failures`, sent as `regression`), and
    `connection`: the flags naming the server and the config (never a key)."""
    words = ["assay", "watch", run_id, *connection, "--fail-on", options.fail_on]
    for flag, path in (("--junit", options.junit), ("--json", options.json)):
        if path is not None:
            words += [flag, str(path)]
    return shlex.join(words)


def _cancel(client: Client, run_id: str, console: Console) -> None:
    try:
        client.post(f"/runs/{run_id}/cancel")
    except ApiError as exc:
        if exc.status != 409:
            raise
        # It ended between the last event seen and Ctrl-C: nothing left to cancel.
        console.print(f"Run {run_id} had already ended: {exc}", markup=False)
        return
    console.print(f"Asked the server to cancel run {run_id}.", markup=False)


def conclude(
    client: Client, run_id: str, tally: Tally, console: Console, options: RunOptions, *, quiet: bool
) -> int:
    """Writes the reports, prints how the run went, and returns the exit code: the one the
    printed verdict and the JSON report give."""
    run = client.get(f"/runs/{run_id}")
    summary = client.get(f"/runs/{run_id}/summary")
    result = outcome(run, options.fail_on)
    remarks: list[str] = []
    comparison = None
    baseline = (run.get("gate_result") or {}).get("baseline_run_id")
    if baseline and run["status"] == "completed":
        # The gate already holds the verdict; the table shows it in full, compared as the gate
        # compared (with its min_effect), so the two never disagree.
        min_effect = (run.get("gate") or {}).get("min_effect")
        try:
            comparison = compare(client, run_id, baseline, min_effect=min_effect)
        except CliError as exc:
            remarks.append(f"No comparison table: {exc}")
    if options.junit is not None:  # first: the JSON report then holds the final exit code
        try:
            download_export(client, f"/runs/{run_id}/export", "junit", options.junit)
        except CliError as exc:
            result = _unwritten(result, exc, remarks)
    if options.json is not None:
        report = {
            "run": run,
            "summary": summary,
            "comparison": comparison,
            "followed": {
                "passed": tally.passed,
                "failed": tally.failed,
                "errored": tally.errored,
                "reconnects": tally.reconnects,
            },
        }
        try:
            _write_json(options.json, report, result)
        except CliError as exc:
            result = _unwritten(result, exc, remarks)
    line = f"{exit_word(result.code)} (exit {result.code}): {result.reason}"
    try:
        if not quiet:
            failing = run["counts"]["failed"] + run["counts"]["errored"]
            print_tables(console, failures_table(tally.failures, failing))
            if comparison is not None:
                print_tables(console, comparison_table(comparison))
        console.print(summary_line(run, summary.get("pass_rate")), markup=False)
        for remark in remarks:
            console.print(remark, markup=False)
        console.print(line, markup=False, highlight=False)
    except BrokenPipeError:  # the reports are written: the verdict stands, said on stderr
        stdout_closed()
        _errors().print(f"assay: stdout was closed; {line}", markup=False)
    return result.code


def _write_json(target: Path, report: dict[str, Any], result: Outcome) -> None:
    report = {**report, "exit_code": result.code, "reason": result.reason}
    write_file(target, json.dumps(report, indent=2).encode())


def _unwritten(result: Outcome, exc: CliError, remarks: list[str]) -> Outcome:
    """The outcome once a report could not be written. A failed verdict stands (the report
    is no reason to retry or fix the job); a pass becomes what the failure calls for."""
    remarks.append(f"assay: a report was not written: {exc}")
    if result.code != OK:
        return result
    code = UNREACHABLE if isinstance(exc, Unreachable) else USAGE
    return Outcome(code, f"{result.reason}, but a report was not written")


def _errors() -> Console:
    return TextConsole(stderr=True, soft_wrap=True, highlight=False)
