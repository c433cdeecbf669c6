"""`assay run` and `assay watch` end to end: exit codes, reports, output fit for CI logs."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import xmlschema

from tests.cli.conftest import ASSAY, CONTROL, Lab
from tests.fakes.openai_server import message_text
from tests.fakes.server import Fault

pytestmark = pytest.mark.slow

JUNIT_SCHEMA = xmlschema.XMLSchema(str(Path(__file__).with_name("junit-10.xsd")))


def _cases(report: Path) -> list[ElementTree.Element]:
    return [
        c for c in ElementTree.parse(report).getroot().iter("testcase") if c.get("name") != "gate"
    ]


def test_a_passing_gate_exits_0_with_a_valid_junit_report(lab: Lab, tmp_path: Path) -> None:
    test_set = lab.test_set(12)
    metric = lab.metric()
    junit, report = tmp_path / "out" / "junit.xml", tmp_path / "out" / "report.json"
    args = ["run", "--test-set", test_set["name"], "--model", lab.model_name]
    args += ["--metric", metric["name"], "--min-pass-rate", "0.9", "--junit", str(junit)]
    done = lab.assay(*args, "--json", str(report))

    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASSED (exit 0): gate passed" in done.stdout
    assert not CONTROL.search(done.stdout + done.stderr), repr(done.stdout)
    assert "12/12 cases (100%): 12 passed, 0 failed, 0 errored" in done.stdout
    JUNIT_SCHEMA.validate(str(junit))
    cases = _cases(junit)
    assert len(cases) == 12
    assert all(case.find("failure") is None for case in cases)
    written = json.loads(report.read_text())
    assert written["exit_code"] == 0
    assert written["run"]["counts"]["passed"] == 12
    assert written["followed"] == {"passed": 12, "failed": 0, "errored": 0, "reconnects": 0}

    # Another run of the same set: the same testcase names, so CI systems follow each test.
    again = tmp_path / "again.xml"
    second = lab.assay(*args[:-2], "--junit", str(again), "--quiet")
    assert second.returncode == 0, second.stdout + second.stderr
    assert sorted(str(c.get("name")) for c in _cases(again)) == sorted(
        str(c.get("name")) for c in cases
    )
    assert {c.get("classname") for c in _cases(again)} == {c.get("classname") for c in cases}
    assert "cases (" not in second.stdout  # --quiet: no progress lines, the outcome only


def test_a_regression_against_the_project_baseline_exits_1(lab: Lab, tmp_path: Path) -> None:
    test_set = lab.test_set(30)
    metric = lab.metric("mentions-case")
    args = ["run", "-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    baseline = lab.assay(*args, "--json", str(tmp_path / "baseline.json"))
    assert baseline.returncode == 0, baseline.stdout + baseline.stderr
    baseline_id = json.loads((tmp_path / "baseline.json").read_text())["run"]["id"]
    lab.api.put(f"/projects/{lab.project_id}/baseline", json={"run_id": baseline_id})

    # The candidate answers 25 of 30 cases wrongly: a regression, however it is tested.
    def worse(request: dict) -> str:
        text = message_text(request["messages"][-1])
        return text if text.endswith(("0", "5")) and text != "case 10" else "I cannot help"

    lab.fake.reply = worse
    candidate = lab.assay(*args, "--baseline", "project", "--junit", str(tmp_path / "j.xml"))
    assert candidate.returncode == 1, candidate.stdout + candidate.stderr
    out = candidate.stdout
    assert "FAILED (exit 1): gate failed" in out
    assert "regressed" in out
    assert f"Against baseline {baseline_id}: regressed" in out
    assert "mentions-case" in out and "Failures" in out
    assert "reference not found" in out  # why a case failed
    assert not CONTROL.search(out)
    JUNIT_SCHEMA.validate(str(tmp_path / "j.xml"))
    gate = next(
        c for c in ElementTree.parse(tmp_path / "j.xml").iter("testcase") if c.get("name") == "gate"
    )
    assert gate.find("failure") is not None
    print(out)  # the closing note quotes it

    # Output in an encoding without the verdict's arrows (cp1252, on Windows runners) was an
    # unexpected error at the verdict: exit 3, and no report written.
    narrow = subprocess.run(
        [str(ASSAY), *args, "--baseline", "project", "--junit", str(tmp_path / "narrow.xml")],
        capture_output=True,
        encoding="cp1252",
        env=lab.env(PYTHONIOENCODING="cp1252"),
        timeout=120,
        check=False,
    )
    assert narrow.returncode == 1, narrow.stdout + narrow.stderr
    assert "FAILED (exit 1): gate failed" in narrow.stdout
    JUNIT_SCHEMA.validate(str(tmp_path / "narrow.xml"))


def test_a_budget_hit_exits_2(lab: Lab) -> None:
    test_set = lab.test_set(40)
    metric = lab.metric()
    lab.fake.latency = 0.05
    done = lab.assay(
        "run",
        "-s",
        test_set["name"],
        "-m",
        lab.model_name,
        "--metric",
        metric["name"],
        "--max-cost",
        "0.0005",
        "--concurrency",
        "1",
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "NOT JUDGED (exit 2): the run did not complete: it is stopped" in done.stdout
    assert "budget" in done.stdout


def test_failures_fail_the_command_though_the_run_did_not_complete(lab: Lab) -> None:
    """Stopped by its budget with failed cases: exit 2 let `assay run || [ $? -eq 2 ]` pass."""
    test_set = lab.test_set(40)
    metric = lab.metric()
    lab.fake.reply = lambda request: "no"
    args = ["run", "-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    done = lab.assay(
        *args, "--fail-on", "failures", "--max-cost", "0.0005", "--concurrency", "1", "-q"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "case(s) failed (and the run did not complete: it is stopped)" in done.stdout


def test_failures_fail_the_command_only_when_asked(lab: Lab) -> None:
    test_set = lab.test_set(4)
    metric = lab.metric()
    lab.fake.reply = lambda request: "no"
    args = ["run", "-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    assert lab.assay(*args, "-q").returncode == 0  # no gate asked for: nothing to fail on
    failing = lab.assay(*args, "--fail-on", "failures", "-q")
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "4 case(s) failed" in failing.stdout


def test_failures_fail_the_command_though_the_gate_is_undecided_beside_them(lab: Lab) -> None:
    """7 cases failed and 3 errored (above the 10% a gate allows): the gate cannot be
    decided, but with --fail-on failures the failed cases fail the command (exit 1), never
    exit 2, which a job may take for a warning."""
    test_set = lab.test_set(10)
    metric = lab.metric()
    lab.fake.reply = lambda request: "no"
    lab.fake.enqueue(*[Fault.http(400)] * 3)
    args = ["run", "-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    done = lab.assay(*args, "--fail-on", "failures", "--concurrency", "1", "-q")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED (exit 1): 7 case(s) failed" in done.stdout


def test_a_key_with_a_line_break_is_sent_without_it_and_never_printed(lab: Lab) -> None:
    """A key read from a file often ends in a newline: the HTTP client refused it, quoting the
    header (key and all) in the one line printed, and it was exit 4, as if to retry."""
    key = lab.env()["ASSAY_API_KEY"]
    listed = lab.assay("runs", "list", ASSAY_API_KEY=f"{key}\n")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    broken = f"{key[:8]}\r\n{key[8:]}"
    refused = lab.assay("runs", "list", ASSAY_API_KEY=broken)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "a character a header cannot carry" in refused.stderr
    assert key[8:] not in refused.stdout + refused.stderr


def test_a_bad_key_is_exit_3_and_no_server_exit_4_in_one_line(lab: Lab) -> None:
    bad_key = lab.assay("runs", "list", ASSAY_API_KEY="ak_wrong")
    assert bad_key.returncode == 3
    assert bad_key.stderr.count("\n") == 1, bad_key.stderr
    assert "401" in bad_key.stderr and "Traceback" not in bad_key.stderr
    no_server = lab.assay("runs", "list", ASSAY_URL="http://127.0.0.1:9")
    assert no_server.returncode == 4  # no server there: the network's side, not the job's
    assert "cannot reach Assay at http://127.0.0.1:9" in no_server.stderr
    assert "Traceback" not in no_server.stderr
    usage = lab.assay("run", "--repetitions", "0")
    assert usage.returncode == 3
    # Common mistakes in the URL are the job's to fix (3), said at once: not retried for
    # seconds as an unreachable server (4), nor a 404 for every request.
    for url, said in (
        (lab.server.url.removeprefix("http://"), "is not an http(s) URL"),
        (f"{lab.server.url}/api/v1", "without /api/v1"),
        ("http://127.0.0.1:port", "is not valid"),
    ):
        mistaken = lab.assay("runs", "list", ASSAY_URL=url)
        assert mistaken.returncode == 3 and said in mistaken.stderr, mistaken.stderr


def test_names_that_match_nothing_or_several_exit_3_listing_candidates(lab: Lab) -> None:
    lab.test_set(1, name="alpha")
    other = lab.post("/projects", {"name": "other"})
    ids = lab.post("/tests/bulk", {"project_id": other["id"], "tests": [{"input": "x"}]})["ids"]
    lab.post("/test-sets", {"project_id": other["id"], "name": "alpha", "test_ids": ids})
    unknown = lab.assay("run", "-s", "beta", "-m", lab.model_name)
    assert unknown.returncode == 3
    assert "no test set named 'beta'; there are: alpha" in unknown.stderr
    several = lab.assay("run", "-s", "alpha", "-m", lab.model_name)
    assert several.returncode == 3
    assert "2 test sets are named 'alpha'" in several.stderr
    narrowed = lab.assay("run", "-s", "alpha", "-p", "other", "-m", "nope")
    assert narrowed.returncode == 3
    assert "no model configuration named 'nope'" in narrowed.stderr


def test_ctrl_c_detaches_and_the_run_goes_on(lab: Lab) -> None:
    test_set = lab.test_set(20)
    metric = lab.metric()
    lab.fake.latency = 0.2
    args = ["run", "-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    process = lab.popen(*args, "--concurrency", "1", "--fail-on", "failures")
    run_id = _started(process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, out + err
    # What it prints follows the run as this command would: `failures` is not the gate's.
    assert f"assay watch {run_id} --fail-on failures" in out
    assert lab.api.get(f"/runs/{run_id}").json()["status"] in ("queued", "running")

    watched = lab.assay("watch", run_id)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "20/20 cases (100%): 20 passed" in watched.stdout

    # SIGTERM, as a CI system cancels a job, is a Ctrl-C: here it cancels the run too.
    for interrupt in (signal.SIGINT, signal.SIGTERM):
        cancelled = lab.popen(*args, "--concurrency", "1", "--cancel-on-interrupt")
        second = _started(cancelled)
        cancelled.send_signal(interrupt)
        out, err = cancelled.communicate(timeout=30)
        assert cancelled.returncode == 130, out + err
        deadline = time.monotonic() + 20
        while lab.api.get(f"/runs/{second}").json()["status"] != "cancelled":
            assert time.monotonic() < deadline, f"the run was not cancelled on {interrupt!r}"
            time.sleep(0.2)


def _started(process) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("Run "), line + (process.stderr.read() if process.stderr else "")
    time.sleep(1.0)  # a few cases in
    return line.split()[1]


def test_in_a_terminal_the_progress_is_a_redrawn_bar(lab: Lab) -> None:
    test_set = lab.test_set(10)
    metric = lab.metric()
    lab.fake.latency = 0.1
    args = ["run", "-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    coloured = _in_terminal(lab, *args, "--concurrency", "2")
    assert "━" in coloured and "10/10" in coloured
    assert "\x1b[" in coloured  # drawn over itself, with colours
    assert re.search(r"\x1b\[[0-9;]*3[0-7](;[0-9]+)*m", coloured)
    plain = _in_terminal(lab, *args, NO_COLOR="1")
    assert "━" in plain
    assert not re.search(r"\x1b\[[0-9;]*3[0-7](;[0-9]+)*m", plain)  # NO_COLOR: no colours


def _in_terminal(lab: Lab, *args: str, **env: str) -> str:
    """The command's output with a pseudo-terminal as its stdout."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [str(ASSAY), *args],
        stdout=follower,
        stderr=follower,
        env=lab.env(TERM="xterm-256color", **env),
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert process.wait(60) == 0, b"".join(chunks)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_model_output_is_shown_as_text_never_as_markup(lab: Lab) -> None:
    test_set = lab.test_set(2)
    metric = lab.metric()
    lab.fake.reply = lambda request: "see [/tmp] and [citation needed] [bold]x"
    args = ["run", "-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    done = lab.assay(*args, "--fail-on", "failures")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "[citation needed]" in done.stdout and "[/tmp]" in done.stdout


def test_terminal_escapes_in_a_models_output_are_not_sent_to_the_terminal(lab: Lab) -> None:
    """A model's answer setting the terminal's title and hiding what follows (or writing the
    clipboard): shown as text, its control characters replaced."""
    test_set = lab.test_set(2)
    metric = lab.metric()
    lab.fake.reply = lambda request: "x \x1b]0;PWNED\x07 \x1b[8mhidden\x1b[0m \x9b2J"
    args = ["run", "-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    done = lab.assay(*args, "--fail-on", "failures")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "PWNED" in done.stdout and "hidden" in done.stdout  # shown, as text
    assert not re.search("[\x1b\x07\x9b]", done.stdout + done.stderr)


def test_watching_a_repeated_run_follows_it_past_its_first_end(lab: Lab) -> None:
    test_set = lab.test_set(6)
    metric = lab.metric()
    args = ["run", "-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    report = lab.home / "first.json"
    assert lab.assay(*args, "--json", str(report), "-q").returncode == 0
    run_id = json.loads(report.read_text())["run"]["id"]
    lab.fake.latency = 0.2
    repeated = lab.api.post(f"/runs/{run_id}/repeat", json={"repetitions": 1, "cases": "all"})
    assert repeated.status_code == 202, repeated.text
    watched = lab.assay("watch", run_id, "--json", str(lab.home / "watched.json"))
    assert watched.returncode == 0, watched.stdout + watched.stderr
    followed = json.loads((lab.home / "watched.json").read_text())["followed"]
    assert followed["passed"] == 12  # both passes of the six cases, each once


def test_a_profile_key_goes_only_to_its_own_server(lab: Lab) -> None:
    # A link where the profiles go is replaced, not written through.
    profiles, dotfiles = lab.home / "profiles.json", lab.home / "dotfiles.json"
    lab.home.mkdir(parents=True, exist_ok=True)
    dotfiles.write_text("{}")
    profiles.symlink_to(dotfiles)
    saved = lab.assay("login", "--url", lab.server.url, "--api-key", lab.api_key)
    assert saved.returncode == 0, saved.stdout + saved.stderr
    assert not profiles.is_symlink() and dotfiles.read_text() == "{}"
    assert oct(profiles.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in lab.home.iterdir() if p.name.startswith(".profiles-")] == []
    assert lab.api_key not in saved.stdout + saved.stderr
    listed = lab.assay("runs", "list", ASSAY_API_KEY="", ASSAY_URL="")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    pasted = lab.assay("runs", "list", ASSAY_API_KEY="", ASSAY_URL=f"{lab.server.url}/\n")
    assert pasted.returncode == 0, pasted.stdout + pasted.stderr  # the same server
    elsewhere = lab.assay("runs", "list", ASSAY_API_KEY="", ASSAY_URL="http://127.0.0.1:9")
    assert elsewhere.returncode == 3
    assert "is for " in elsewhere.stderr and "--api-key" in elsewhere.stderr
    refused = lab.assay("login", "--url", lab.server.url, "--api-key", "ak_wrong", "--profile", "x")
    assert refused.returncode == 3
    assert '"x"' not in profiles.read_text()

    # A profile named by flag comes before the environment, URL and key: the environment's key
    # (another server's, in a shell that exports one) went to the profile's server.
    named = lab.assay("login", "--url", lab.server.url, "--api-key", lab.api_key, "--profile", "s")
    assert named.returncode == 0, named.stdout + named.stderr
    for url in ("", "http://127.0.0.1:9"):
        chosen = lab.assay(
            "runs", "list", "--profile", "s", ASSAY_API_KEY="ak_other", ASSAY_URL=url
        )
        assert chosen.returncode == 0, chosen.stdout + chosen.stderr


def test_a_prompt_with_no_input_is_a_usage_error_not_an_interruption(lab: Lab) -> None:
    """In a CI job stdin is closed: `assay login` without --api-key must say what to do, and
    not exit 130, which the documentation keeps for Ctrl-C."""
    done = subprocess.run(
        [str(ASSAY), "login", "--url", lab.server.url, "--profile", "ci"],
        capture_output=True,
        text=True,
        env=lab.env(),
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "no input to answer a prompt" in done.stderr


def test_run_ids_are_checked_before_they_go_into_a_path(lab: Lab) -> None:
    # Unchecked, `RUN/../../projects` reaches /api/v1/projects: a page, read as if a run.
    smuggled = "0190a4f5-7b8c-7d9e-8f0a-1b2c3d4e5f6a/../../projects"
    for args in (
        ("watch", smuggled),
        ("export", smuggled),
        ("compare", smuggled, "--baseline", "project"),
        ("compare", "0190a4f5-7b8c-7d9e-8f0a-1b2c3d4e5f6a", "--baseline", "../projects"),
    ):
        done = lab.assay(*args)
        assert done.returncode == 3, done.stdout + done.stderr
        assert "is not a run id (a UUID)" in done.stderr, done.stderr
        assert "unexpected error" not in done.stderr


def test_a_ci_log_gets_lines_and_whole_run_ids_whatever_its_colour_settings(lab: Lab) -> None:
    """FORCE_COLOR (set for a CI log's colours) brought the redrawn bar, control characters
    on every line; at 80 columns `runs list` split each id over four lines."""
    test_set = lab.test_set(3)
    metric = lab.metric()
    args = ["run", "-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    report = lab.home / "coloured.json"
    done = lab.assay(*args, "--name", "nightly [main]", "--json", str(report), FORCE_COLOR="1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "\x1b[?25l" not in done.stdout and "\r" not in done.stdout  # no bar, redrawn
    run_id = json.loads(report.read_text())["run"]["id"]
    listed = lab.assay("runs", "list", COLUMNS="80")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    line = f"{run_id}  completed  3 passed, 0 failed, 0 errored  gate passed"
    assert line in listed.stdout and "  nightly [main]\n" in listed.stdout  # no markup escape
    wide = lab.assay("runs", "list", COLUMNS="160")
    assert run_id in wide.stdout and "┃ id " in wide.stdout  # a table where it fits
