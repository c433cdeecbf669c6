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

import httpx

from cli.client import Client, CliError

# What the server sends each export as: anything else (a proxy's sign-in page, say) is no
# report, and is not saved as one.
EXPORT_TYPES = {"csv": "text/csv", "json": "application/json", "junit": "application/xml"}


def check_export_type(response: httpx.Response, fmt: str) -> None:
    sent = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if sent != EXPORT_TYPES[fmt]:
        raise CliError(
            f"the server sent {sent or 'no content type'} for a {fmt} export, not"
            f" {EXPORT_TYPES[fmt]} (a proxy's page?): nothing written"
        )


def write_file(target: Path, content: bytes) -> None:
    with _replacing(target) as handle:
        handle.write(content)


def download_export(client: Client, path: str, fmt: str, target: Path) -> None:
    """An export (a streamed GET under /api/v1) into `target`, once it has arrived in full."""
    with client.stream(path, params={"format": fmt}) as response:
        check_export_type(response, fmt)
        with _replacing(target) as handle:
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
