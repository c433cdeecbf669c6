"""A command stopped by Ctrl-C, SIGTERM (a CI job cancelled) or a closed stdout, outside the
following of a run (which detaches from it), ends as an error of its own, said in one line
with what became of the run: typer would end it as exit 130 or 1 (a failed gate), without a
word."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])


class Interrupted(Exception):
    """Ctrl-C or SIGTERM (a CI job cancelled) outside the following of a run."""


class StdoutClosed(Exception):
    """stdout's reader went away (`assay export RUN | head`) outside the following of a run."""


def stopped_as_errors(function: F) -> F:
    """The command, its interrupts and a closed stdout said as the command's own errors (in
    `main`): typer would end them as exit 130 or 1, without a word."""

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except KeyboardInterrupt as exc:
            raise Interrupted() from exc
        except BrokenPipeError as exc:
            raise StdoutClosed() from exc

    return cast(F, guarded)
