"""A run's live events over Server-Sent Events, resumed after a dropped connection from the
last event seen (`Last-Event-ID`), so no event is missed and none is seen twice."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent

from cli.client import (
    READ_RETRY_SECONDS,
    Client,
    CliError,
    Unreachable,
    problem_line,
    shown_url,
)

# The server sends a heartbeat every 15 s: a minute of silence is a dead connection.
READ_TIMEOUT = 60.0
# How long the stream may stay unreachable before the command gives up (the run goes on).
GIVE_UP_AFTER = 300.0
ENDINGS = {"run.finished", "run.cancelled", "run.verdict"}
HEARTBEAT = "heartbeat"
# A server restarting, a proxy in between, or the server's cap on streams (429, 503, with
# Retry-After): retried like a dropped connection. A server failing (500) is tried again as a
# read is, a moment, and then believed.
RETRIED_STATUSES = {429, 502, 503, 504}
LONGEST_RETRY_AFTER = 60.0


class RunGone(CliError):
    """The run no longer exists (deleted, or its project was): nothing is left to follow."""


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    data: dict[str, Any]


def follow(
    client: Client,
    run_id: str,
    *,
    on_reconnect: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Event]:
    """Every event of the run once, in order, to its very end: reconnects after a drop, and
    after an ending too (a repeated or resumed run goes on past its first end), until the
    server answers that nothing follows the last event seen (204). Gives up (CliError) when
    the stream gives no sign of life for GIVE_UP_AFTER, or is no event stream at all; RunGone
    once the run no longer exists."""
    last_id = 0
    failures = server_errors = 0
    down_since: float | None = None
    retry_wait = 0.0  # the server's `retry:`, the least wait before reconnecting
    while True:
        ended = False
        opened = time.monotonic()
        asked_to_wait = 0.0
        # Alive: an event or a heartbeat came, or the server held the stream open for a
        # while. An answer alone is no sign of life, nor is a comment (the server's word on
        # ending a stream at once): a proxy or a busy server may answer every time and bring
        # nothing, and the command would wait on it forever, reconnecting without pause.
        alive = False
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = str(last_id)
        try:
            with client.http.stream(
                "GET",
                f"/public/runs/{run_id}/events",
                headers=headers,
                timeout=httpx.Timeout(30.0, read=READ_TIMEOUT),
            ) as response:
                if response.status_code == 204:  # ended, and nothing after last_id
                    return
                if response.status_code in RETRIED_STATUSES:
                    asked_to_wait = _retry_after(response)
                elif response.status_code == 500 and server_errors < len(READ_RETRY_SECONDS):
                    asked_to_wait = READ_RETRY_SECONDS[server_errors]
                    server_errors += 1
                else:
                    _check_stream(client, response, run_id)
                    for sse in EventSource(response).iter_sse():
                        if sse.retry is not None:
                            retry_wait = min(max(sse.retry, 0) / 1000, LONGEST_RETRY_AFTER)
                        if not sse.data:
                            continue  # no event: `retry:` alone
                        alive = True
                        if sse.event == HEARTBEAT or not sse.id or _event_id(sse) <= last_id:
                            continue  # no stored event, or one seen before a reconnect
                        down_since, failures, server_errors = None, 0, 0
                        event = _event(sse)
                        last_id = event.id
                        ended = _ends(event)
                        yield event
                    alive = alive or time.monotonic() - opened >= READ_TIMEOUT
        except httpx.ReadTimeout:
            # Silent for READ_TIMEOUT: dead now, though alive for as long as it was held before.
            alive = alive or time.monotonic() - opened - READ_TIMEOUT >= READ_TIMEOUT
        except (httpx.TransportError, httpx.RemoteProtocolError):
            alive = alive or time.monotonic() - opened >= READ_TIMEOUT
        if ended:
            continue  # asks at once whether anything follows the end
        if alive:
            down_since, failures = None, 0
        now = time.monotonic()
        down_since = down_since or now
        if now - down_since > GIVE_UP_AFTER:
            raise Unreachable(f"lost the run's event stream for {GIVE_UP_AFTER:.0f} s; it goes on")
        failures += 1
        if on_reconnect is not None:
            on_reconnect(last_id)
        sleep(max(asked_to_wait, retry_wait, min(0.2 * 2 ** min(failures, 7), 15.0)))


def _event(sse: ServerSentEvent) -> Event:
    try:
        data = json.loads(sse.data) if sse.data else {}
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise _malformed(sse)
    return Event(_event_id(sse), sse.event, data)


def _event_id(sse: ServerSentEvent) -> int:
    try:
        return int(sse.id)
    except ValueError:
        raise _malformed(sse) from None


def _malformed(sse: ServerSentEvent) -> Unreachable:
    """An event the server (or a proxy) garbled: its answer, not the job, is at fault."""
    return Unreachable(
        f"the run's event stream sent a malformed event ({sse.event!r}, id {sse.id!r}: not an"
        " id and a JSON object): retry"
    )


def _check_stream(client: Client, response: httpx.Response, run_id: str) -> None:
    """A refusal, or a success that is not an event stream (a proxy's page, say), is no
    dropped connection: retrying would never end."""
    if not response.is_success:
        response.read()
        if response.status_code == 404:
            raise RunGone(f"run {run_id} no longer exists ({problem_line(response)})")
        raise (Unreachable if response.status_code >= 500 else CliError)(problem_line(response))
    kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    if kind != "text/event-stream":
        raise CliError(
            f"the run's event stream at {shown_url(client.url)} answered"
            f" {response.status_code} with {kind or 'no content type'}, not text/event-stream"
            " (a proxy in between?)"
        )


def _retry_after(response: httpx.Response) -> float:
    """The seconds a refusal asks to wait (in seconds; a date is not waited for), bounded."""
    try:
        seconds = float(response.headers.get("retry-after", "0"))
    except ValueError:
        return 0.0
    return min(max(seconds, 0.0), LONGEST_RETRY_AFTER) if seconds == seconds else 0.0


def _ends(event: Event) -> bool:
    """The last event of a run: its end (unless a verdict follows), or the verdict."""
    if event.type == "run.verdict":
        return True
    return event.type in ENDINGS and not event.data.get("continues")
