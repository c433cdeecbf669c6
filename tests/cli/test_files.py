"""`assay import` and a repository's assay.yaml: files in, synced by content."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.cli.conftest import Lab

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_import_sends_a_promptfoo_config_with_the_files_it_names(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cases.csv").write_text(
        "question,__expected\nWho wrote Hamlet?,icontains: shakespeare\nSay hi,javascript: 1\n"
    )
    config = tmp_path / "promptfooconfig.yaml"
    config.write_text(
        "tests:\n"
        "  - vars: {question: 'Capital of France?'}\n"
        "    assert: [{type: contains, value: Paris}]\n"
        "  - file://./data/cases.csv\n"
    )
    done = lab.assay(
        "import", str(config), "--test-set", "imported", "--create", "--project", "cli"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Created test set 'imported'" in done.stdout
    assert "Imported 3 tests into 'imported' (3 in the set)" in done.stdout
    assert "metric 'contains' (contains): created" in done.stdout
    assert "metric 'icontains' (icontains): created" in done.stdout
    assert "not imported: 1 'javascript' assertion(s) in data/cases.csv (lines 3)" in done.stdout

    missing = lab.assay("import", str(tmp_path / "nope.csv"), "--test-set", "imported")
    assert missing.returncode == 3
    assert "cannot read" in missing.stderr


def test_assay_yaml_runs_with_no_options_and_syncs_its_file_by_content(
    lab: Lab, tmp_path: Path
) -> None:
    metric = lab.metric("echoes")
    (tmp_path / "evals").mkdir()
    cases = tmp_path / "evals" / "cases.jsonl"
    cases.write_text(
        "".join(json.dumps({"input": f"q{i}", "expected": f"q{i}"}) + "\n" for i in range(5))
    )
    (tmp_path / "assay.yaml").write_text(
        yaml.safe_dump(
            {
                "project": "cli",
                "test_set": {"name": "from-repo", "file": "evals/cases.jsonl"},
                "model": lab.model_name,
                "metrics": [metric["name"]],
                "gate": {"fail_on": "regression", "min_pass_rate": 0.8},
                "junit": "reports/junit.xml",
                "json": "reports/report.json",
            }
        )
    )
    first = lab.assay("run", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Synced" in first.stdout and "5 tests (5 new)" in first.stdout
    assert (tmp_path / "reports" / "junit.xml").exists()
    first_run = json.loads((tmp_path / "reports" / "report.json").read_text())["run"]

    second = lab.assay("run", "-q", cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Synced" not in second.stdout  # unchanged: nothing written
    second_run = json.loads((tmp_path / "reports" / "report.json").read_text())["run"]
    assert second_run["test_set_version_id"] == first_run["test_set_version_id"]

    cases.write_text(cases.read_text() + json.dumps({"input": "q5", "expected": "q5"}) + "\n")
    third = lab.assay("run", "-q", cwd=tmp_path)
    assert third.returncode == 0, third.stdout + third.stderr
    third_run = json.loads((tmp_path / "reports" / "report.json").read_text())["run"]
    assert third_run["test_set_version"] == first_run["test_set_version"] + 1
    assert third_run["counts"]["total"] == 6

    # Another set named on the command line runs as it is: assay.yaml's file is not synced
    # into it (it would have replaced its tests with the repository's).
    other = lab.test_set(2)
    fourth = lab.assay("run", "-q", "--test-set", other["name"], cwd=tmp_path)
    assert fourth.returncode == 0, fourth.stdout + fourth.stderr
    assert "Synced" not in fourth.stdout
    fourth_run = json.loads((tmp_path / "reports" / "report.json").read_text())["run"]
    assert (fourth_run["test_set_id"], fourth_run["counts"]["total"]) == (other["id"], 2)


def test_watch_and_the_other_commands_read_assay_yaml_as_run_does(lab: Lab, tmp_path: Path) -> None:
    """`assay watch` exits as `assay run` would: with assay.yaml's gate and reports; and every
    command finds the server assay.yaml names."""
    test_set = lab.test_set(3)
    metric = lab.metric()
    lab.fake.reply = lambda request: "no"  # every case fails
    (tmp_path / "assay.yaml").write_text(
        yaml.safe_dump(
            {
                "server": lab.server.url,
                "test_set": test_set["name"],
                "model": lab.model_name,
                "metrics": [metric["name"]],
                "gate": {"fail_on": "failures"},
                "json": "report.json",
            }
        )
    )
    ran = lab.assay("run", "-q", cwd=tmp_path, ASSAY_URL=None)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    report = tmp_path / "report.json"
    run_id = json.loads(report.read_text())["run"]["id"]
    report.unlink()
    watched = lab.assay("watch", run_id, "-q", cwd=tmp_path, ASSAY_URL=None)
    assert watched.returncode == 1, watched.stdout + watched.stderr
    assert "3 case(s) failed" in watched.stdout
    assert json.loads(report.read_text())["run"]["id"] == run_id
    # A flag still wins over the file.
    never = lab.assay("watch", run_id, "-q", "--fail-on", "never", cwd=tmp_path, ASSAY_URL=None)
    assert never.returncode == 0, never.stdout + never.stderr
    listed = lab.assay("runs", "list", cwd=tmp_path, ASSAY_URL=None)
    assert listed.returncode == 0 and run_id[:8] in listed.stdout, listed.stdout + listed.stderr


def test_a_wrong_assay_yaml_is_exit_3_naming_the_place(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "assay.yaml").write_text("test_set: smoke\ngate:\n  fail_on: sometimes\n")
    done = lab.assay("run", cwd=tmp_path)
    assert done.returncode == 3
    assert "assay.yaml: gate.fail_on: 'sometimes' is not one of" in done.stderr


def test_an_assay_yaml_that_is_no_yaml_is_one_line_saying_where(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "assay.yaml").write_text("test_set: smoke\nmetrics: [a, b\nmodel: m\n")
    done = lab.assay("run", cwd=tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr == (
        "assay: assay.yaml is not valid YAML: expected ',' or ']', but got ':' (line 3, column 6)\n"
    )


def test_the_documented_example_is_valid_against_the_schema() -> None:
    schema = json.loads((ROOT / "cli" / "assay.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    example = yaml.safe_load((ROOT / "docs" / "assay.example.yaml").read_text())
    jsonschema.Draft202012Validator(schema).validate(example)


def test_tests_deleted_from_the_synced_file_fail_a_gate_with_max_dropped(
    lab: Lab, tmp_path: Path
) -> None:
    metric = lab.metric("echoes")
    cases = tmp_path / "cases.jsonl"
    lines = [json.dumps({"input": f"d{i}", "expected": f"d{i}"}) + "\n" for i in range(6)]
    cases.write_text("".join(lines))
    config = {
        "project": "cli",
        "test_set": {"name": "dropping", "file": "cases.jsonl"},
        "model": lab.model_name,
        "metrics": [metric["name"]],
        "json": "report.json",
    }
    (tmp_path / "assay.yaml").write_text(yaml.safe_dump(config))
    first = lab.assay("run", "-q", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    baseline = json.loads((tmp_path / "report.json").read_text())["run"]["id"]

    cases.write_text("".join(lines[2:]))  # two tests deleted
    config["gate"] = {"baseline": baseline, "fail_on": "never", "max_dropped": 1}
    (tmp_path / "assay.yaml").write_text(yaml.safe_dump(config))
    strict = lab.assay("run", "-q", cwd=tmp_path)
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert "2 of the baseline's tests are not in this run" in strict.stdout
    # `assay compare` holds the run's gate's max_dropped too.
    dropped = json.loads((tmp_path / "report.json").read_text())["run"]["id"]
    compared = lab.assay("compare", dropped, "--baseline", baseline)
    assert compared.returncode == 1, compared.stdout + compared.stderr
    assert "2 of the baseline's tests are not in this run, more than the 1 allowed" in " ".join(
        compared.stdout.split()
    )
    lenient = lab.assay("run", "-q", "--max-dropped", "2", cwd=tmp_path)
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr
