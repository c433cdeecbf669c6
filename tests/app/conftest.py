from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="module")
def document(app) -> dict[str, Any]:
    """The API's OpenAPI document."""
    return dict(app.openapi())
