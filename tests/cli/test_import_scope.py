"""Writing into a test set by name: only in the project meant, all or nothing, said in full;
and where the command's server and profile come from."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import yaml

from tests.cli.conftest import Lab
from tests.cli.proxy import Proxy, answer_lost, held_answer

pytestmark = pytest.mark.slow

IMPORT = r"/api/v1/test-sets/[^/]+/import"
PROMPTFOO = (
    "prompts: ['Answer: {{question}}']\n"
    "tests:\n"
    "  - vars: {question: q1}\n"
    "    assert: [{type: contains, value: q1}]\n"
    "  - vars: {question: q2}\n"
    "    assert: [{type: contains, value: q2}]\n"
)


def _repository(tmp_path: Path, lab: Lab, test_set: str, **more: object) -> None:
    (tmp_path / "promptfooconfig.yaml").write_text(PROMPTFOO)
    config = {
        "test_set": {"name": test_set, "file": "promptfooconfig.yaml"},
        "model": lab.model_name,
        **more,
    }
    (tmp_path / "assay.yaml").write_text(yaml.safe_dump(config))


def test_a_file_named_without_its_project_is_synced_only_in_an_organization_of_one(
    lab: Lab, tmp_path: Path
) -> None:
    """An assay.yaml with no `project:` synced its file into a same-named set of any project,
    removing the tests it does not hold."""
    _repository(tmp_path, lab, "smoke")
    alone = lab.assay("run", cwd=tmp_path)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert "to test set 'smoke' of project 'cli': 2 tests (2 new)" in alone.stdout
    # The import's notes, as `assay import` prints them.
    assert "note: prompts: 1 prompt(s) are not imported" in alone.stdout

    other = lab.post("/projects", {"name": "other"})
    kept = lab.post("/tests/bulk", {"project_id": other["id"], "tests": [{"input": "kept"}]})
    body = {"project_id": other["id"], "name": "theirs", "test_ids": kept["ids"]}
    theirs = lab.post("/test-sets", body)
    _repository(tmp_path, lab, "theirs")
    refused = lab.assay("run", cwd=tmp_path)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "The organization has 2 projects" in refused.stderr
    assert "`project:` in assay.yaml" in refused.stderr
    imported = lab.assay(
        "import", str(tmp_path / "promptfooconfig.yaml"), "--test-set", "theirs", "--sync"
    )
    assert imported.returncode == 3, imported.stdout + imported.stderr
    assert lab.api.get(f"/test-sets/{theirs['id']}").json()["test_count"] == 1  # untouched

    _repository(tmp_path, lab, "theirs", project="other")
    named = lab.assay("run", "-q", cwd=tmp_path)
    assert named.returncode == 0, named.stdout + named.stderr
    assert lab.api.get(f"/test-sets/{theirs['id']}").json()["test_count"] == 2


def test_a_glob_of_test_files_is_the_servers_word_not_a_file_not_found(
    lab: Lab, tmp_path: Path
) -> None:
    config = tmp_path / "promptfooconfig.yaml"
    config.write_text("tests: file://tests/*.yaml\n")
    done = lab.assay("import", str(config), "--test-set", "globbed", "--create")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "globs are not read" in done.stderr and "cannot read" not in done.stderr


def test_an_append_whose_answer_was_lost_says_it_may_have_been_applied(
    lab: Lab, proxy: Proxy, tmp_path: Path
) -> None:
    """Retrying it appends the cases again: the command says so before a retry does."""
    test_set = lab.test_set(1)
    cases = tmp_path / "cases.jsonl"
    cases.write_text(json.dumps({"input": "q", "expected": "q"}) + "\n")
    proxy.answer(IMPORT, answer_lost(1))
    done = lab.assay("import", str(cases), "--test-set", test_set["name"], ASSAY_URL=proxy.url)
    assert done.returncode == 4, done.stdout + done.stderr
    assert "the import may have been applied: check the test set before retrying" in done.stderr
    assert lab.api.get(f"/test-sets/{test_set['id']}").json()["test_count"] == 2  # it was


@pytest.mark.parametrize("interrupt", [signal.SIGINT, signal.SIGTERM])
def test_an_import_interrupted_leaves_no_set_it_created_and_says_so(
    lab: Lab, proxy: Proxy, tmp_path: Path, interrupt: signal.Signals
) -> None:
    cases = tmp_path / "cases.jsonl"
    cases.write_text(json.dumps({"input": "q", "expected": "q"}) + "\n")
    proxy.answer(IMPORT, held_answer(30))
    args = ["import", str(cases), "--test-set", "interrupted", "--create"]
    with lab.running(*args, ASSAY_URL=proxy.url) as process:
        proxy.until_answered(process, "no import was sent")
        process.send_signal(interrupt)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 130, out + err
    assert err == "assay: interrupted\n"
    names = [item["name"] for item in lab.api.get("/test-sets").json()["items"]]
    assert "interrupted" not in names


def test_login_saves_the_profile_assay_profile_names(lab: Lab) -> None:
    """Every other command reads ASSAY_PROFILE; login wrote `default` whatever it said."""
    url = lab.server.url
    done = lab.assay("login", "--url", url, "--api-key", lab.api_key, ASSAY_PROFILE="ci")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "profile 'ci' saved" in done.stdout
    assert list(json.loads((lab.home / "profiles.json").read_text())) == ["ci"]


def test_an_assay_url_set_empty_beside_a_key_is_a_usage_error(lab: Lab, tmp_path: Path) -> None:
    """`ASSAY_URL: ${{ vars.ASSAY_URL }}` with no such variable is "": the key went to
    assay.yaml's `server`."""
    (tmp_path / "assay.yaml").write_text(yaml.safe_dump({"server": lab.server.url}))
    done = lab.assay("runs", "list", cwd=tmp_path, ASSAY_URL="")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "ASSAY_URL is set but empty" in done.stderr
    assert lab.assay("runs", "list", cwd=tmp_path).returncode == 0  # ASSAY_URL set: its own
