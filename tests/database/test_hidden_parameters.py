"""An unexpected database error is logged with its statement, without SQLAlchemy's dump of the
values bound to it: they may be token hashes, encrypted secrets or emails."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

SECRET = "sk-live-0123456789abcdef"


async def test_a_failed_statement_does_not_show_its_parameters(runtime_engine) -> None:
    async with runtime_engine.connect() as connection:
        with pytest.raises(DBAPIError) as failed:
            await connection.execute(text("SELECT 1 / 0 WHERE :secret <> ''"), {"secret": SECRET})
    said = str(failed.value)
    assert "SELECT 1 / 0" in said  # the statement still tells where it failed
    assert SECRET not in said
