"""A new API key is always read as an API key, never as a refresh token."""

from __future__ import annotations

import secrets

import pytest

from utils import auth


def test_a_random_part_that_would_read_as_a_refresh_token_is_drawn_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    draws = iter(["rt_" + "a" * 40, "b" * 43])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda _: next(draws))
    key = auth.new_api_key()
    assert key == auth.API_KEY_PREFIX + "b" * 43
    assert auth.looks_like_api_key(key)
