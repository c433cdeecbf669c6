"""Which profile the command takes, and where its key may go: a profile ASSAY_PROFILE names
that does not exist is an error, as with --profile; its URL written another way (the scheme or
host's case, the default port, a trailing slash) is still its own server."""

from __future__ import annotations

import json

import pytest

from cli.config import same_server
from tests.cli.conftest import Lab

pytestmark = pytest.mark.slow


def test_assay_profile_naming_no_profile_is_an_error_not_no_profile(lab: Lab) -> None:
    lab.home.mkdir(parents=True, exist_ok=True)
    profile = {"url": lab.server.url, "api_key": lab.api_key}
    (lab.home / "profiles.json").write_text(json.dumps({"staging": profile}))
    mistyped = lab.assay("runs", "list", ASSAY_PROFILE="stagin", ASSAY_API_KEY="", ASSAY_URL="")
    assert mistyped.returncode == 3, mistyped.stdout + mistyped.stderr
    assert "no profile named 'stagin' (given by ASSAY_PROFILE)" in mistyped.stderr
    named = lab.assay("runs", "list", ASSAY_PROFILE="staging", ASSAY_API_KEY="", ASSAY_URL="")
    assert named.returncode == 0, named.stdout + named.stderr


def test_a_profile_url_written_another_way_is_its_own_server(lab: Lab) -> None:
    lab.home.mkdir(parents=True, exist_ok=True)
    written = lab.server.url.replace("http://", "HTTP://") + "/"
    (lab.home / "profiles.json").write_text(
        json.dumps({"default": {"url": written, "api_key": lab.api_key}})
    )
    listed = lab.assay("runs", "list", ASSAY_API_KEY="", ASSAY_URL=lab.server.url)
    assert listed.returncode == 0, listed.stdout + listed.stderr


def test_one_server_is_one_root_however_written() -> None:
    assert same_server("http://A.example", "http://a.example:80/")
    assert same_server("HTTPS://a.example:443/assay/", "https://a.EXAMPLE/assay")
    for elsewhere in (
        "https://a.example",
        "http://a.example:8080",
        "http://b.example",
        "http://a.example.evil.example",
        "http://a.example/other",
        "not a url at all",
    ):
        assert not same_server("http://a.example", elsewhere), elsewhere
