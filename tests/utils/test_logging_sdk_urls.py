"""At DEBUG the provider SDKs log every request's whole URL, and a model's base URL may carry a
token in its path or query: their loggers are held to WARNING, as the HTTP clients' are."""

from __future__ import annotations

import logging

import pytest

from providers.config import TargetRequest
from providers.errors import TargetError
from providers.targets import call_target
from tests.fakes.openai_server import FakeOpenAI
from tests.providers.support import target_config
from utils.logging import configure_logging

PATH_TOKEN = "PATHTOKEN0123"
QUERY_TOKEN = "QUERYTOKEN0456"


async def test_no_sdk_logs_a_base_urls_token_at_debug(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeOpenAI() as server:
        base_url = f"{server.url}/v1/{PATH_TOKEN}?tok={QUERY_TOKEN}"
        configure_logging("json", "DEBUG")
        try:
            logging.getLogger("tests.probe").debug("debug lines are written")
            for provider in ("anthropic", "groq", "mistral", "google"):
                config = target_config(provider, base_url, model="fake-1")
                with pytest.raises(TargetError) as failed:
                    await call_target(
                        config, TargetRequest(input="Hi"), allow_private_networks=True
                    )
                assert failed.value.status == 404  # asked, at a path the fake does not serve
        finally:
            configure_logging("console")
    logged = capsys.readouterr().err
    assert "debug lines are written" in logged
    assert PATH_TOKEN not in logged
    assert QUERY_TOKEN not in logged
