"""What a message may say of a URL. Error texts of HTTP clients carry the URL they called, and
those texts end up in results, their live events, delivery logs and logs, read by everyone
in the project: a token in a query string or a `user:pass@` part must not go with them.

A redacted URL keeps its scheme, host, port and path (what makes an error useful), the name of
each query parameter, and replaces each query value, a user part and a fragment with a marker.
Where the path itself is the credential (chat services' incoming webhooks), it goes too.

A text that repeats a known URL in its own words (an error page quoting the path it was asked
for, a query value alone) is rid of it by `url_secrets`: what of that URL may be a credential.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_plus, urlsplit

REDACTED = "[redacted]"
HIDDEN_REST = "/…"
# A piece of a URL's path or a query value this long may be a token, shown alone; a shorter one
# is left in a text's words (redacting every "v1" of them would say nothing more).
TOKEN_LIKE_CHARS = 6

# Up to whitespace or a quote: what a URL is written between in the clients' messages. A bracket
# or a punctuation mark just after the URL (`(http://host/p?key=v)`) is then taken off its end.
_URL_IN_TEXT = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>`]+", re.IGNORECASE)
_TRAILING_MARKS = ").,;:]}"
_QUERY_SEPARATORS = re.compile(r"([&;])")


def redact_url(url: str, *, keep_path: bool = True) -> str:
    """`url` with any user part, query value and fragment replaced by a marker; without
    `keep_path`, everything after the host and port is (`https://host/…`)."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return REDACTED
    # A user part ends at the last "@" before the query: a password may hold a "/" as clients
    # print it (a path's own "@" takes the path before it too, which is the safe side).
    user_end = rest.rfind("@", 0, _first_of(rest, "?#")) + 1
    if not keep_path and user_end > _first_of(rest, "/?#"):
        # After a "/", an "@" ends either such a password or a piece of the path: what
        # follows it may be the path, which is not to be shown, and so may be the host.
        return f"{scheme}://{REDACTED}{HIDDEN_REST}"
    authority_end = user_end + _first_of(rest[user_end:], "/?#")
    authority, rest = rest[user_end:authority_end], rest[authority_end:]
    if user_end:
        authority = f"{REDACTED}@{authority}"
    if not keep_path:
        return f"{scheme}://{authority}{HIDDEN_REST}"
    rest, hash_mark, _fragment = rest.partition("#")
    path, question_mark, query = rest.partition("?")
    shown = f"{scheme}://{authority}{path}"
    if question_mark:
        shown += "?" + _redacted_query(query)
    if hash_mark:
        shown += "#" + REDACTED
    return shown


def url_secrets(url: str) -> set[str]:
    """What of `url` may be its credential, in the forms a text repeating it may hold: its path
    and query, whole and alone; each piece of its path that looks like a token (`_token_like`)
    and each query value long enough to be one (a bare query piece counts as a value); each as
    written and percent-decoded, and a query value also as a form reads it (`+` a space).
    Azure Functions carry their key in the query (`?code=`), chat services' webhooks in the
    path."""
    parts = urlsplit(url)
    path_and_query = parts.path + (f"?{parts.query}" if parts.query else "")
    secrets = {path_and_query, parts.path, parts.query}
    secrets.update(piece for piece in parts.path.split("/") if _token_like(piece))
    for piece in _QUERY_SEPARATORS.split(parts.query):
        name, equals, value = piece.partition("=")
        value = value if equals else name
        if len(value) >= TOKEN_LIKE_CHARS:
            secrets.update((value, unquote_plus(value)))
    secrets.update([unquote(secret) for secret in secrets])
    return secrets - {"", "/"}


# A piece of a path written as a word, in lowercase: the path's own words ("answer",
# "deployments", "chat-completions"), which an error's text also uses as words. A token has a
# digit or a capital letter (Slack's, Azure's, a UUID) or a length no word has.
_WORD = re.compile(r"[a-z]+(?:[-_.][a-z]+)*")
_LONGEST_WORD = 24


def _token_like(piece: str) -> bool:
    if len(piece) < TOKEN_LIKE_CHARS:
        return False
    return len(piece) > _LONGEST_WORD or not _WORD.fullmatch(unquote(piece))


def shown_origin(url: str) -> str:
    """A stored URL (which carries no user part: they are refused) as readers who may not edit
    it see it: its scheme, host and port, and a marker for the rest (`https://host/…`), which
    may hold a token, as chat services' incoming-webhook paths do."""
    return url_origin(url) + HIDDEN_REST


def url_origin(url: str) -> str:
    """A stored URL's scheme, host and port (`https://[2001:db8::1]:8443`)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{parts.port}" if parts.port else f"{parts.scheme}://{host}"


def redact_urls(text: str, *, keep_path: bool = True) -> str:
    """`text` with every URL in it redacted (see `redact_url`)."""

    def redacted(found: re.Match[str]) -> str:
        url = found.group()
        kept = url.rstrip(_TRAILING_MARKS)
        return redact_url(kept, keep_path=keep_path) + url[len(kept) :]

    return _URL_IN_TEXT.sub(redacted, text)


def _first_of(text: str, characters: str) -> int:
    found = [at for at in (text.find(c) for c in characters) if at != -1]
    return min(found, default=len(text))


def _redacted_query(query: str) -> str:
    """Each parameter's name kept, its value replaced; a parameter with no `=` may be a bare
    token, and is replaced whole."""
    pieces = []
    for piece in _QUERY_SEPARATORS.split(query):
        if piece in ("&", ";", ""):
            pieces.append(piece)
        elif "=" in piece:
            pieces.append(piece.partition("=")[0] + "=" + REDACTED)
        else:
            pieces.append(REDACTED)
    return "".join(pieces)
