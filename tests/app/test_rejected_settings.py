"""A rejected setting stops every command with one line per error, naming the variable and the
reason, never the value given (it may be a secret on its way to the container's logs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET = "short-secret"  # a metrics token must be 16 characters or more


def _run(arguments: list[str], tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ASSAY_")}
    env.pop("PORT", None)
    env.update(ASSAY_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(ROOT), **settings)
    return subprocess.run(
        [sys.executable, "-m", *arguments],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        (["app", "serve"], 2),
        (["app", "worker"], 2),
        (["app", "migrate"], 2),
        (["app", "reencrypt-secrets"], 2),
        # Docker reserves a healthcheck's exit code 2: not ready is 1.
        (["app.ready", "--database"], 1),
    ],
)
def test_a_rejected_setting_is_one_line_without_its_value(tmp_path, arguments, code) -> None:
    done = _run(arguments, tmp_path, ASSAY_METRICS_TOKEN=SECRET)
    assert done.returncode == code, done.stderr
    assert done.stderr.splitlines() == [
        "ASSAY_METRICS_TOKEN: at least 16 characters: it is the only guard of /metrics"
    ]
    assert SECRET not in done.stdout + done.stderr


def test_every_rejected_setting_is_named_with_its_own_variable(tmp_path) -> None:
    """From the environment and from .env alike; PORT has no prefix."""
    (tmp_path / ".env").write_text("ASSAY_WEBHOOK_RETRY_SECONDS=5,-1\n")
    done = _run(["app", "serve"], tmp_path, PORT="eighty", ASSAY_LOG_LEVEL="LOUD")
    assert done.returncode == 2, done.stderr
    lines = sorted(done.stderr.splitlines())
    assert [line.split(":", 1)[0] for line in lines] == [
        "ASSAY_LOG_LEVEL",
        "ASSAY_WEBHOOK_RETRY_SECONDS",
        "PORT",
    ], lines
    assert "eighty" not in done.stderr
    assert "LOUD" not in done.stderr
    assert "Traceback" not in done.stderr
