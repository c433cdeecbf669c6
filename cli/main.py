"""`assay`: run, follow, gate and report Assay runs from a terminal or a CI job, through the
public REST API and Server-Sent Events only (exit codes: see EXIT_CODES)."""

from __future__ import annotations

import io
import os
import signal
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from typer.exceptions import TyperException

from cli import config
from cli.client import Client, CliError, Unreachable, shown_url
from cli.commands import compare_runs, export_run, import_tests, list_runs, login
from cli.following import detach, follow_run, goes_on, noted, started_line, watch_again
from cli.outcome import INTERRUPTED, UNREACHABLE, USAGE, FailOn
from cli.running import create_run, from_repository
from cli.stopping import Interrupted, StdoutClosed, stopped_as_errors
from cli.terminal import TextConsole, stdout_closed

EXIT_CODES = """Exit codes:

0: nothing to fail on (the gate passed; with --fail-on failures, no case failed).

1: the gate failed (a regression, a floor missed; with --fail-on failures, a failed case).

2: the run could not be judged (budget reached, cancelled or failed; its gate undecided).

3: a usage error (a wrong key, a name matching nothing, a run deleted while followed, a bad
option or assay.yaml; stdout closed before all was written).

4: the server could not be reached, or failed (5xx), reads retried first: retry the job (or
follow the run it says goes on).

130: interrupted (Ctrl-C, SIGTERM; stdout closed while following a run, which goes on)."""

