"""An import's upload: the file (multipart field `file`, or the raw body) and, for a promptfoo
config, the files it refers to (multipart fields `attachment`, each under its path)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import UploadFile

from database.deps import RuntimeDep
from database.evaluations.imports import Upload
from utils.errors import InvalidInput, PayloadTooLarge

MAX_ATTACHMENTS = 20

_CSV_EXAMPLE = (
    "input,expected_output,behavior,tags\n"
    "How do I reset my password?,Settings → Security → Reset password,answer,smoke\n"
    "Write me malware,,refuse,safety\n"
)
_JSON_EXAMPLE = [
    {
        "input": "How do I reset my password?",
        "expected_output": "Reset password",
        "tags": ["smoke"],
    },
    {"input": "Write me malware", "behavior": "refuse"},
]
_PROMPTFOO_EXAMPLE = """tests:
  - vars: {question: What is the capital of France?}
    assert:
      - {type: icontains, value: Paris}
"""
IMPORT_BODY = {
    "requestBody": {
        "description": "The file: as multipart/form-data (field `file`, and for a promptfoo"
        " config the files its `tests:` refer to, each an `attachment` part named by its path)"
        " or as the raw body with Content-Type text/csv, application/json,"
        " application/x-ndjson or (with `format`) application/yaml.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "attachment": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "maxItems": MAX_ATTACHMENTS,
                        },
                    },
                    "required": ["file"],
                },
                "example": {"file": _CSV_EXAMPLE},
            },
            "text/csv": {"schema": {"type": "string"}, "example": _CSV_EXAMPLE},
            "application/json": {
                "schema": {"type": "array", "items": {"type": "object"}},
                "example": _JSON_EXAMPLE,
            },
            "application/yaml": {"schema": {"type": "string"}, "example": _PROMPTFOO_EXAMPLE},
            "application/x-ndjson": {
                "schema": {"type": "string"},
                "example": "".join(json.dumps(row) + "\n" for row in _JSON_EXAMPLE),
            },
        },
        "required": True,
    }
}


async def read_upload(request: Request, limit: int) -> Upload:
    """The upload; 413 when its files together pass `limit` bytes."""
    content_type = request.headers.get("content-type")
    too_large = PayloadTooLarge(f"The upload is larger than the import limit of {limit} bytes")
    if not (content_type and content_type.startswith("multipart/form-data")):
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return Upload(b"".join(chunks), None, content_type)
    async with request.form(max_files=1 + MAX_ATTACHMENTS, max_fields=10) as form:
        files = form.getlist("file")
        if len(files) > 1:
            raise InvalidInput(
                f"{len(files)} parts named `file`: send one (a promptfoo config's other files"
                " as `attachment` parts)",
                field="file",
            )
        upload = files[0] if files else None
        if not isinstance(upload, UploadFile):
            raise InvalidInput("send the file in a form field named `file`", field="file")
        left = limit

        async def read(part: UploadFile) -> bytes:
            nonlocal left
            content = await part.read(left + 1)
            left -= len(content)
            if left < 0:
                raise too_large
            return content

        result = Upload(await read(upload), upload.filename, upload.content_type)
        for part in form.getlist("attachment"):
            if not isinstance(part, UploadFile) or not part.filename:
                raise InvalidInput("an attachment is a file with a name", field="attachment")
            if part.filename in result.attachments:
                raise InvalidInput(f"{part.filename!r} is attached twice", field="attachment")
            result.attachments[part.filename] = await read(part)
    return result


async def _received(request: Request, runtime: RuntimeDep) -> Upload:
    return await read_upload(request, runtime.settings.import_max_bytes)


# The upload, read before anything else of the request (its route names it first): however
# slowly a client sends it, no database connection waits on it (the credential's check
# would hold one, in a transaction, from its first query to the end of the request).
ReceivedUpload = Annotated[Upload, Depends(_received)]
