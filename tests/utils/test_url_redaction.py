"""What an error may say of a URL: scheme, host, port and path, never a query value, a user part
or a fragment; and the transport's own connection errors, whose text names the URL, say no
more than that."""

from __future__ import annotations

import socket

import pytest

from utils import transport
from utils.url_redaction import redact_url, redact_urls, shown_origin


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://api.example.com/v1", "https://api.example.com/v1"),
        ("https://api.example.com/v1?key=SECRET", "https://api.example.com/v1?key=[redacted]"),
        (
            "http://api.example.com:8080/v1/chat?key=SECRET&model=a;b=SECRET2#SECRET3",
            "http://api.example.com:8080/v1/chat?key=[redacted]&model=[redacted];b=[redacted]"
            "#[redacted]",
        ),
        ("https://user:SECRET@api.example.com/v1", "https://[redacted]@api.example.com/v1"),
        ("https://a:b@c:SECRET@api.example.com", "https://[redacted]@api.example.com"),
        # A password holding a "/", as clients print it.
        ("https://user:SEC/RET@api.example.com/v1", "https://[redacted]@api.example.com/v1"),
        ("https://api.example.com?SECRET", "https://api.example.com?[redacted]"),
        ("https://api.example.com/v1?", "https://api.example.com/v1?"),
        (
            "https://[2001:db8::1]:8443/v1?token=SECRET",
            "https://[2001:db8::1]:8443/v1?token=[redacted]",
        ),
    ],
)
def test_a_url_keeps_what_locates_it_and_loses_what_may_be_a_secret(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_without_its_path_a_url_shows_its_host_only() -> None:
    slack = "https://hooks.slack.com/services/T000/B000/SECRET?x=SECRET2"
    assert redact_url(slack, keep_path=False) == "https://hooks.slack.com/…"
    assert redact_url("http://u:SECRET@h.example:81", keep_path=False) == (
        "http://[redacted]@h.example:81/…"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/hook/user@PATHSECRET/MORE",  # a path's own "@"
        "https://user:SEC/RET@api.example.com/v1",  # a password holding a "/"
    ],
)
def test_without_its_path_a_url_whose_at_sign_follows_a_slash_shows_no_host(url: str) -> None:
    """Which of the two it is cannot be told: what follows the "@" may be the path."""
    assert redact_url(url, keep_path=False) == "https://[redacted]/…"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://hooks.example.com/services/T000@PATHSECRET?token=Q",
            "https://hooks.example.com/…",
        ),
        ("https://[2606:4700::1111]:8443/hook", "https://[2606:4700::1111]:8443/…"),
        ("http://h.example:81", "http://h.example:81/…"),
    ],
)
def test_a_stored_url_is_shown_by_its_origin(url: str, shown: str) -> None:
    assert shown_origin(url) == shown


def test_every_url_in_a_text_is_redacted_and_the_rest_kept() -> None:
    text = (
        "('connection error', {'causes': [{'message': 'error sending request for url "
        "(http://127.0.0.1:9/v1?key=SECRET)'}, {'message': 'tcp connect error'}]}), "
        'then "https://x.example/p?token=SECRET2", and https://y.example/q?a=SECRET3.'
    )
    redacted = redact_urls(text)
    assert "SECRET" not in redacted
    assert "(http://127.0.0.1:9/v1?key=[redacted])'}" in redacted
    assert '"https://x.example/p?token=[redacted]"' in redacted
    assert redacted.endswith("https://y.example/q?a=[redacted].")
    assert "tcp connect error" in redacted
    assert redact_urls("no address here: Connection refused") == (
        "no address here: Connection refused"
    )


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_connection_error_does_not_show_the_query_string() -> None:
    """pyreqwest's text holds the whole URL it could not reach: a result's error (seen by
    everyone in the project) says where, by the endpoint's origin: not with which token,
    whether in its query or its path."""
    port = _closed_port()
    url = f"http://127.0.0.1:{port}/v1/chat?key=QUERYSECRET&region=eu"
    with pytest.raises(transport.TransportError) as failed:
        await transport.send("POST", url, body="{}", headers={}, seconds=5)
    message = str(failed.value)
    assert failed.value.kind == "connection_error"
    assert "QUERYSECRET" not in message and "/v1/chat" not in message
    assert f"http://127.0.0.1:{port}/…" in message
    assert "Connection refused" in message


async def test_a_connection_error_does_not_show_a_user_part() -> None:
    port = _closed_port()
    url = f"http://someone:USERSECRET@127.0.0.1:{port}/v1?token=TOKENSECRET"
    with pytest.raises(transport.TransportError) as failed:
        await transport.send("GET", url, body=None, headers={}, seconds=5)
    message = str(failed.value)
    assert "USERSECRET" not in message and "TOKENSECRET" not in message
    assert f"http://127.0.0.1:{port}/…" in message
