"""`assay compare` names the run that lacks a metric the gate fails on, as the server's gate
does: the baseline when only this run evaluated it, this run when it has no evaluation of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.cli.conftest import Lab

pytestmark = pytest.mark.slow


def _set_of(lab: Lab, test_ids: list[str], name: str) -> None:
    lab.post("/test-sets", {"project_id": lab.project_id, "name": name, "test_ids": test_ids})


def _run(lab: Lab, folder: Path, config: dict[str, object]) -> str:
    folder.mkdir()
    (folder / "assay.yaml").write_text(yaml.safe_dump({**config, "json": "report.json"}))
    done = lab.assay("run", "-q", cwd=folder)
    assert done.returncode in (0, 2), done.stdout + done.stderr
    return str(yaml.safe_load((folder / "report.json").read_text())["run"]["id"])


def test_compare_names_the_run_without_the_listed_metric(lab: Lab, tmp_path: Path) -> None:
    every = lab.metric()["name"]  # the answer contains the expected output
    asserted = lab.post(
        "/metrics",
        {
            "project_id": lab.project_id,
            "name": f"asserted-{tmp_path.name[-6:]}",
            "type": "contains",
            "parameters": {"from_test": "assert:contains"},
        },
    )["name"]
    # Only the last test gives `asserted` its value: a set without it never evaluates it.
    cases: list[dict[str, object]] = [
        {"input": f"case {i}", "expected_output": f"case {i}"} for i in range(10)
    ]
    cases.append(
        {
            "input": "Paris",
            "expected_output": "Paris",
            "metadata": {"assert:contains": {"value": "Paris"}},
        }
    )
    ids = lab.post("/tests/bulk", {"project_id": lab.project_id, "tests": cases})["ids"]
    whole, part = f"whole-{tmp_path.name[-6:]}", f"part-{tmp_path.name[-6:]}"
    _set_of(lab, ids, whole)
    _set_of(lab, ids[:10], part)
    common = {"model": lab.model_name}

    only_every = _run(lab, tmp_path / "a", {**common, "test_set": whole, "metrics": [every]})
    gate = {"baseline": only_every, "fail_on": [asserted]}
    both = _run(
        lab,
        tmp_path / "b",
        {**common, "test_set": whole, "metrics": [every, asserted], "gate": gate},
    )
    compared = lab.assay("compare", both, "--baseline", only_every)
    assert compared.returncode == 2, compared.stdout + compared.stderr
    assert f"{asserted}: not compared (the baseline has no such metric)" in compared.stdout

    gate = {"baseline": both, "fail_on": [asserted]}
    lacking = _run(
        lab,
        tmp_path / "c",
        {**common, "test_set": part, "metrics": [every, asserted], "gate": gate},
    )
    compared = lab.assay("compare", lacking, "--baseline", both)
    assert compared.returncode == 2, compared.stdout + compared.stderr
    assert f"{asserted}: not compared (this run has no evaluation of it)" in compared.stdout
    assert "the baseline has no such metric" not in compared.stdout
