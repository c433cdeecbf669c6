"""The command behind a proxy that misbehaves: a page where the event stream should be, a
stream that says nothing, a download cut short, a stream still open when the run has ended."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.conftest import PATIENCE, SHORTENED, Lab
from tests.cli.proxy import (
    EVENTS,
    EXPORT,
    Handler,
    Proxy,
    answer_lost,
    cut_short,
    empty_stream,
    held_answer,
    held_stream,
    short_streams,
    sign_in_page,
    unavailable,
)

pytestmark = pytest.mark.slow


def _finished_run(lab: Lab, tmp_path: Path) -> str:
    test_set = lab.test_set(3)
    metric = lab.metric()
    report = tmp_path / "finished.json"
    args = ["-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    done = lab.assay("run", *args, "--json", str(report), "-q")
    assert done.returncode == 0, done.stdout + done.stderr
    return str(json.loads(report.read_text())["run"]["id"])


def test_a_page_where_the_event_stream_should_be_is_exit_3(
    lab: Lab, proxy: Proxy, tmp_path: Path
) -> None:
    run_id = _finished_run(lab, tmp_path)
    proxy.answer(EVENTS, sign_in_page)
    done = lab.assay("watch", run_id, ASSAY_URL=proxy.url, timeout=PATIENCE)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "answered 200 with text/html, not text/event-stream" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(proxy.answered) == 1  # not retried: it would answer the same forever


def _watch_giving_up_sooner(lab: Lab, proxy: Proxy, run_id: str) -> subprocess.CompletedProcess:
    """`assay watch` through the proxy, giving a stream up after 2 s rather than 300."""
    return subprocess.run(
        [sys.executable, "-c", SHORTENED, "watch", run_id],
        capture_output=True,
        text=True,
        env=lab.env(ASSAY_URL=proxy.url),
        timeout=PATIENCE,
        check=False,
    )


def test_a_stream_that_never_says_anything_is_given_up(
    lab: Lab, proxy: Proxy, tmp_path: Path
) -> None:
    run_id = _finished_run(lab, tmp_path)
    proxy.answer(EVENTS, empty_stream)  # 200, and at once its end: every time
    done = _watch_giving_up_sooner(lab, proxy, run_id)
    assert done.returncode == 4, done.stdout + done.stderr  # the server's side: retry the job
    assert "lost the run's event stream for 2 s; it goes on" in done.stderr
    assert len(proxy.answered) >= 2  # retried meanwhile


def test_streams_cut_short_that_bring_heartbeats_are_not_given_up(
    lab: Lab, proxy: Proxy, tmp_path: Path
) -> None:
    """A proxy ending streams sooner than a read's timeout, with no event in them (a run
    queued, or a slow case): the server's heartbeats are signs of life. Before, 5 minutes of
    them gave the stream up (exit 4)."""
    run_id = _finished_run(lab, tmp_path)
    proxy.answer(EVENTS, short_streams(6))  # ~3 s of them, past the 2 s give-up below
    done = _watch_giving_up_sooner(lab, proxy, run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(proxy.answered) >= 7  # six short streams, then the server's


def test_a_read_the_server_fails_a_moment_is_tried_again(
    lab: Lab, proxy: Proxy, tmp_path: Path
) -> None:
    """A restart or a proxy's moment at a run's end does not lose its verdict: a read is tried
    three more times (over 7 s); a server still failing then is exit 4, retry the job."""
    run_id = _finished_run(lab, tmp_path)
    proxy.answer(rf"/api/v1/runs/{run_id}", unavailable(2))
    done = lab.assay("watch", run_id, ASSAY_URL=proxy.url, timeout=PATIENCE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert proxy.answered.count(f"/api/v1/runs/{run_id}") >= 3  # 503, 503, then the run

    failing = Proxy(lab.server.url)
    with failing:
        failing.answer(rf"/api/v1/runs/{run_id}", unavailable(10))
        given_up = lab.assay("watch", run_id, ASSAY_URL=failing.url, timeout=PATIENCE)
    assert given_up.returncode == 4, given_up.stdout + given_up.stderr
    assert "503" in given_up.stderr and "Traceback" not in given_up.stderr
    assert failing.answered == [f"/api/v1/runs/{run_id}"] * 4


def test_downloads_and_the_event_stream_are_tried_again_when_the_server_fails_a_moment(
    lab: Lab, proxy: Proxy, tmp_path: Path
) -> None:
    """A 503 on the JUnit download after `PASSED (exit 0)` was exit 4 (retry the job: a second
    paid run), with the JSON report never written; a 500 on the event stream too."""
    test_set = lab.test_set(3)
    metric = lab.metric()
    args = ["-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"], "-q"]
    proxy.answer(EXPORT, unavailable(1))
    proxy.answer(EVENTS, unavailable(1, status=500))
    junit, report = tmp_path / "j.xml", tmp_path / "r.json"
    done = lab.assay(
        "run", *args, "--junit", str(junit), "--json", str(report), ASSAY_URL=proxy.url
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert junit.read_text().count("<testcase") == 4  # three cases and the gate's
    assert json.loads(report.read_text())["exit_code"] == 0
    run_id = json.loads(report.read_text())["run"]["id"]
    asked = [path.rsplit("/", 1)[-1] for path in proxy.answered]
    assert asked.count("events") >= 2 and asked.count("export") == 2  # refused, then answered

    proxy.answer(EXPORT, unavailable(1))
    exported = lab.assay("export", run_id, "--format", "csv", ASSAY_URL=proxy.url)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert exported.stdout.count("\n") == 4  # its header and three rows

    # A server that keeps failing the stream is believed after as many tries as a read gets,
    # with its own words: not five minutes of silence, then "lost the run's event stream".
    failing = Proxy(lab.server.url)
    with failing:
        failing.answer(EVENTS, unavailable(100, status=500))
        given_up = lab.assay("watch", run_id, ASSAY_URL=failing.url, timeout=PATIENCE)
    assert given_up.returncode == 4, given_up.stdout + given_up.stderr
    assert "500 Refused" in given_up.stderr
    assert len(failing.answered) == 4


def test_a_download_cut_short_leaves_no_file_behind(lab: Lab, proxy: Proxy, tmp_path: Path) -> None:
    run_id = _finished_run(lab, tmp_path)
    proxy.answer(EXPORT, cut_short)
    out = tmp_path / "out"
    out.mkdir()
    previous = out / "results.json"
    previous.write_text("the last whole export")
    export = lab.assay(
        "export", run_id, "--format", "json", "-o", str(previous), ASSAY_URL=proxy.url
    )
    assert export.returncode == 4, export.stdout + export.stderr
    assert "cannot reach Assay" in export.stderr
    assert previous.read_text() == "the last whole export"  # kept, not half overwritten

    junit = out / "junit.xml"
    watched = lab.assay("watch", run_id, "--junit", str(junit), ASSAY_URL=proxy.url)
    assert watched.returncode == 4, watched.stdout + watched.stderr
    assert not junit.exists()
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]  # no partial file left
    assert proxy.answered == [f"/api/v1/runs/{run_id}/export"] * 2

    whole = lab.assay("export", run_id, "--format", "junit", "-o", str(junit))
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert junit.read_text().startswith("<?xml")
    assert sorted(p.name for p in out.iterdir()) == ["junit.xml", "results.json"]


def _signalled_as_the_run_is_made(
    lab: Lab, proxy: Proxy, args: list[str], *, twice: bool = False
) -> tuple[int, str, str]:
    """The command's exit code and output, sent SIGTERM (`twice`: again, half a second later)
    while its POST /runs awaits its answer."""
    with lab.running(*args, ASSAY_URL=proxy.url) as process:
        proxy.until_answered(process, "no run was asked for", "/api/v1/runs")
        process.send_signal(signal.SIGTERM)
        if twice:
            time.sleep(0.5)
            assert process.poll() is None  # the first waits for the answer
            process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    return process.returncode, out, err


@pytest.mark.parametrize("cancel", [False, True])
def test_a_job_cancelled_as_its_run_is_made_says_the_run_or_cancels_it(
    lab: Lab, proxy: Proxy, cancel: bool
) -> None:
    """SIGTERM while POST /runs awaited its answer exited 130 and said nothing: the run went on,
    spending, with no id to follow or cancel it by, --cancel-on-interrupt or not."""
    test_set = lab.test_set(3)
    metric = lab.metric()
    lab.fake.latency = 8.0  # still running when the command hears the answer
    proxy.answer(r"/api/v1/runs", held_answer(3))
    args = ["run", "-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    code, out, err = _signalled_as_the_run_is_made(
        lab, proxy, [*args, *(["--cancel-on-interrupt"] if cancel else [])]
    )
    assert code == 130, out + err
    run_id = out.split()[1]
    status = lab.api.get(f"/runs/{run_id}").json()["status"]
    if cancel:
        assert status == "cancelled", out + err
    else:
        assert f"Detached: run {run_id} goes on" in out and status != "cancelled"


def test_a_second_interrupt_does_not_wait_for_a_run_being_made(lab: Lab, proxy: Proxy) -> None:
    """The first is held until the server answers; a server that does not answer (for up to
    the client's timeouts and retries, minutes) is not waited for after a second."""
    test_set = lab.test_set(1)
    metric = lab.metric()
    proxy.answer(r"/api/v1/runs", held_answer(60))
    args = ["run", "-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    code, out, err = _signalled_as_the_run_is_made(lab, proxy, args, twice=True)
    assert code == 130, out + err
    assert "waiting for the server to answer the new run; interrupt again" in err
    assert "the run may have been made (its Idempotency-Key is" in err
    assert "Traceback" not in err


def test_a_run_refused_after_an_interrupt_is_the_refusal(lab: Lab, proxy: Proxy) -> None:
    """The server's 4xx says the run was not made: not 'it may have been made', exit 130."""

    def refused_late(handler: Handler) -> None:
        handler.server.proxy.closing.wait(2)
        body = b'{"title": "Unprocessable", "status": 422, "detail": "no such thing"}'
        handler.send_whole("application/problem+json", body, status=422)

    test_set = lab.test_set(1)
    metric = lab.metric()
    proxy.answer(r"/api/v1/runs", refused_late)
    args = ["run", "-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    code, out, err = _signalled_as_the_run_is_made(lab, proxy, args)
    assert code == 3, out + err
    assert "422 Unprocessable: no such thing" in err and "may have been made" not in err


def test_ctrl_c_after_the_run_ended_detaches_even_with_cancel_on_interrupt(
    lab: Lab, proxy: Proxy
) -> None:
    test_set = lab.test_set(3)
    metric = lab.metric()
    proxy.answer(EVENTS, held_stream)  # the end never reaches the command
    args = ["run", "-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    with lab.running(*args, "--cancel-on-interrupt", ASSAY_URL=proxy.url) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("Run "), line
        run_id = line.split()[1]
        deadline = time.monotonic() + 30
        while lab.api.get(f"/runs/{run_id}").json()["status"] != "completed":
            assert time.monotonic() < deadline, "the run did not complete"
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 130, out + err
    assert f"Run {run_id} had already ended: 409" in out
    assert err == ""


def test_a_stream_refused_for_a_while_is_waited_for_as_asked(
    lab: Lab, proxy: Proxy, tmp_path: Path
) -> None:
    """The server caps an organization's streams (429 with Retry-After): a CI job watching
    its run waits its turn, as for a restart, rather than end as a usage error."""
    run_id = _finished_run(lab, tmp_path)
    proxy.answer(EVENTS, unavailable(2, status=429, retry_after="2"))
    started = time.monotonic()
    done = lab.assay("watch", run_id, ASSAY_URL=proxy.url, timeout=PATIENCE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(proxy.answered) >= 3  # 429, 429, then the events
    assert time.monotonic() - started >= 4.0  # two waits of the 2 s asked


def test_a_server_failing_to_find_a_named_id_is_exit_4(
    lab: Lab, proxy: Proxy, tmp_path: Path
) -> None:
    test_set = lab.test_set(1)
    proxy.answer(rf"/api/v1/test-sets/{test_set['id']}", unavailable(10))
    args = ["run", "-s", test_set["id"], "-m", lab.model_name]
    done = lab.assay(*args, ASSAY_URL=proxy.url, timeout=PATIENCE)
    assert done.returncode == 4, done.stdout + done.stderr  # the server's side: retry the job
    assert "503" in done.stderr


def test_a_run_whose_answer_was_lost_is_asked_again_and_made_once(lab: Lab, proxy: Proxy) -> None:
    """The server made the run and its answer was lost: the command asks again with the same
    Idempotency-Key and follows the run it made, rather than start a second one."""
    test_set = lab.test_set(3)
    metric = lab.metric()
    proxy.answer(r"/api/v1/runs", answer_lost(1))
    args = ["run", "-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    done = lab.assay(*args, "-q", ASSAY_URL=proxy.url, timeout=PATIENCE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert proxy.answered.count("/api/v1/runs") == 2  # lost, then asked again
    listed = lab.assay("runs", "list")  # the lab's organization is this test's own
    assert "Runs (1 in all)" in listed.stdout, listed.stdout


def test_a_job_retried_with_its_key_follows_the_run_its_first_try_made(lab: Lab) -> None:
    test_set = lab.test_set(2)
    metric = lab.metric()
    args = ["run", "-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    first = lab.assay(*args, "-q", ASSAY_IDEMPOTENCY_KEY="pipeline-17")
    again = lab.assay(*args, "-q", "--idempotency-key", "pipeline-17")
    assert (first.returncode, again.returncode) == (0, 0), first.stderr + again.stderr
    assert "Runs (1 in all)" in lab.assay("runs", "list").stdout


def test_a_read_refused_for_now_waits_as_asked_then_is_exit_4(lab: Lab, proxy: Proxy) -> None:
    """A 429 (the server's, or a gateway's in front of it) was exit 3, a usage error: it is
    tried again as a failing read is, after its Retry-After, and when it persists the job is
    worth a retry (exit 4)."""
    proxy.answer(r"/api/v1/runs", unavailable(2, status=429, retry_after="3"))
    started = time.monotonic()
    done = lab.assay("runs", "list", ASSAY_URL=proxy.url, timeout=PATIENCE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started >= 6.0  # the 3 s asked, twice: not the 1 s and 2 s waits
    assert proxy.answered == ["/api/v1/runs"] * 3

    throttled = Proxy(lab.server.url)
    with throttled:  # a Retry-After that is no number of seconds: the usual 1, 2 and 4 s
        throttled.answer(r"/api/v1/runs", unavailable(10, status=429, retry_after="soon"))
        started = time.monotonic()
        given_up = lab.assay("runs", "list", ASSAY_URL=throttled.url, timeout=PATIENCE)
    assert given_up.returncode == 4, given_up.stdout + given_up.stderr
    assert "429 Refused" in given_up.stderr and "Traceback" not in given_up.stderr
    assert 7.0 <= time.monotonic() - started < 20.0
    assert throttled.answered == ["/api/v1/runs"] * 4


def test_a_run_refused_for_now_is_asked_again_and_made_once(lab: Lab, proxy: Proxy) -> None:
    test_set = lab.test_set(2)
    metric = lab.metric()
    proxy.answer(r"/api/v1/runs", unavailable(1, status=429, retry_after="1"))
    args = ["run", "-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    done = lab.assay(*args, "-q", ASSAY_URL=proxy.url, timeout=PATIENCE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert proxy.answered.count("/api/v1/runs") == 2  # refused, then made
    assert "Runs (1 in all)" in lab.assay("runs", "list").stdout


def test_a_page_where_json_should_be_is_one_line_exit_3(lab: Lab, proxy: Proxy) -> None:
    """A proxy's sign-in page answered 200 was 'unexpected error (JSONDecodeError ...)'."""
    proxy.answer(r"/api/v1/runs", sign_in_page)
    done = lab.assay("runs", "list", ASSAY_URL=proxy.url, timeout=PATIENCE)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr == (
        f"assay: Assay at {proxy.url} answered 200 text/html, not JSON (a proxy in between?)\n"
    )
    assert proxy.answered == ["/api/v1/runs"]  # not retried: it would answer the same
