"""The public app, mounted at /public: what browsers and terminals reach without the admin API.

It is a FastAPI instance of its own (streams need their own middleware), so it installs the
same problem+json handlers: sub-apps do not inherit the parent's.
"""

from __future__ import annotations

import uuid
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, HTMLResponse

from app.errors import install_error_handlers
from app.openapi import REF, install_openapi
from database.core import get_database
from database.deps import DbSession, RuntimeDep, RunWatcher
from database.results import crud, events
from database.results.event_payloads import STREAM_EVENTS
from database.results.events import TERMINAL_EVENTS
from database.results.models import TERMINAL, Run
from database.users.service import ended_stream_issuers
from notifications.recheck import Credential, Issuer
from notifications.service import get_notifications
from notifications.stream import EventStream
from notifications.subscriber import StreamLimits
from utils.auth import Principal
from utils.errors import InvalidInput, NotFound

STATIC = Path(__file__).parent / "static"
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
    " base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

EVENTS_DESCRIPTION = """
Server-Sent Events of one run. Authenticate with `?token=` (from
`POST /api/v1/runs/{id}/stream-token`) or an `Authorization` header (access token or API key).

Every stored event has an `id:` (the run's event sequence, 1, 2, 3 ...). Reconnect with
`Last-Event-ID` (EventSource does it for you) to get exactly the events after it: the replay
from the database and the live part join without a gap or a duplicate. A client that cannot
set the header (a new EventSource, opened after the old one gave up) gives the same value as
`?last_event_id=`; the header wins when both are given. When the run has ended and nothing is
left after that id (or retention has pruned its events), the answer is 204 (EventSource then
stops).

Events (`event:` name, then the JSON in `data:`):

- `run.started`: `{status, total, concurrency, repetitions, metrics: [{name, type}]}`
- `result.recorded`: `{result_id, position, repetition, test_id, status, output,
  output_truncated, latency_ms, input_tokens, output_tokens, cost, cached?, error_type?,
  error_message?, evaluations: [{metric, score, passed, reason?, error?}]}` (the output is a
  preview of PREVIEW characters; a reason only where a metric did not pass, cut at REASON; the
  whole result is `GET /api/v1/results/{result_id}`)
- `step.completed`: `{position, repetition, step, text, text_truncated, tool_calls: [{id, name,
  arguments}], tool_results: [{id, name, content | error}], latency_ms, input_tokens,
  output_tokens, error?, stopped?}`: one model call of an agent's loop, before its case's
  `result.recorded` (`stopped: max_steps`: the loop ended still calling tools)
- `turn.completed`: `{position, repetition, turn, user, text, tool_calls, steps, latency_ms,
  input_tokens, output_tokens, ended?}`: one turn of a conversation, before its case's result
  (`ended`, on a last turn known as such: script_done, max_turns or size)
- `run.progress`: `{total, done, passed, failed, errored}`, after each batch of results
- `run.finished`: `{status: completed | failed | stopped, total, done, passed, failed, errored,
  error?, continues?}` (`stopped`: the run's budget was reached; `error` says so;
  `continues: true`: a `run.verdict` follows)
- `run.cancelled`: `{status: cancelled, total, done, passed, failed, errored}`
- `run.verdict`: a gated run's gate result, right after `run.finished` or `run.cancelled`:
  `{status: passed | failed | undecided, reasons, baseline_run_id, comparison}`
- `output.delta`: `{position, repetition, text, reset?}`: streamed text of the target (models
  set to `stream`), live only, never replayed; its `id:` is the last stored event's. With
  `reset: true` the call was retried: drop the text received so far for that case
- `evaluation.delta`: `{position, repetition, metric, text}`: the same for a judge

The stream ends after `run.finished` or `run.cancelled` (after `run.verdict` for a gated run).
A run given more repetitions once it has ended (`POST /runs/{id}/repeat`) starts again with
`run.started`; a stream opened afterwards replays both. On a quiet stream a `heartbeat` event
(`data: {}`, no `id:`, so `Last-Event-ID` stays put) is sent every 15 s (the server's
`ASSAY_SSE_HEARTBEAT_SECONDS`): a client that hears nothing for a few of these may take the
connection for dead and reconnect with `Last-Event-ID`, as the live page and `assay` do. A
connection lives at most 30 minutes (then the client reconnects after the `retry:` delay); a
client too slow to keep up is disconnected the same way. When the server ends a stream before
the run's end, it sends `retry:` and a comment saying why: the client comes back with
`Last-Event-ID`, no sooner than that delay. A stream whose credential is no longer good (the
API key revoked, the login session ended, the member removed) ends within a minute with a
comment saying why; reopening it is then a 401.
""".replace("PREVIEW", f"{events.OUTPUT_PREVIEW_CHARS:,}").replace(
    "REASON", f"{events.REASON_CHARS:,}"
)


