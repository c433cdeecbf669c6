"""Files the command writes (reports, exports): whole or not at all. Each is written to a
temporary file beside it and renamed over it once complete, so a dropped connection or a full
disk never leaves a shorter file that a CI step would take for the whole one (a file already
there stays as it was)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from secrets import token_hex
from typing import BinaryIO

from cli.client import Client, CliError


def write_file(target: Path, content: bytes) -> None:
    with _replacing(target) as handle:
        handle.write(content)


def download(client: Client, path: str, params: dict[str, str], target: Path) -> None:
    """A streamed GET under /api/v1 into `target`, once it has arrived in full."""
    with client.stream(path, params=params) as response, _replacing(target) as handle:
        for chunk in response.iter_bytes():
            handle.write(chunk)


@contextmanager
def _replacing(target: Path) -> Iterator[BinaryIO]:
    """A file to write `target`'s new content to: it becomes `target` when the block ends
    without an error, and is removed otherwise (Ctrl-C included)."""
    in_place = target.exists() and not target.is_file()  # /dev/stdout, a pipe: nothing to swap
    partial = target if in_place else target.with_name(f".{target.name}.{token_hex(4)}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: nobody else's file; 0o666: the umask decides its mode, as with open().
        flags = os.O_WRONLY | (0 if in_place else os.O_CREAT | os.O_EXCL)
        descriptor = os.open(partial, flags, 0o666)
    except OSError as exc:
        raise _unwritable(target, exc) from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
        if not in_place:
            os.replace(partial, target)
    except BaseException as exc:
        if not in_place:
            partial.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _unwritable(target, exc) from None
        raise


def _unwritable(target: Path, exc: OSError) -> CliError:
    return CliError(f"cannot write {target}: {exc.strerror or exc}")
