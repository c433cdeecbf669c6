"""`assay compare` exits as the run's gate would: not judged (2), not "fix the job" (3), when
the runs share no case or either has not completed; and a `fail_on: never` gate is decided by
its floors beside a baseline it cannot be compared with."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests.cli.conftest import Lab

pytestmark = pytest.mark.slow


def _ran(lab: Lab, report: Path, *args: str) -> tuple[int, str]:
    done = lab.assay("run", *args, "--json", str(report), "-q")
    assert report.exists(), done.stdout + done.stderr
    return done.returncode, str(json.loads(report.read_text())["run"]["id"])


def test_runs_sharing_no_case_are_not_judged_and_a_never_gate_holds_its_floors(
    lab: Lab, tmp_path: Path
) -> None:
    metric = lab.metric()["name"]
    earlier, later = lab.test_set(5, prefix="earlier"), lab.test_set(5, prefix="later")
    target = ["-m", lab.model_name, "--metric", metric]
    code, baseline = _ran(lab, tmp_path / "b.json", "-s", earlier["name"], *target)
    assert code == 0
    never = ["--baseline", baseline, "--fail-on", "never", "--min-pass-rate", "0.9"]
    code, candidate = _ran(lab, tmp_path / "c.json", "-s", later["name"], *target, *never)
    assert code == 0, (tmp_path / "c.json").read_text()

    compared = lab.assay("compare", candidate, "--baseline", baseline)
    assert compared.returncode == 2, compared.stdout + compared.stderr
    assert (
        "NOT JUDGED (exit 2): no comparison with the baseline: the runs have no case in common"
        in " ".join(compared.stdout.split())
    ), compared.stdout


def _ended(lab: Lab, run_id: str) -> None:
    deadline = time.monotonic() + 60
    while lab.api.get(f"/runs/{run_id}").json()["status"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_compare_is_not_judged_while_either_run_is_under_way(lab: Lab) -> None:
    test_set, metric = lab.test_set(2), lab.metric()
    model = next(m for m in lab.api.get("/models").json()["items"] if m["name"] == lab.model_name)
    body = {"test_set_id": test_set["id"], "target_model_id": model["id"]}
    body["metric_ids"] = [metric["id"]]
    done = lab.post("/runs", body, expect=202)["id"]
    _ended(lab, done)
    chosen = lab.api.put(f"/projects/{lab.project_id}/baseline", json={"run_id": done})
    assert chosen.status_code == 200, chosen.text
    lab.fake.latency = 30  # the run below stays under way while it is compared
    under_way = lab.post("/runs", {**body, "concurrency": 1}, expect=202)["id"]
    try:
        for args, which in (
            ((under_way, "--baseline", done), "the run"),
            ((under_way, "--baseline", "project"), "the run"),
            ((done, "--baseline", under_way), "the baseline"),
        ):
            compared = lab.assay("compare", *args)
            assert compared.returncode == 2, compared.stdout + compared.stderr
            assert re.search(
                rf"NOT JUDGED \(exit 2\): {which} has not completed: it is (queued|running)",
                compared.stdout,
            ), compared.stdout
    finally:
        lab.api.post(f"/runs/{under_way}/cancel")
