"""What of a URL may be its credential: the one rule by which error pages of HTTP targets and
webhook receivers' answers are rid of the URL they repeat."""

from __future__ import annotations

from utils.url_redaction import url_secrets


def test_a_urls_path_and_query_and_their_token_like_pieces_are_its_secrets() -> None:
    secrets = url_secrets("https://fn.example.net/api/T0KENabcdef99/chat?code=Azure%2BKey+123&v=1")
    assert {
        "/api/T0KENabcdef99/chat?code=Azure%2BKey+123&v=1",  # whole
        "/api/T0KENabcdef99/chat",
        "code=Azure%2BKey+123&v=1",
        "T0KENabcdef99",  # a piece of the path
        "Azure%2BKey+123",  # a query value as written,
        "Azure+Key+123",  # percent-decoded,
        "Azure+Key 123",  # and as a form reads it
    } <= secrets
    # Short pieces are words, not tokens; the host is no secret.
    assert not {"api", "chat", "v=1", "1", "fn.example.net"} & secrets


def test_a_bare_query_piece_counts_as_a_value_and_a_url_without_path_has_no_secrets() -> None:
    assert "s3cr3tT0ken" in url_secrets("https://h.example/hook?s3cr3tT0ken")
    assert url_secrets("https://h.example") == set()
    assert url_secrets("https://h.example/") == set()


def test_a_path_written_in_words_keeps_them_out_of_its_secrets() -> None:
    """An error saying "nothing at $.answer in the endpoint's answer" lost both words to the
    path /answer; a host support.example.com lost its first label to the path /support/chat."""
    secrets = url_secrets("https://support.example.com/support/chat-completions/answer")
    assert not {"support", "chat-completions", "answer"} & secrets
    assert "/support/chat-completions/answer" in secrets  # the whole path is still one
    tokens = url_secrets(f"https://h.example/hooks/{'x' * 25}/T000B000/abcdef1/Key-Of-Team")
    assert {"x" * 25, "T000B000", "abcdef1", "Key-Of-Team"} <= tokens
