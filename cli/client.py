"""The server as the command sees it: its public REST API, authenticated by an API key, with
every failure turned into one line a person can act on."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx

API = "/api/v1"
TIMEOUT = httpx.Timeout(30.0, connect=10.0)
PAGE = 200
# A read (GET) that finds the server unreachable, failing or refusing for now (429, from the
# server or a gateway in front of it) is tried again after these waits, or after the answer's
# Retry-After: a run's verdict is not lost to a restart or a proxy's moment at its end.
READ_RETRY_SECONDS = (1.0, 2.0, 4.0)
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
# A Retry-After asking for longer is waited for this long: a CI job's minutes are not spent
# on one read.
LONGEST_RETRY_AFTER = 30.0


class CliError(Exception):
    """A usage error: printed as one line, exit code 3."""


class Unreachable(CliError):
    """The server could not be reached, failed (5xx) or refused for now (429): exit code 4,
    worth a retry."""


class NoMatch(CliError):
    """A name or id that names nothing (the server answered; nothing was wrong but the name)."""


class ApiError(CliError):
    """The server answered, but not with a success: `status` says how (409: a conflict)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Client:
    def __init__(self, url: str, api_key: str, *, timeout: httpx.Timeout = TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {sendable(api_key)}", "User-Agent": "assay-cli"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def request(
        self, method: str, path: str, *, retried: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """`path` under /api/v1; any answer but 2xx raises CliError with the server's reason
        (Unreachable for a server error or a 429). `retried`: tried again as a read is (a
        request that an Idempotency-Key makes safe to repeat)."""
        response = self._send(method, path, retried=retried, **kwargs)
        if response.is_success:
            return response
        if _transient(response):
            raise Unreachable(problem_line(response))
        raise ApiError(problem_line(response), response.status_code)

    def _send(
        self, method: str, path: str, *, retried: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """The answer; a GET is tried again while the server cannot be reached, fails or
        refuses for now."""
        waits = list(READ_RETRY_SECONDS) if method == "GET" or retried else []
        while True:
            response = None
            try:
                response = self._http.request(method, API + path, **kwargs)
            except httpx.HTTPError as exc:
                if not waits:
                    raise Unreachable(self._unreachable(exc)) from None
            else:
                if response.status_code not in RETRIED_STATUSES or not waits:
                    return response
            time.sleep(_wait_before_retry(response, waits.pop(0)))

    def get(self, path: str, **params: Any) -> Any:
        clean = {key: value for key, value in params.items() if value is not None}
        return self.json_of(self.request("GET", path, params=clean))

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.json_of(self.request("POST", path, json=body, **kwargs))

    def post_once(self, path: str, body: Any, *, key: str | None = None) -> Any:
        """A POST the server makes once however often it is sent with its Idempotency-Key
        (`key`, else one of this call's own): tried again, as a read is, when its answer is
        lost or the server fails."""
        headers = {"Idempotency-Key": key or str(uuid.uuid4())}
        return self.json_of(self.request("POST", path, json=body, headers=headers, retried=True))

    def json_of(self, response: httpx.Response) -> Any:
        """A success's JSON body; anything else (a proxy's sign-in page, say) is a CliError in
        one line, not a decoding error."""
        kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        sent = kind or "no content type"
        if kind == "application/json" or kind.endswith("+json"):
            try:
                return response.json()
            except ValueError:
                sent = f"{kind} that does not parse"
        raise CliError(
            f"Assay at {shown_url(self.url)} answered {response.status_code} {sent}, not JSON"
            " (a proxy in between?)"
        )

    def all_pages(self, path: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self.get(path, limit=PAGE, offset=len(items), **params)
            items.extend(page["items"])
            if not page["items"] or len(items) >= page["total"]:
                return items

    @contextmanager
    def stream(self, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed GET under /api/v1 (exports): the body is read by the caller. Opening it
        is tried again as a read is; once its body flows, a failure ends it."""
        waits = list(READ_RETRY_SECONDS)
        while True:
            response = None
            with ExitStack() as opened:
                try:
                    response = opened.enter_context(self._http.stream("GET", API + path, **kwargs))
                except httpx.HTTPError as exc:
                    if not waits:
                        raise Unreachable(self._unreachable(exc)) from None
                else:
                    if response.status_code not in RETRIED_STATUSES or not waits:
                        if not response.is_success:
                            response.read()
                            failed = Unreachable if _transient(response) else CliError
                            raise failed(problem_line(response))
                        try:
                            yield response
                        except httpx.HTTPError as exc:
                            raise Unreachable(self._unreachable(exc)) from None
                        return
            time.sleep(_wait_before_retry(response, waits.pop(0)))

    def _unreachable(self, exc: httpx.HTTPError) -> str:
        return f"cannot reach Assay at {shown_url(self.url)}: {_reason(exc)}"

    @property
    def http(self) -> httpx.Client:
        return self._http

    # --- finding things by name or id ---------------------------------------------------------

    def find(
        self, kind: str, path: str, wanted: str, *, project_id: str | None = None
    ) -> dict[str, Any]:
        """The one `kind` (test set, model, metric, project) with this id or name; a name that
        matches none (NoMatch) or several is a CliError listing the candidates."""
        if is_uuid(wanted):
            response = self._send("GET", f"{path}/{wanted}")
            if response.status_code == 404:
                raise NoMatch(f"no {kind} with id {wanted}")
            if _transient(response):
                raise Unreachable(problem_line(response))
            if not response.is_success:
                raise CliError(problem_line(response))
            return dict(self.json_of(response))
        candidates = self.all_pages(path, project_id=project_id)
        matches = [item for item in candidates if item["name"] == wanted]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            names = sorted({item["name"] for item in candidates})
            listed = ", ".join(names[:30]) + (" ..." if len(names) > 30 else "")
            raise NoMatch(f"no {kind} named {wanted!r}; there are: {listed or 'none'}")
        listed = ", ".join(f"{item['id']}" for item in matches)
        raise CliError(f"{len(matches)} {kind}s are named {wanted!r}; name one by id: {listed}")


def problem_line(response: httpx.Response) -> str:
    """A problem+json answer as one line: status, title, and which fields were wrong."""
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        return f"the server answered {response.status_code} {response.reason_phrase}"
    line = f"{response.status_code} {problem.get('title', response.reason_phrase)}"
    if problem.get("detail"):
        line += f": {problem['detail']}"
    fields = [
        f"{error.get('field')}: {error.get('message')}"
        for error in problem.get("errors") or []
        if isinstance(error, dict) and error.get("field")
    ]
    if fields:
        line += " (" + "; ".join(fields[:5]) + ")"
    if response.status_code == 401:
        line += " (check the API key: ASSAY_API_KEY, --api-key or `assay login`)"
    return line


def shown_url(url: str) -> str:
    """The URL as it may be printed: without a user and password in it (a proxy's), which
    would land in a CI log."""
    try:
        parts = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        parts = None
    if parts is not None and parts.userinfo:
        return str(parts.copy_with(username=None, password=None))
    if "@" in url:  # no URL httpx reads as one (no scheme, say): what comes before is hidden
        return "…@" + url.rsplit("@", 1)[1]
    return url


def sendable(api_key: str) -> str:
    """The key as a header can carry it: without the whitespace around it (a key read from a
    file often ends in a newline). Any other character a header cannot carry is refused here,
    without the key: the HTTP client's own refusal quotes the header, key and all."""
    key = api_key.strip()
    if not all("!" <= character <= "~" for character in key):
        raise CliError("the API key holds a character a header cannot carry (a line break?)")
    return key


def _transient(response: httpx.Response) -> bool:
    """An answer that says nothing of the request, only that the server cannot take it now."""
    return response.status_code >= 500 or response.status_code == 429


def _wait_before_retry(response: httpx.Response | None, backoff: float) -> float:
    """The seconds the answer's Retry-After asks for (in seconds; a date is not waited for),
    at most LONGEST_RETRY_AFTER; else `backoff`."""
    asked = response.headers.get("retry-after", "") if response is not None else ""
    try:
        seconds = float(asked)
    except ValueError:
        return backoff
    if seconds != seconds:  # NaN
        return backoff
    return min(max(seconds, 0.0), LONGEST_RETRY_AFTER)


def _reason(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.LocalProtocolError):  # its text may quote a header's value
        return type(exc).__name__
    return str(exc) or type(exc).__name__


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
