"""`assay run`: what to run (flags over assay.yaml, names resolved through the API), and the
run made (cli/following.py follows it)."""

from __future__ import annotations

import math
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from cli.client import Client, CliError, Unreachable
from cli.files import file_format, import_into_set, print_leftovers
from cli.outcome import (
    FailOn,
)


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
    # assay.yaml's gate.fail_on as a list: a regression of these metrics alone fails the gate
    # (--fail-on failures fails on any failed case besides; --fail-on never sets it aside).
    fail_on_metrics: list[str] | None = None
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
    fail_on = gate.get("fail_on", "regression")
    if isinstance(fail_on, list):
        options.fail_on_metrics = list(fail_on)
    else:
        options.fail_on = fail_on
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
                stopped = KeyboardInterrupt()
                stopped.add_note(
                    f"the run may have been made (its Idempotency-Key is {key}): see"
                    " `assay runs list`"
                )
                raise stopped from None
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
        project = client.get(f"/projects/{found['project_id']}")
        console.print(
            f"Synced {path} to test set {found['name']!r} of project {project['name']!r}:"
            f" {result['test_count']} tests ({result['imported']} new)",
            markup=False,
        )
    print_leftovers(console, result)
    return found


def _gate(options: RunOptions) -> dict[str, Any]:
    # --fail-on failures fails on regressions too (and then on any failed case as well).
    gate: dict[str, Any] = {"fail_on": "never" if options.fail_on == "never" else "regression"}
    if options.fail_on_metrics and options.fail_on != "never":
        gate["fail_on"] = options.fail_on_metrics
    if options.baseline:
        gate["baseline"] = options.baseline
    for key in ("min_pass_rate", "max_error_rate", "min_effect", "max_dropped"):
        if getattr(options, key) is not None:
            gate[key] = getattr(options, key)
    return gate
