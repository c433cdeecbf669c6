"""Outgoing webhooks under the Standard Webhooks specification: the secret format, the
signature headers, and one attempt at sending a message.

A message keeps its id (`webhook-id`) at every attempt, so a receiver can drop a copy it has
already handled, and is signed again at each attempt with that attempt's time
(`webhook-timestamp`): a retry an hour later is still inside a receiver's replay window
(five minutes for the reference libraries), while a captured request replayed later is not.
During a secret rotation's overlap a message carries one signature per valid secret,
space-separated, as the specification allows.

An attempt checks the URL with the SSRF guard again and connects to the very address that was
checked, follows no redirect, has one deadline for the whole exchange, and reads at most a few
KB of the answer (for the delivery log).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook

from utils.pinned_httpx import pinned_transport
from utils.ssrf import Pin, UnresolvedHost, UnsafeUrl, vet
from utils.storable import storable
from utils.url_redaction import REDACTED, redact_urls, url_secrets

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
ANSWER_BYTES = 4096  # of a receiver's answer, read for the delivery log
ANSWER_SHOWN_CHARS = 200
ERROR_CHARS = 300
USER_AGENT = "Assay-Webhooks/1"


def new_secret() -> str:
    """A signing secret: `whsec_` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def encode_body(message: dict[str, Any]) -> str:
    """The JSON body of a message: `type`, `timestamp`, `data`, in that order, compact."""
    ordered = {key: message[key] for key in ("type", "timestamp", "data")}
    return json.dumps(ordered, ensure_ascii=False, separators=(",", ":"))


def signature_headers(
    message_id: str, body: str, signing_secrets: Sequence[str], at: datetime
) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp` and `webhook-signature` (one `v1,<base64>` per
    secret) of `body` sent at `at` (an aware datetime, of any zone: the library signs its
    wall-clock time read as UTC, so it is given the UTC one)."""
    at = at.astimezone(UTC)
    signatures = " ".join(Webhook(secret).sign(message_id, at, body) for secret in signing_secrets)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(math.floor(at.timestamp())),
        "webhook-signature": signatures,
    }


@dataclass(frozen=True)
class Attempt:
    """What one attempt came to: delivered when `error` is None (a 2xx answer). `refused` when
    the SSRF guard refused the URL's address (not a host that did not resolve, which may be
    for a moment): another attempt would be refused the same, so none is to be made."""

    status_code: int | None
    latency_ms: int
    error: str | None
    refused: bool = False

    @property
    def delivered(self) -> bool:
        return self.error is None


async def send(
    url: str,
    *,
    message_id: str,
    body: str,
    signing_secrets: Sequence[str],
    sent_at: datetime,
    seconds: float,
    allow_private: bool,
) -> Attempt:
    """POSTs the signed message to `url` once. Never raises for what the receiver or the
    network does: the outcome is in the returned attempt."""
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        # The answer is read raw and cut: a compressed one would be unreadable, or a bomb.
        "accept-encoding": "identity",
        **signature_headers(message_id, body, signing_secrets, sent_at),
    }
    started = time.perf_counter()
    status: int | None = None
    heard: list[int] = []  # the answer's status, once its head is in
    refused = False
    try:
        async with asyncio.timeout(seconds):
            pin = await vet(url, field="url", allow_private=allow_private)
            answer = await _post(url, body.encode(), headers, pin, seconds, heard)
        status = heard[0]
        error = _judged(status, answer, url)
    except UnresolvedHost as exc:
        error = f"not sent: the URL {exc.detail}"
    except UnsafeUrl as exc:
        error, refused = f"not sent: the URL {exc.detail}", True
    except httpx.InvalidURL:  # not an HTTPError; its text may quote the URL, which may hold a token
        error, refused = "not sent: the URL is not one the HTTP client accepts", True
    except (TimeoutError, httpx.TimeoutException):
        error = f"no answer within {seconds:g} s"
    except httpx.ConnectError as exc:
        error = f"could not connect: {_reason(exc, url)}"
    except httpx.HTTPError as exc:
        error = f"the exchange failed ({type(exc).__name__}): {_reason(exc, url)}"
    if status is None and heard:  # its status came, not its body: the status is its word
        status = heard[0]
        error = _judged(status, b"", url)
    latency_ms = round((time.perf_counter() - started) * 1000)
    return Attempt(status_code=status, latency_ms=latency_ms, error=_short(error), refused=refused)


async def _post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    pin: Pin | None,
    seconds: float,
    heard: list[int],
) -> bytes:
    """The start of the answer's body; its status into `heard` as soon as it comes."""
    transport = (
        pinned_transport(pin) if pin is not None else httpx.AsyncHTTPTransport(trust_env=False)
    )
    async with (
        httpx.AsyncClient(
            transport=transport, follow_redirects=False, trust_env=False, timeout=seconds
        ) as client,
        client.stream("POST", url, content=body, headers=headers) as response,
    ):
        heard.append(response.status_code)
        answer = b""
        async for chunk in response.aiter_raw():
            answer += chunk
            if len(answer) >= ANSWER_BYTES:
                break  # the rest is not read: closing the response drops the connection
        return answer[:ANSWER_BYTES]


def _judged(status: int, answer: bytes, url: str) -> str | None:
    """None for a 2xx answer, else why the message is not delivered."""
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"answered {status}: redirects are not followed, configure the final URL"
    shown = _without_url(" ".join(answer.decode(errors="replace").split()), url)
    shown = shown[:ANSWER_SHOWN_CHARS]
    return f"answered {status}" + (f": {shown}" if shown else "")


def _without_url(text: str, url: str) -> str:
    """A receiver's words without its URL's path and query (for chat services' webhooks, the
    credential), which a receiver may echo whole or in pieces, nor any URL's: the delivery log
    is read by those shown only the URL's origin."""
    text = redact_urls(text.replace(url, "the URL"), keep_path=False)
    for secret in sorted(url_secrets(url), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _reason(exc: Exception, url: str) -> str:
    """The error's own words, without the URL: for chat services' webhooks its path is the
    credential, so any URL in them (the one connected to names the checked address) shows its
    host only."""
    said = (str(exc) or type(exc).__name__).replace(url, "the URL")
    return redact_urls(said, keep_path=False)


def _short(error: str | None) -> str | None:
    """The error as the delivery log holds it: cut short, and storable (a receiver's answer,
    or an error's words, may hold a NUL)."""
    if error is None:
        return None
    error = storable(error)
    return error if len(error) <= ERROR_CHARS else error[: ERROR_CHARS - 1] + "…"
