"""The API's contract documents: both served, both valid OpenAPI."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate


@pytest.mark.parametrize("path", ["/openapi.json", "/public/openapi.json"])
async def test_the_openapi_documents_are_served_and_valid(client, path):
    response = await client.get(path)
    assert response.status_code == 200, response.text
    document = response.json()
    validate(document)  # raises, naming the fault, when the document is not valid OpenAPI
    assert document["paths"]


async def test_the_public_document_describes_the_event_stream(client):
    document = (await client.get("/public/openapi.json")).json()
    stream = document["paths"]["/runs/{run_id}/events"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    assert "run.verdict" in stream["description"]
