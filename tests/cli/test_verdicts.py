"""A verdict the command prints is one a pipeline can trust: a run that did not complete, or
whose every case errored, never passes; a report it could not write never turns a failure
into "retry the job"; and what it reads locally or prints of its URL is bounded and safe."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.cli.conftest import Lab
from tests.cli.proxy import EXPORT, Proxy, sign_in_page, unavailable

pytestmark = pytest.mark.slow


def _ids(lab: Lab, cases: int) -> tuple[str, str, str]:
    """A test set of `cases`, a metric and the fake's model, by id."""
    test_set, metric = lab.test_set(cases), lab.metric()
    model = next(m for m in lab.api.get("/models").json()["items"] if m["name"] == lab.model_name)
    return test_set["id"], metric["id"], model["id"]


def _run(lab: Lab, test_set: str, metric: str, model: str, **extra: object) -> str:
    body = {"test_set_id": test_set, "target_model_id": model, "metric_ids": [metric], **extra}
    return str(lab.post("/runs", body, expect=202)["id"])


def _ended(lab: Lab, run_id: str) -> dict:
    deadline = time.monotonic() + 60
    while (run := lab.api.get(f"/runs/{run_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, run
        time.sleep(0.2)
    return dict(run)


def test_compare_does_not_pass_a_run_that_did_not_complete(lab: Lab) -> None:
    """Against a baseline that failed every case, a run cancelled a third of the way, every
    case it ran passing, "improved": a gate on it would be undecided, and so is compare."""
    test_set, metric, model = _ids(lab, 24)
    lab.fake.reply = lambda body: "nothing"
    baseline = _run(lab, test_set, metric, model)
    assert _ended(lab, baseline)["counts"]["failed"] == 24
    lab.fake.reply = lambda body: body["messages"][-1]["content"]  # each case passes
    lab.fake.latency = 0.2
    cancelled = _run(lab, test_set, metric, model, concurrency=1)
    deadline = time.monotonic() + 30
    while lab.api.get(f"/runs/{cancelled}").json()["counts"]["done"] < 8:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert lab.api.post(f"/runs/{cancelled}/cancel").status_code == 200
    _ended(lab, cancelled)

    done = lab.assay("compare", cancelled, "--baseline", baseline)
    assert "improved" in done.stdout, done.stdout + done.stderr
    assert done.returncode == 2, done.stdout + done.stderr
    assert "the run did not complete: it is cancelled" in done.stdout
    backwards = lab.assay("compare", baseline, "--baseline", cancelled)
    assert backwards.returncode == 2, backwards.stdout + backwards.stderr
    assert "the baseline did not complete" in backwards.stdout


def test_a_run_with_no_gate_whose_cases_all_errored_is_not_judged(lab: Lab) -> None:
    test_set, metric, _ = _ids(lab, 3)
    refused = lab.post(
        "/models",
        {
            "name": f"{lab.model_name}-bad-key",
            "provider": "openai-compatible",
            "model": "fake-model",
            "base_url": lab.fake.base_url,
            "api_key": "sk-wrong",
        },
    )
    run_id = _run(lab, test_set, metric, refused["id"])
    for fail_on in ("regression", "failures"):
        done = lab.assay("watch", run_id, "-q", "--fail-on", fail_on)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "no gate, and 3 of 3 results errored" in done.stdout


def test_a_report_not_written_leaves_a_failed_verdict_as_it_was(
    lab: Lab, proxy: Proxy, tmp_path: Path
) -> None:
    """A JUnit download the server keeps failing turned "FAILED (exit 1)" into exit 4: retry
    the job, a new run, which a model answering by chance may pass."""
    lab.fake.reply = lambda body: "nothing"
    test_set, metric = lab.test_set(3), lab.metric()
    proxy.answer(EXPORT, unavailable(100))
    args = ["-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"], "-q"]
    junit, report = tmp_path / "j.xml", tmp_path / "r.json"
    done = lab.assay(
        "run",
        *args,
        "--min-pass-rate",
        "0.9",
        "--junit",
        str(junit),
        "--json",
        str(report),
        ASSAY_URL=proxy.url,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED (exit 1)" in done.stdout and "a report was not written" in done.stdout
    assert report.exists() and not junit.exists()


def test_a_page_instead_of_an_export_is_not_written(lab: Lab, proxy: Proxy, tmp_path: Path) -> None:
    test_set, metric, model = _ids(lab, 2)
    run_id = _run(lab, test_set, metric, model)
    _ended(lab, run_id)
    proxy.answer(EXPORT, sign_in_page)
    target = tmp_path / "junit.xml"
    saved = lab.assay("export", run_id, "--format", "junit", "-o", str(target), ASSAY_URL=proxy.url)
    assert saved.returncode == 3, saved.stdout + saved.stderr
    assert "text/html" in saved.stderr and not target.exists()
    printed = lab.assay("export", run_id, "--format", "csv", ASSAY_URL=proxy.url)
    assert printed.returncode == 3 and "sign in" not in printed.stdout


def test_a_urls_password_is_never_printed(lab: Lab) -> None:
    for url, code in (
        ("http://ci:s3cretpass@127.0.0.1:1", 4),  # unreachable
        ("ftp://ci:s3cretpass@example.com", 3),  # no http(s) URL
        ("https://ci:s3cretpass@example.com/api/v1", 3),  # not the root
    ):
        done = lab.assay("runs", "list", ASSAY_URL=url)
        assert done.returncode == code, done.stdout + done.stderr
        assert "s3cretpass" not in done.stdout + done.stderr
        assert "example.com" in done.stderr or "127.0.0.1" in done.stderr


def test_bad_local_input_is_a_usage_error_saying_what(lab: Lab, tmp_path: Path) -> None:
    run = ["run", "-s", lab.test_set(1)["name"], "-m", lab.model_name]
    for flag, value in (("--min-pass-rate", "nan"), ("--max-cost", "nan"), ("--max-cost", "inf")):
        done = lab.assay(*run, flag, value)
        assert done.returncode == 3, done.stdout + done.stderr
        assert "must be a number" in done.stderr, done.stderr
    (tmp_path / "assay.yaml").write_bytes(b"test_set: caf\xe9\n")
    done = lab.assay("run", cwd=tmp_path)
    assert done.returncode == 3 and "not UTF-8" in done.stderr, done.stderr
    lab.home.mkdir(parents=True, exist_ok=True)
    (lab.home / "profiles.json").write_text('{"default": "x"}')
    done = lab.assay("runs", "list", ASSAY_API_KEY="")
    assert done.returncode == 3 and "not a file of profiles" in done.stderr, done.stderr
    (lab.home / "profiles.json").unlink()
    done = lab.assay("import", "/dev/zero", "--format", "csv", "-s", run[2], timeout=30)
    assert done.returncode == 3 and "not a regular file" in done.stderr, done.stderr
