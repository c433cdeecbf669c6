"""What the command prints and how it exits agree with the run's gate: the comparison table
compared as the gate compared, the pass rate as the server has it, `assay compare` exiting by
the gate's rule."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.conftest import Lab
from tests.fakes.openai_server import Fault, message_text

pytestmark = pytest.mark.slow


def _case(request: dict[str, Any]) -> int:
    """The number of the case asked ("case 7" -> 7)."""
    return int(message_text(request["messages"][-1]).split()[-1])


def _run(lab: Lab, report: Path, *args: str, cwd: Path | None = None) -> dict[str, Any]:
    done = lab.assay("run", *args, "--json", str(report), "-q", cwd=cwd)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return dict(json.loads(report.read_text()))


def test_the_table_and_report_compare_with_the_gates_min_effect(lab: Lab, tmp_path: Path) -> None:
    test_set = lab.test_set(60)
    metric = lab.metric()
    args = ["-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    baseline = _run(lab, tmp_path / "baseline.json", *args)["run"]["id"]

    # 6 of 60 cases now fail: -10 points. Inside a margin of 25 points that is no change that
    # matters (the gate's verdict); with the server's default margin of 2 it is a regression.
    lab.fake.reply = lambda request: (
        "I cannot help" if _case(request) < 6 else message_text(request["messages"][-1])
    )
    (tmp_path / "assay.yaml").write_text(
        yaml.safe_dump(
            {
                "test_set": test_set["name"],
                "model": lab.model_name,
                "metrics": [metric["name"]],
                "gate": {"baseline": baseline, "min_effect": 0.25},
                "json": "report.json",
            }
        )
    )
    done = lab.assay("run", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASSED (exit 0): gate passed" in done.stdout
    assert f"Against baseline {baseline}: equivalent" in done.stdout
    assert "regressed" not in done.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["run"]["gate_result"]["comparison"]["verdict"] == "equivalent"
    assert report["comparison"]["verdict"] == "equivalent"
    assert report["comparison"]["method"]["min_effect"] == 0.25
    candidate = report["run"]["id"]

    # `assay compare` compares as the run's gate did, unless told another margin.
    compared = lab.assay("compare", candidate, "--baseline", baseline)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert f"Against baseline {baseline}: equivalent" in compared.stdout
    strict = lab.assay("compare", candidate, "--baseline", baseline, "--min-effect", "0.02")
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert f"Against baseline {baseline}: regressed" in strict.stdout
    assert "FAILED (exit 1): regressed: " in strict.stdout


def test_compare_fails_on_any_metric_regressing_as_the_gate_does(lab: Lab, tmp_path: Path) -> None:
    test_set = lab.test_set(60)
    reference = lab.metric("says-the-case")
    polite = lab.post(
        "/metrics",
        {
            "project_id": lab.project_id,
            "name": "says-ok",
            "type": "contains",
            "parameters": {"value": "OK"},
        },
    )
    args = ["-s", test_set["name"], "-m", lab.model_name]
    args += ["--metric", reference["name"], "--metric", polite["name"]]

    def asked(request: dict[str, Any]) -> str:
        return message_text(request["messages"][-1])

    # Cases 0-9 fail in both runs, for another metric in each: the overall pass rate does not
    # move, says-the-case improves and says-ok regresses.
    lab.fake.reply = lambda request: "nope OK" if _case(request) < 10 else asked(request) + " OK"
    baseline = _run(lab, tmp_path / "baseline.json", *args)["run"]["id"]
    lab.fake.reply = lambda request: (
        asked(request) if _case(request) < 10 else asked(request) + " OK"
    )
    gated = lab.assay("run", *args, "--baseline", baseline, "--json", str(tmp_path / "c.json"))
    assert gated.returncode == 1, gated.stdout + gated.stderr  # the server's gate failed
    candidate = json.loads((tmp_path / "c.json").read_text())["run"]
    assert candidate["gate_result"]["comparison"]["verdict"] != "regressed"  # not overall

    compared = lab.assay("compare", candidate["id"], "--baseline", baseline)
    assert compared.returncode == 1, compared.stdout + compared.stderr
    assert "FAILED (exit 1): regressed: says-ok" in compared.stdout
    assert "says-the-case" not in compared.stdout.split("FAILED (exit 1)")[1]

    # Nothing changed, on too few cases to show it at the default margin: inconclusive, which
    # leaves a gate undecided (exit 2); at a margin of 25 points, equivalent.
    again = _run(lab, tmp_path / "again.json", *args)["run"]["id"]
    unsure = lab.assay("compare", again, "--baseline", candidate["id"])
    assert unsure.returncode == 2, unsure.stdout + unsure.stderr
    assert "NOT JUDGED (exit 2): inconclusive: " in unsure.stdout
    wide = lab.assay("compare", again, "--baseline", candidate["id"], "--min-effect", "0.25")
    assert wide.returncode == 0, wide.stdout + wide.stderr
    assert "PASSED (exit 0)" in wide.stdout


def test_compare_passes_a_candidate_that_only_improved_as_the_gate_does(
    lab: Lab, tmp_path: Path
) -> None:
    """Two cases of 200 fixed, nothing broken: inconclusive (the interval reaches past +2
    points) but shown no worse, which passes a gate failing on regression; it held CI as
    undecided (exit 2)."""
    test_set = lab.test_set(200)
    metric = lab.metric()
    args = ["-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    lab.fake.reply = lambda request: (
        "nope" if _case(request) in (3, 7) else (message_text(request["messages"][-1]))
    )
    baseline = _run(lab, tmp_path / "baseline.json", *args)["run"]["id"]
    lab.fake.reply = lambda request: message_text(request["messages"][-1])
    gated = lab.assay("run", *args, "--baseline", baseline, "--json", str(tmp_path / "c.json"))
    assert gated.returncode == 0, gated.stdout + gated.stderr
    candidate = json.loads((tmp_path / "c.json").read_text())["run"]
    assert candidate["gate_result"]["status"] == "passed"
    assert candidate["gate_result"]["comparison"]["overall"]["verdict"] == "inconclusive"
    compared = lab.assay("compare", candidate["id"], "--baseline", baseline)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert "PASSED (exit 0)" in compared.stdout


def test_the_summary_line_gives_the_servers_pass_rate_with_repetitions(lab: Lab) -> None:
    test_set = lab.test_set(2)
    metric = lab.metric()
    # Case 0 passes, case 1 fails, and one of the six calls errors. The pass rate is the mean
    # over cases of each one's share of passing repetitions: (1 + 0) / 2, whichever errored
    # (passed / rated results would be 2/5 or 3/5).
    lab.fake.reply = lambda request: "no" if _case(request) == 1 else "case 0"
    lab.fake.enqueue(Fault.http(400))
    done = lab.assay(
        "run",
        "-s",
        test_set["name"],
        "-m",
        lab.model_name,
        "--metric",
        metric["name"],
        "--repetitions",
        "3",
        "--max-error-rate",
        "0.5",
        "--min-pass-rate",
        "0.55",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "pass rate 50.0% is below the floor of 55.0%" in done.stdout  # the gate's
    assert re.search(r"1 errored of \d+ \(pass rate 50\.0%\)", done.stdout)  # the summary's


def test_compare_is_undecided_when_the_run_errs_more_than_its_baseline_as_the_gate_is(
    lab: Lab, tmp_path: Path
) -> None:
    """16 of 200 calls error (8%, under the gate's max_error_rate of 10%), every other case
    passes as in the baseline: the 184 rated cases compare equivalent, but the errored ones
    could hide a regression, and the gate is undecided; `assay compare` exited 0."""
    test_set = lab.test_set(200)
    metric = lab.metric()
    args = ["-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    lab.fake.reply = lambda request: message_text(request["messages"][-1])
    baseline = _run(lab, tmp_path / "baseline.json", *args)["run"]["id"]
    for _ in range(16):
        lab.fake.enqueue(Fault.http(400))
    gated = lab.assay("run", *args, "--baseline", baseline, "--json", str(tmp_path / "c.json"))
    assert gated.returncode == 2, gated.stdout + gated.stderr
    candidate = json.loads((tmp_path / "c.json").read_text())["run"]
    assert candidate["counts"]["errored"] == 16
    assert candidate["gate_result"]["status"] == "undecided"
    assert candidate["gate_result"]["comparison"]["verdict"] == "equivalent"

    compared = lab.assay("compare", candidate["id"], "--baseline", baseline)
    assert compared.returncode == 2, compared.stdout + compared.stderr
    assert f"Against baseline {baseline}: equivalent" in compared.stdout
    assert (
        "NOT JUDGED (exit 2): 16 of 200 results errored (8.0%), against 0.0% of the"
        " baseline's: more than 2 points above"
    ) in " ".join(compared.stdout.split())
    # 8 points more errors are inside a margin of 25: as a gate with it, the run passes.
    wide = lab.assay("compare", candidate["id"], "--baseline", baseline, "--min-effect", "0.25")
    assert wide.returncode == 0, wide.stdout + wide.stderr


def test_compare_is_undecided_past_the_gates_share_of_errors_as_the_gate_is(
    lab: Lab, tmp_path: Path
) -> None:
    """Both runs err on 30 of 200 cases (15%, past the gate's max_error_rate of 10%): no more
    than the baseline, but too many for any verdict; `assay compare` exited 0 where the gate
    was undecided."""
    test_set = lab.test_set(200)
    metric = lab.metric()
    args = ["-s", test_set["name"], "-m", lab.model_name, "--metric", metric["name"]]
    lab.fake.reply = lambda request: message_text(request["messages"][-1])
    for _ in range(30):
        lab.fake.enqueue(Fault.http(400))
    first = lab.assay("run", *args, "--json", str(tmp_path / "baseline.json"), "-q")
    assert first.returncode == 2, first.stdout + first.stderr  # its own gate: too many errors
    baseline = json.loads((tmp_path / "baseline.json").read_text())["run"]["id"]
    for _ in range(30):
        lab.fake.enqueue(Fault.http(400))
    gated = lab.assay("run", *args, "--baseline", baseline, "--json", str(tmp_path / "c.json"))
    assert gated.returncode == 2, gated.stdout + gated.stderr
    candidate = json.loads((tmp_path / "c.json").read_text())["run"]
    reasons = candidate["gate_result"]["reasons"]
    assert "30 of 200 results errored, above the allowed share of 10%" in reasons

    compared = lab.assay("compare", candidate["id"], "--baseline", baseline)
    assert compared.returncode == 2, compared.stdout + compared.stderr
    assert "30 of 200 results errored, above the allowed share of 10%" in " ".join(
        compared.stdout.split()
    )
