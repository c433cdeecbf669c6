"""What the command prints of the server's text (a model's answer, a judge's reason, an error,
a name) is shown as text: markup escaped, and control characters replaced. Rich keeps ESC and
the rest, so a model's answer could retitle the terminal, hide the lines after it, or write
the clipboard (OSC 52); a CI log would keep them too."""

from __future__ import annotations

import errno
import os
import re
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # every one but tab and line feed


def printable(text: str) -> str:
    return _CONTROL.sub("\ufffd", text)


def cell(text: str) -> str:
    """Text for a table's cell, which Rich reads as markup: "[/tmp]" is no closing tag."""
    return escape(printable(text))


class TextConsole(Console):
    """A console whose text arguments are printed printable (tables build their cells with
    `cell`); its own styling is Rich's, unaffected."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(*(printable(o) if isinstance(o, str) else o for o in objects), **kwargs)

    def on_broken_pipe(self) -> None:
        # Rich's own exits 1 without a word: "gate failed" to a CI job. The command says what
        # happened instead (see stdout_closed).
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, "stdout was closed")


def stdout_closed() -> None:
    """stdout's reader went away (`assay run | head`): what is still written to it, and its
    flush at exit, go nowhere rather than fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
