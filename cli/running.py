"""`assay run` and `assay watch`: what to run (flags over assay.yaml, names resolved through the
API), following the run live, and how it ends (tables, reports, exit code)."""

from __future__ import annotations

import json
import math
import shlex
import signal
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from cli.client import ApiError, Client, CliError, Unreachable
from cli.files import file_format, import_into_set
from cli.outcome import (
    OK,
    FailOn,
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
from cli.saving import download_export, write_file
from cli.stream import follow


@dataclass
class RunOptions:
    """What to run: command-line options over the repository's assay.yaml."""

    project: str | None = None
    test_set: str | None = None
    test_set_file: Path | None = None
    test_set_format: str | None = None
    model: str | None = None
    metrics: list[str] = field(default_factory=list)
    prompt: str | None = None
    prompt_version: str | int | None = None
    repetitions: int | None = None
    concurrency: int | None = None
    max_cost: float | None = None
    name: str | None = None
    baseline: str | None = None
    fail_on: FailOn = "regression"
    min_pass_rate: float | None = None
    max_error_rate: float | None = None
    min_effect: float | None = None
    max_dropped: int | None = None
    junit: Path | None = None
    json: Path | None = None
    # The run request's Idempotency-Key: one of the command's own when not given; a CI job
    # that gives one per pipeline run gets, when retried, the run its first try made.
    idempotency_key: str | None = None


def from_repository(config: dict[str, Any], folder: Path | None) -> RunOptions:
    """assay.yaml as run options (files in it are relative to its folder)."""
    base = folder or Path()
    options = RunOptions()
    test_set = config.get("test_set")
    if isinstance(test_set, str):
        options.test_set = test_set
    elif isinstance(test_set, dict):
        options.test_set = test_set["name"]
        if "file" in test_set:
            options.test_set_file = base / test_set["file"]
        options.test_set_format = test_set.get("format")
    gate = config.get("gate") or {}
    for key in ("project", "model", "prompt", "prompt_version", "repetitions", "concurrency"):
        setattr(options, key, config.get(key))
    options.max_cost = config.get("max_cost")
    options.metrics = list(config.get("metrics") or [])
    for key in ("baseline", "min_pass_rate", "max_error_rate", "min_effect", "max_dropped"):
        setattr(options, key, gate.get(key))
    options.fail_on = gate.get("fail_on", "regression")
    options.junit = base / config["junit"] if "junit" in config else None
    options.json = base / config["json"] if "json" in config else None
    return options


def create_run(
    client: Client, options: RunOptions, console: Console
) -> tuple[dict[str, Any], bool]:
    """The run made, and whether the command was interrupted as it was made."""
    if not options.test_set:
        raise CliError("which test set? pass --test-set NAME or write it in assay.yaml")
    for key in ("max_cost", "min_pass_rate", "max_error_rate", "min_effect"):
        value = getattr(options, key)
        if value is not None and not math.isfinite(value):
            raise CliError(f"{key} must be a number, not {value}")
    project_id = (
        client.find("project", "/projects", options.project)["id"] if options.project else None
    )
    test_set = _test_set(client, options, project_id, console)
    project_id = test_set["project_id"]
    body: dict[str, Any] = {"test_set_id": test_set["id"]}
    if options.model:
        body["target_model_id"] = client.find("model configuration", "/models", options.model)["id"]
    if options.metrics:
        body["metric_ids"] = [
            client.find("metric", "/metrics", name, project_id=project_id)["id"]
            for name in options.metrics
        ]
    if options.prompt:
        body["prompt_id"] = client.find(
            "prompt", "/prompts", options.prompt, project_id=project_id
        )["id"]
        if options.prompt_version is not None:
            version = options.prompt_version
            body["prompt_version"] = int(version) if str(version).isdigit() else version
    for key in ("repetitions", "concurrency", "max_cost", "name"):
        if getattr(options, key) is not None:
            body[key] = getattr(options, key)
    body["gate"] = _gate(options)
    # Ctrl-C (or a CI job cancelled) while the run is being made waits for its answer: the run
    # may be made already, and without its id it could be neither cancelled nor followed.
    key = options.idempotency_key or str(uuid.uuid4())
    with interrupts_deferred() as interrupted:
        try:
            run = dict(client.post_once("/runs", body, key=key))
        except (Unreachable, KeyboardInterrupt):  # (a refusal says the run was not made)
            if interrupted():
                print(
                    f"assay: interrupted; the run may have been made (its Idempotency-Key is"
                    f" {key}): see `assay runs list`",
                    file=sys.stderr,
                )
                raise KeyboardInterrupt from None
            raise
    return run, interrupted()


@contextmanager
def interrupts_deferred() -> Iterator[Callable[[], bool]]:
    """The first SIGINT or SIGTERM held back in the block; after it, whether one came. A
    second one interrupts at once (a server that does not answer is not waited for)."""
    came: list[int] = []

    def held(received: int, _frame: object) -> None:
        if came:
            raise KeyboardInterrupt
        came.append(received)
        print(
            "assay: waiting for the server to answer the new run; interrupt again to stop",
            file=sys.stderr,
        )

    handlers = {number: signal.signal(number, held) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(came)
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)


def _test_set(
    client: Client, options: RunOptions, project_id: str | None, console: Console
) -> dict[str, Any]:
    """The named set; with a file, synced to it first (created in the project if missing)."""
    assert options.test_set is not None
    if options.test_set_file is None:
        return client.find("test set", "/test-sets", options.test_set, project_id=project_id)
    path = options.test_set_file
    fmt = file_format(path, options.test_set_format)
    found, result, _ = import_into_set(
        client, options.test_set, project_id, path, fmt, mode="sync", create=True
    )
    if result["changed"]:
        console.print(
            f"Synced {path} to test set {found['name']!r}: {result['test_count']} tests"
            f" ({result['imported']} new)",
            markup=False,
        )
    for left in result.get("unmapped") or []:
        console.print(
            f"Not imported: {left['count']} {left['type']!r} assertion(s): {left['reason']}",
            markup=False,
        )
    return found


def _gate(options: RunOptions) -> dict[str, Any]:
    # --fail-on failures fails on regressions too (and then on any failed case as well).
    gate: dict[str, Any] = {"fail_on": "never" if options.fail_on == "never" else "regression"}
    if options.baseline:
        gate["baseline"] = options.baseline
    for key in ("min_pass_rate", "max_error_rate", "min_effect", "max_dropped"):
        if getattr(options, key) is not None:
            gate[key] = getattr(options, key)
    return gate


def watch(
    client: Client,
    run: dict[str, Any],
    console: Console,
    *,
    quiet: bool,
    cancel_on_interrupt: bool = False,
    again: str | None = None,
) -> tuple[Tally, bool]:
    """Follows the run to its end; returns what was counted and whether it ended (False:
    detached by Ctrl-C, after asking the server to cancel it only when told to)."""
    tally = Tally(total=run["counts"]["total"])
    display = display_for(console, quiet=quiet)
    display.start(run)
    try:

        def reconnected(_: int) -> None:
            tally.reconnects += 1

        for event in follow(client, run["id"], on_reconnect=reconnected):
            if tally.add(event):
                display.update(tally)
    except KeyboardInterrupt:
        display.stop()
        detach(client, run["id"], console, cancel=cancel_on_interrupt, again=again)
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
        console.print(
            f"Detached: run {run_id} goes on. Follow it again with:"
            f" {again or f'assay watch {run_id}'}",
            markup=False,
        )


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
    client: Client,
    run_id: str,
    tally: Tally,
    console: Console,
    *,
    fail_on: FailOn,
    junit: Path | None,
    json_report: Path | None,
    quiet: bool,
) -> int:
    """Prints how the run went, writes the reports, and returns the exit code."""
    run = client.get(f"/runs/{run_id}")
    summary = client.get(f"/runs/{run_id}/summary")
    result = outcome(run, fail_on)
    comparison = None
    baseline = (run.get("gate_result") or {}).get("baseline_run_id")
    if baseline and run["status"] == "completed":
        # The gate already holds the verdict; the table shows it in full, compared as the gate
        # compared (with its min_effect), so the two never disagree.
        min_effect = (run.get("gate") or {}).get("min_effect")
        try:
            comparison = compare(client, run_id, baseline, min_effect=min_effect)
        except CliError as exc:
            console.print(f"No comparison table: {exc}", markup=False)
    if not quiet:
        failing = run["counts"]["failed"] + run["counts"]["errored"]
        print_tables(console, failures_table(tally.failures, failing))
        if comparison is not None:
            print_tables(console, comparison_table(comparison))
    console.print(summary_line(run, summary.get("pass_rate")), markup=False)
    console.print(
        f"{exit_word(result.code)} (exit {result.code}): {result.reason}",
        markup=False,
        highlight=False,
    )
    try:
        _write_reports(client, run, summary, comparison, tally, result, junit, json_report)
    except CliError as exc:
        if result.code == OK:
            raise
        # A report that could not be written is no reason to retry (4) or fix a usage (3)
        # where the run's own verdict was a failure: that verdict stands.
        console.print(f"assay: a report was not written: {exc}", markup=False)
    return result.code


def _write_reports(
    client: Client,
    run: dict[str, Any],
    summary: dict[str, Any],
    comparison: dict[str, Any] | None,
    tally: Tally,
    result: Outcome,
    junit: Path | None,
    json_report: Path | None,
) -> None:
    if json_report is not None:
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
            "exit_code": result.code,
            "reason": result.reason,
        }
        write_file(json_report, json.dumps(report, indent=2).encode())
    if junit is not None:  # last: the verdict and its report are kept if the server fails now
        download_export(client, f"/runs/{run['id']}/export", "junit", junit)