def create_public_app() -> FastAPI:
    public = FastAPI(
        title="Assay public streams",
        summary="A run's live events (Server-Sent Events) and its live page.",
        version="0.1.0",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    # Stream credentials travel in the URL (EventSource cannot set headers), never in cookies.
    public.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET"],
        allow_headers=["Authorization", "Last-Event-ID"],
        allow_credentials=False,
        expose_headers=["X-Request-ID", "Retry-After"],
    )
    install_error_handlers(public)

    @public.get(
        "/runs/{run_id}/events",
        status_code=200,  # (EventStream takes no status_code: FastAPI's schema needs it here)
        operation_id="runs_events",
        tags=["streams"],
        summary="A run's events, live (Server-Sent Events)",
        description=EVENTS_DESCRIPTION,
        response_class=EventStream,
        responses={
            200: {
                "content": {"text/event-stream": {"schema": _stream_schema()}},
                "description": "The event stream: each message an `event:` type and its"
                " JSON `data:`, as the schema lists them",
            },
            204: {"description": "The run has ended and no event is left after Last-Event-ID"},
            429: {
                "description": "The organization has its most streams open on this server"
                " (`ASSAY_SSE_MAX_STREAMS_PER_ORGANIZATION`): close one, or come back after"
                " `Retry-After`"
            },
            503: {
                "description": "The server has its most streams open (`ASSAY_SSE_MAX_STREAMS`):"
                " come back after `Retry-After`"
            },
        },
    )
    async def run_events(
        run_id: uuid.UUID,
        session: DbSession,
        runtime: RuntimeDep,
        watcher: RunWatcher,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
        last_event_id_query: Annotated[
            str | None,
            Query(
                alias="last_event_id",
                description="The last event id the client has, for a client that cannot"
                " send `Last-Event-ID` (the header wins when both are given)",
            ),
        ] = None,
    ) -> Response:
        run = await _run(session, run_id)
        after, given_as = _resume_after(last_event_id, last_event_id_query)
        if run.status in TERMINAL and (
            after >= run.event_seq
            # Retention prunes a finished run's events all at once: nothing left to replay.
            or not await crud.events_after(session, run.id, after, limit=1)
        ):
            return Response(status_code=204)
        if after > run.event_seq:  # a forged id, or another run's: the run's end would pass by
            raise InvalidInput(
                f"must be the id of an event of this stream (its last is {run.event_seq})",
                field=given_as,
            )
        settings = runtime.settings
        return EventStream(
            get_database(),
            get_notifications().hub,
            run_id=run.id,
            organization_id=run.organization_id,
            after=after,
            committed=run.event_seq,
            limits=StreamLimits(
                heartbeat_seconds=settings.sse_heartbeat_seconds,
                send_timeout_seconds=settings.sse_send_timeout_seconds,
                max_lifetime_seconds=settings.sse_max_lifetime_seconds,
                max_streams_per_organization=settings.sse_max_streams_per_organization,
                max_streams=settings.sse_max_streams,
            ),
            retry_ms=settings.sse_retry_ms,
            terminal=TERMINAL_EVENTS,
            run_ended=run.status in TERMINAL,
            credential=_credential(watcher, settings.sse_recheck_seconds),
        )

    @public.get(
        "/runs/{run_id}",
        operation_id="runs_live_page",
        tags=["streams"],
        summary="The live run page (open it with ?token=)",
        response_class=HTMLResponse,
    )
    async def run_page(
        run_id: uuid.UUID, session: DbSession, runtime: RuntimeDep, _: RunWatcher
    ) -> Response:
        """An HTML page following the run live: progress, counts, pass rates, results."""
        await _run(session, run_id)
        page = HTMLResponse(_live_page(runtime.settings.sse_heartbeat_seconds))
        page.headers["Content-Security-Policy"] = PAGE_POLICY
        page.headers["Cache-Control"] = "no-store"
        return page

    @public.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        path = STATIC / name
        if name not in STATIC_FILES or not path.is_file():
            raise NotFound("No such file")
        return FileResponse(path, media_type=STATIC_FILES[name])

    install_openapi(public, schemas=list(STREAM_EVENTS.values()))
    return public


def _stream_schema() -> dict[str, Any]:
    """One message of the stream: its `event:` type, its `id:` (stored events only) and its
    `data:` (the payload's schema)."""
    messages = [
        {
            "type": "object",
            "title": name,
            "properties": {
                "event": {"const": name},
                "id": {"type": "integer", "description": "The run's event sequence number"},
                "data": {"$ref": REF.format(model=payload.__name__)},
            },
            "required": ["event", "data"],
        }
        for name, payload in STREAM_EVENTS.items()
    ]
    return {"oneOf": messages}


STATIC_FILES = {"live_run.js": "text/javascript", "live_run.css": "text/css"}


@cache
def _live_page(heartbeat_seconds: float) -> str:
    """The live page, told the streams' heartbeat interval: it takes a stream silent for a
    few of them for a dead connection (one that dropped without a word) and opens another."""
    page = (STATIC / "live_run.html").read_text(encoding="utf-8")
    return page.replace("HEARTBEAT_MS", str(round(heartbeat_seconds * 1000)))


async def _run(session: DbSession, run_id: uuid.UUID) -> Run:
    """The run, for a caller its RunWatcher check let through (another's run is a 404)."""
    run = await crud.get_run(session, run_id)
    if run is None:
        raise NotFound("Run not found")
    return run


def _credential(watcher: Principal, recheck_seconds: float) -> Credential | None:
    """What opened the stream, as the hub asks about it again while the stream is open."""
    if watcher.session_id is None and watcher.api_key_id is None:
        return None
    issuer = Issuer(
        watcher.organization_id,
        user_id=watcher.user_id,
        session_id=watcher.session_id,
        api_key_id=watcher.api_key_id,
    )
    return Credential(issuer, ended_stream_issuers, recheck_seconds)


def _resume_after(header: str | None, query: str | None) -> tuple[int, str]:
    """The last event id the client has (0: none), and the name it was given under."""
    value, name = (header, "Last-Event-ID") if header else (query, "last_event_id")
    if not value:
        return 0, name
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise InvalidInput("must be the id of an event of this stream", field=name)
    return int(value), name
