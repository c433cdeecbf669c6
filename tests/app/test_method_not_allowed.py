"""A 405 lists every method the API document declares for the path, though the methods of one
path are served by several routes (the router alone names only the first route's)."""

from __future__ import annotations

import pytest

from tests.helpers import assert_problem


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/api/v1/projects/3f1c2a9e-6b7d-4e58-9a01-2c3d4e5f6a7b", "GET, DELETE, PATCH"),
        ("PUT", "/api/v1/projects", "GET, POST"),
        ("DELETE", "/api/v1/users/me", "GET, PATCH"),
        ("POST", "/public/runs/3f1c2a9e-6b7d-4e58-9a01-2c3d4e5f6a7b/events", "GET"),
    ],
)
async def test_a_405_names_every_declared_method_of_the_path(client, method, path, allowed):
    response = await client.request(method, path)
    assert_problem(response, 405)
    assert response.headers["Allow"] == allowed
