"""The command's event stream when the server ends it at once with a reason (a replay that
waited too long for a slot, under load): it waits the stream's `retry:`, backs off, and gives
up in time. And when the run is deleted while it is followed: it says so, and not that the run
goes on."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time

import pytest

from notifications.frames import HEARTBEAT
from notifications.subscriber import UNREADABLE
from tests.cli.conftest import PATIENCE, Lab
from tests.cli.proxy import EVENTS, Handler, Proxy, first

pytestmark = pytest.mark.slow

GIVE_UP_AFTER = 5.0
GIVING_UP_SOONER = (
    f"import cli.stream; cli.stream.GIVE_UP_AFTER = {GIVE_UP_AFTER};"
    " from cli.main import main; main()"
)
# What the server sends on a stream it ends before any event: its opening `retry:`, then the
# end's `retry:` and why.
ENDED_AT_ONCE = b"retry: 2000\n\nretry: 2000\n: %b\n\n" % UNREADABLE.encode()


def _finished_run(lab: Lab) -> str:
    test_set, metric = lab.test_set(2), lab.metric()
    args = ["-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"], "-q"]
    done = lab.assay("run", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return str(lab.api.get("/runs").json()["items"][0]["id"])


def test_streams_ended_at_once_are_retried_after_the_servers_delay_then_given_up(
    lab: Lab, proxy: Proxy
) -> None:
    """Before, the comment counted as a sign of life: reconnected every 0.4 s, never given up."""
    run_id = _finished_run(lab)
    asked: list[float] = []

    def ended_at_once(handler: Handler) -> None:
        asked.append(time.monotonic())
        handler.send_whole("text/event-stream", ENDED_AT_ONCE)

    proxy.answer(EVENTS, ended_at_once)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", GIVING_UP_SOONER, "watch", run_id],
        capture_output=True,
        text=True,
        env=lab.env(ASSAY_URL=proxy.url),
        timeout=PATIENCE,
        check=False,
    )
    took = time.monotonic() - started
    assert done.returncode == 4, done.stdout + done.stderr
    assert f"lost the run's event stream for {GIVE_UP_AFTER:.0f} s; it goes on" in done.stderr
    assert took < GIVE_UP_AFTER + 15, took
    gaps = [later - earlier for earlier, later in itertools.pairwise(asked)]
    assert 2 <= len(asked) <= 5, gaps
    assert min(gaps) >= 1.9, gaps  # never sooner than `retry: 2000` asks


def test_a_run_deleted_while_followed_is_said_so_not_that_it_goes_on(
    lab: Lab, proxy: Proxy
) -> None:
    """Its project deleted mid-run: the stream's next opening is a 404. Before, the command
    said the run goes on, and how to follow it again."""
    deleted = threading.Event()

    def held_until_deleted(handler: Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(HEARTBEAT.encoded)
        handler.wfile.flush()
        deleted.wait(PATIENCE)

    lab.fake.latency = 0.5
    test_set, metric = lab.test_set(6), lab.metric()
    args = ["-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    proxy.answer(EVENTS, first(1, held_until_deleted))
    with lab.running("run", *args, ASSAY_URL=proxy.url) as process:
        proxy.until_answered(process, "the command never opened the run's event stream")
        removed = lab.api.delete(f"/projects/{lab.project_id}")
        assert removed.status_code == 204, removed.text
        deleted.set()
        out, err = process.communicate(timeout=PATIENCE)
    run_id = proxy.answered[0].split("/")[-2]
    assert process.returncode == 3, out + err  # as `assay watch` of a run that is not there
    assert f"assay: run {run_id} no longer exists (404 " in err, err
    assert "goes on" not in err and "Follow it again" not in err, err
    assert "Traceback" not in err
