"""The formats a test set imports and exports natively, and which one an upload is in."""

from __future__ import annotations

from typing import Literal

from utils.errors import UnsupportedMediaType

Format = Literal["csv", "json", "jsonl"]

_NAMES: dict[str, Format] = {"csv": "csv", "json": "json", "jsonl": "jsonl", "ndjson": "jsonl"}
_CONTENT_TYPES: dict[str, Format] = {
    "text/csv": "csv",
    "application/csv": "csv",
    "application/json": "json",
    "application/x-ndjson": "jsonl",
    "application/ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl",
}
_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
_ACCEPTED = (
    "send CSV (text/csv, .csv), JSON (application/json, .json) or JSONL "
    "(application/x-ndjson, .jsonl, .ndjson), or name the format: csv, json or jsonl"
)


# (`binary`, which some tools attach to any file, says nothing of its text)
_UTF8_OR_NO_CLAIM = frozenset({"utf-8", "utf8", "us-ascii", "ascii", "binary"})


def detect_format(filename: str | None, content_type: str | None, explicit: str | None) -> Format:
    """The upload's format: the explicit choice, else a known content type, else the extension;
    refused (415) when the upload says it is text in another charset than UTF-8."""
    media, *parameters = (content_type or "").lower().split(";")
    media = media.strip()
    for name, _, value in (parameter.strip().partition("=") for parameter in parameters):
        charset = value.strip().strip('"')
        if name == "charset" and charset not in _UTF8_OR_NO_CLAIM:
            raise UnsupportedMediaType(
                f"The upload says charset={charset[:40]}, but imports read UTF-8 text only:"
                " save or convert the file as UTF-8"
            )
    if explicit:
        name = explicit.strip().lower().lstrip(".")
        if name in _NAMES:
            return _NAMES[name]
        raise UnsupportedMediaType(f"Unknown format {explicit!r}; {_ACCEPTED}")
    if media in _CONTENT_TYPES:
        return _CONTENT_TYPES[media]
    # Browsers send text/plain, application/octet-stream or even application/vnd.ms-excel for
    # these files, so any other content type falls back to the extension.
    if filename and "." in filename:
        extension = filename[filename.rfind(".") :].strip().lower()
        if extension in _EXTENSIONS:
            return _EXTENSIONS[extension]
    raise UnsupportedMediaType(f"Unsupported file type; {_ACCEPTED}")