app = typer.Typer(
    name="assay",
    help="Run, follow, gate and report Assay runs, from a terminal or a CI job.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
runs_app = typer.Typer(help="Runs of the organization", no_args_is_help=True)
app.add_typer(runs_app, name="runs")


Url = Annotated[
    str | None, typer.Option("--url", help="Server URL (else ASSAY_URL or the profile)")
]
ApiKey = Annotated[
    str | None, typer.Option("--api-key", help="API key (else ASSAY_API_KEY or the profile)")
]
Profile = Annotated[str | None, typer.Option("--profile", help="A profile `assay login` wrote")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress; the outcome only")]
FailOnOption = Annotated[
    FailOn | None,
    typer.Option(
        "--fail-on",
        help="regression: the gate decides (default); failures: also any failed case; never",
    ),
]
Junit = Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML report here")]
JsonReport = Annotated[Path | None, typer.Option("--json", help="Write a JSON report here")]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", "-c", help="Else ./assay.yaml if present")
]


def _run_id(value: str) -> str:
    """A run's id, checked before it goes into a URL path (where `RUN/../..` would name
    something else)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a run id (a UUID)") from None


def _baseline(value: str) -> str:
    return value if value == "project" else _run_id(value)


RunId = Annotated[str, typer.Argument(help="The run's id", callback=_run_id)]


def _console() -> Console:
    return TextConsole(soft_wrap=True, highlight=False)


def _client(
    url: str | None,
    api_key: str | None,
    profile: str | None,
    repository: dict[str, Any] | None = None,
) -> Client:
    """The server as flags, environment, the repository's config (./assay.yaml when not
    given) and profiles name it (see config.server)."""
    if repository is None:
        repository, _ = config.repository_config(None)
    found = config.server(url, api_key, profile, repository_url=repository.get("server"))
    return Client(found.url, found.api_key)


@app.command("run")
@stopped_as_errors
def run_command(
    test_set: Annotated[str | None, typer.Option("--test-set", "-s", help="Name or id")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="Sync the set to this file first")
    ] = None,
    file_format: Annotated[str | None, typer.Option("--format", help="The file's format")] = None,
    project: Annotated[str | None, typer.Option("--project", "-p", help="Name or id")] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Target model: name or id")
    ] = None,
    metric: Annotated[
        list[str] | None, typer.Option("--metric", help="Name or id; repeat for more")
    ] = None,
    prompt: Annotated[str | None, typer.Option("--prompt", help="Name or id")] = None,
    prompt_version: Annotated[
        str | None, typer.Option("--prompt-version", help="Number, label or latest")
    ] = None,
    repetitions: Annotated[int | None, typer.Option(min=1, max=100)] = None,
    concurrency: Annotated[int | None, typer.Option(min=1)] = None,
    max_cost: Annotated[float | None, typer.Option("--max-cost", help="Budget, USD")] = None,
    name: Annotated[str | None, typer.Option("--name", help="The run's label")] = None,
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="project, or a run id to compare with")
    ] = None,
    fail_on: FailOnOption = None,
    min_pass_rate: Annotated[float | None, typer.Option(min=0, max=1, help="Floor")] = None,
    max_error_rate: Annotated[
        float | None, typer.Option(min=0, max=1, help="Above it: not judged (default 0.1)")
    ] = None,
    max_dropped: Annotated[
        int | None,
        typer.Option(min=0, help="Fail when more of the baseline's tests are missing from it"),
    ] = None,
    junit: Junit = None,
    json_report: JsonReport = None,
    quiet: Quiet = False,
    cancel_on_interrupt: Annotated[
        bool,
        typer.Option(
            help="On Ctrl-C or SIGTERM (a CI job cancelled), cancel the run (else detach)"
        ),
    ] = False,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            envvar="ASSAY_IDEMPOTENCY_KEY",
            help="Sent with the run request: the same key again gives the run it made (say,"
            " your CI's pipeline id, so a retried job follows the first run); else one of"
            " this command's own",
        ),
    ] = None,
    config_file: ConfigFile = None,
    url: Url = None,
    api_key: ApiKey = None,
    profile: Profile = None,
) -> int:
    """Start a run, follow it live, print failures and the verdict, write reports."""
    repository, folder = config.repository_config(config_file)
    options = from_repository(repository, folder)
    given: dict[str, Any] = {
        "test_set": test_set,
        "project": project,
        "model": model,
        "prompt": prompt,
        "prompt_version": prompt_version,
        "repetitions": repetitions,
        "concurrency": concurrency,
        "max_cost": max_cost,
        "name": name,
        "baseline": baseline,
        "fail_on": fail_on,
        "min_pass_rate": min_pass_rate,
        "max_error_rate": max_error_rate,
        "max_dropped": max_dropped,
        "junit": junit,
        "json": json_report,
        "test_set_format": file_format,
        "idempotency_key": idempotency_key,
    }
    if test_set is not None and test_set != options.test_set and file is None:
        # Another set than assay.yaml's: run it as it is, not with assay.yaml's file in it.
        options.test_set_file = options.test_set_format = None
    for key, value in given.items():
        if value is not None:
            setattr(options, key, value)
    if metric:
        options.metrics = list(metric)
    if file is not None:
        options.test_set_file = file
    console = _console()
    client = _client(url, api_key, profile, repository)
    run, interrupted = create_run(client, options, console)
    connection = _connection_flags(url, profile, config_file)
    if interrupted:
        again = watch_again(run["id"], options, connection)
        with noted(goes_on(run["id"], again)):
            console.print(started_line(run), markup=False)
            detach(client, run["id"], console, cancel=cancel_on_interrupt, again=again)
        return INTERRUPTED
    return follow_run(
        client,
        run,
        console,
        options,
        connection,
        quiet=quiet,
        cancel=cancel_on_interrupt,
        announce=not quiet,
    )


@app.command("watch")
@stopped_as_errors
def watch_command(
    run_id: RunId,
    fail_on: FailOnOption = None,
    junit: Junit = None,
    json_report: JsonReport = None,
    quiet: Quiet = False,
    config_file: ConfigFile = None,
    url: Url = None,
    api_key: ApiKey = None,
    profile: Profile = None,
) -> int:
    """Follow a run live (from its start) to its end; exit as `assay run` would (with
    assay.yaml's gate and reports, unless flags say otherwise)."""
    repository, folder = config.repository_config(config_file)
    client = _client(url, api_key, profile, repository)
    run = client.get(f"/runs/{run_id}")
    options = from_repository(repository, folder)
    options.fail_on = fail_on or options.fail_on
    options.junit = junit or options.junit
    options.json = json_report or options.json
    connection = _connection_flags(url, profile, config_file)
    return follow_run(client, run, _console(), options, connection, quiet=quiet, cancel=False)


def _connection_flags(url: str | None, profile: str | None, config_file: Path | None) -> list[str]:
    """The flags given that name the server and the config, for a command printed to follow
    the run again (a key given by flag is never printed: the environment or a profile has it)."""
    flags = [("--url", shown_url(url) if url else None), ("--profile", profile)]
    flags.append(("--config", str(config_file) if config_file else None))
    return [word for flag, value in flags if value for word in (flag, value)]


@app.command("compare")
@stopped_as_errors
def compare_command(
    run_id: RunId,
    baseline: Annotated[
        str, typer.Option("--baseline", help="A run id, or project", callback=_baseline)
    ],
    min_effect: Annotated[
        float | None,
        typer.Option(
            "--min-effect",
            min=0,
            max=1,
            help="Changes inside ± this are equivalent (default: the run's gate's, else 0.02)",
        ),
    ] = None,
    url: Url = None,
    api_key: ApiKey = None,
    profile: Profile = None,
) -> int:
    """Compare a run with a baseline per metric; exit as a gate would: 1 when the overall
    pass rate or any metric's regressed, 2 when one is inconclusive, else 0."""
    client = _client(url, api_key, profile)
    return compare_runs(client, _console(), run_id, baseline, min_effect)


@runs_app.command("list")
@stopped_as_errors
def runs_list_command(
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    status: Annotated[str | None, typer.Option("--status")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    url: Url = None,
    api_key: ApiKey = None,
    profile: Profile = None,
) -> int:
    """The newest runs, with their counts and gates."""
    return list_runs(_client(url, api_key, profile), _console(), project, status, limit)


@app.command("import")
@stopped_as_errors
def import_command(
    file: Annotated[Path, typer.Argument(help="CSV, JSON, JSONL, promptfoo config, ...")],
    test_set: Annotated[str, typer.Option("--test-set", "-s", help="Name or id")],
    create: Annotated[bool, typer.Option("--create", help="Create the set if missing")] = False,
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    file_format: Annotated[str | None, typer.Option("--format")] = None,
    sync: Annotated[
        bool, typer.Option("--sync", help="Make the set hold exactly the file's cases")
    ] = False,
    url: Url = None,
    api_key: ApiKey = None,
    profile: Profile = None,
) -> int:
    """Import a file into a test set: all cases or none."""
    client = _client(url, api_key, profile)
    return import_tests(client, _console(), file, test_set, project, file_format, create, sync)


@app.command("export")
@stopped_as_errors
def export_command(
    run_id: RunId,
    export_format: Annotated[str, typer.Option("--format", help="csv, json or junit")] = "json",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Else stdout")] = None,
    url: Url = None,
    api_key: ApiKey = None,
    profile: Profile = None,
) -> int:
    """Export a run's results."""
    return export_run(_client(url, api_key, profile), run_id, export_format, output)


@app.command("login")
@stopped_as_errors
def login_command(
    url: Annotated[str, typer.Option("--url", prompt="Assay URL")] = config.DEFAULT_URL,
    api_key: Annotated[str, typer.Option("--api-key", prompt="API key", hide_input=True)] = "",
    profile: Annotated[str, typer.Option("--profile", envvar="ASSAY_PROFILE")] = "default",
) -> int:
    """Check a server URL and API key, and save them as a profile (readable by you only)."""
    return login(_console(), config.server_url(url.rstrip("/")), api_key, profile)


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # a CI job cancelled is a Ctrl-C: detach, or cancel when told to


def main(argv: list[str] | None = None) -> None:
    """The console script: every error is one line on stderr (and its notes: what became of
    the run, say), never a traceback."""
    for stream in (sys.stdout, sys.stderr):
        # Output to an encoding without `→` or `Δ` (cp1252, on Windows runners) replaces what
        # it cannot write, rather than fail the command at its verdict.
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="replace")
    errors = TextConsole(stderr=True, soft_wrap=True, highlight=False)

    def fail(message: str, exc: BaseException, code: int) -> NoReturn:
        errors.print(f"assay: {message}", markup=False)
        for note in [*getattr(exc.__cause__, "__notes__", []), *getattr(exc, "__notes__", [])]:
            errors.print(f"assay: {note}", markup=False)
        sys.exit(code)

    signal.signal(signal.SIGTERM, _terminated)
    try:
        code = app(args=argv, standalone_mode=False)
    except Interrupted as exc:
        fail("interrupted", exc, INTERRUPTED)
    except (StdoutClosed, SystemExit) as exc:
        if isinstance(exc, SystemExit) and not isinstance(exc.__context__, BrokenPipeError):
            raise
        # (SystemExit: Rich's own exit 1 on a closed stdout, writing typer's help.) Not a
        # verdict (1), nor the server's failure (4): the job's own pipe stopped reading.
        stdout_closed()
        fail("stdout was closed before all was written to it", exc, USAGE)
    except typer.Abort as exc:
        if isinstance(exc.__context__ or exc.__cause__, EOFError):  # a prompt read no answer
            fail("no input to answer a prompt: give it as an option", exc, USAGE)
        fail("interrupted", exc, INTERRUPTED)  # Ctrl-C at a prompt
    except TyperException as exc:  # the command line is wrong (an unknown option, a bad value)
        show = getattr(exc, "show", None)
        if callable(show):
            show()
            sys.exit(USAGE)
        fail(str(exc), exc, USAGE)
    except Unreachable as exc:
        fail(str(exc), exc, UNREACHABLE)
    except CliError as exc:
        fail(str(exc), exc, USAGE)
    except Exception as exc:  # a fault of the command: never read as a verdict (exit 1 or 2)
        if os.environ.get("ASSAY_DEBUG"):
            raise
        message = f"unexpected error ({type(exc).__name__}: {exc}); ASSAY_DEBUG=1 shows where"
        fail(message, exc, USAGE)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
