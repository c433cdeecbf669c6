"""How the command stops when it cannot go on, is interrupted, or its stdout is closed: never
as a verdict it did not reach, always saying what became of the run."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import ASSAY, PATIENCE, SHORTENED, Lab
from tests.cli.proxy import EVENTS, EXPORT, Handler, Proxy, empty_stream, held_answer, unavailable

pytestmark = pytest.mark.slow


def _run_args(lab: Lab, cases: int) -> list[str]:
    test_set, metric = lab.test_set(cases), lab.metric()
    return ["run", "-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]


def _only_run(lab: Lab) -> str:
    runs = lab.api.get("/runs").json()["items"]
    assert len(runs) == 1, runs
    return str(runs[0]["id"])


def test_a_stream_given_up_says_which_run_goes_on(lab: Lab, proxy: Proxy) -> None:
    """With -q the run's id was printed nowhere: a retried job started a second run while the
    first went on spending."""
    proxy.answer(EVENTS, empty_stream)
    done = subprocess.run(
        [sys.executable, "-c", SHORTENED, *_run_args(lab, 2), "-q", "--junit", "j.xml"],
        capture_output=True,
        text=True,
        env=lab.env(ASSAY_URL=proxy.url),
        timeout=PATIENCE,
        check=False,
    )
    assert done.returncode == 4, done.stdout + done.stderr
    run_id = _only_run(lab)
    assert done.stderr.splitlines()[1] == (
        f"assay: run {run_id} goes on. Follow it again with: assay watch {run_id}"
        " --fail-on regression --junit j.xml"
    )


def test_a_malformed_event_is_the_servers_answer_exit_4(lab: Lab, proxy: Proxy) -> None:
    def garbled(handler: Handler) -> None:
        handler.send_whole("text/event-stream", b"id: 1\nevent: run.started\ndata: {not json\n\n")

    proxy.answer(EVENTS, garbled)
    done = lab.assay(*_run_args(lab, 1), "-q", ASSAY_URL=proxy.url, timeout=PATIENCE)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "the run's event stream sent a malformed event ('run.started', id '1'" in done.stderr
    assert f"run {_only_run(lab)} goes on" in done.stderr


def test_a_junit_report_not_written_after_a_pass_is_the_exit_code_everywhere(
    lab: Lab, proxy: Proxy, tmp_path: Path
) -> None:
    """ "PASSED (exit 0)" was printed, and the JSON report said 0, for a command exiting 4."""
    proxy.answer(EXPORT, unavailable(100))
    junit, report = tmp_path / "j.xml", tmp_path / "r.json"
    args = [*_run_args(lab, 2), "-q", "--junit", str(junit), "--json", str(report)]
    done = lab.assay(*args, ASSAY_URL=proxy.url, timeout=PATIENCE)
    assert done.returncode == 4, done.stdout + done.stderr
    verdict = done.stdout.splitlines()[-1]
    assert verdict.startswith("UNREACHABLE (exit 4): gate passed")
    assert verdict.endswith(", but a report was not written"), verdict
    assert "assay: a report was not written: 503 Refused" in done.stdout
    assert "PASSED" not in done.stdout
    assert json.loads(report.read_text())["exit_code"] == 4
    assert not junit.exists()


def _with_stdout_closed(lab: Lab, *args: str, lines: int = 0) -> tuple[int, str]:
    """The command's exit code and stderr when its stdout's reader goes away after `lines`."""
    process = subprocess.Popen(
        [str(ASSAY), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=lab.env(),
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        for _ in range(lines):
            process.stdout.readline()
        process.stdout.close()
        err = process.stderr.read()
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, err


def test_a_closed_stdout_detaches_from_the_run_or_is_exit_3_never_a_failed_gate(
    lab: Lab,
) -> None:
    """`assay run | head -n 1` and `assay export RUN | head -c 100` exited 1 without a word."""
    lab.fake.latency = 0.2
    args = [*_run_args(lab, 20), "--concurrency", "1"]
    code, err = _with_stdout_closed(lab, *args, lines=1)
    run_id = _only_run(lab)
    assert code == 130, err
    assert err.startswith("assay: stdout was closed\n")
    assert f"Detached: run {run_id} goes on. Follow it again with: assay watch" in err
    assert lab.api.get(f"/runs/{run_id}").json()["status"] in ("queued", "running")

    lab.fake.latency = 0.0
    assert lab.assay("watch", run_id, "-q").returncode == 0
    code, err = _with_stdout_closed(lab, "export", run_id, "--format", "csv")
    assert code == 3, err
    assert err == "assay: stdout was closed before all was written to it\n"


def test_an_interrupt_after_the_run_ended_says_where_its_verdict_is(lab: Lab, proxy: Proxy) -> None:
    """Outside the following of a run, Ctrl-C or SIGTERM exited 130 without a word."""
    proxy.answer(r"/api/v1/runs/[^/]+/summary", held_answer(30))
    with lab.running(*_run_args(lab, 1), "-q", ASSAY_URL=proxy.url) as process:
        proxy.until_answered(process, "no summary read")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 130, out + err
    run_id = _only_run(lab)
    assert re.fullmatch(
        rf"assay: interrupted\nassay: run {run_id} has ended; its verdict and reports:"
        rf" assay watch {run_id} --fail-on regression\n",
        err,
    ), err
