"""The planner tests replay a request's reads under the settings each was sent under. A request
may read on two connections at once (a summary's metrics beside its other figures), and one
connection's settings must not leak into the other's reads in the replay."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects.postgresql import asyncpg

from tests.planner import ENDED, Sent, settings_of_reads
from utils.crud import _set_locally

MAIN, SIDE = 1, 2


def made(connection: int, **settings: str) -> Sent:
    """Settings made as utils.crud.local_settings sends them, compiled for the driver."""
    compiled = _set_locally(settings).compile(dialect=asyncpg.dialect())
    return Sent(
        str(compiled), tuple(settings[name] for name in compiled.positiontup or ()), connection
    )


def test_each_read_is_replayed_under_its_own_connections_settings() -> None:
    seen = [
        Sent("SELECT current_setting('enable_nestloop')", None, MAIN),
        made(MAIN, enable_nestloop="off"),
        Sent("SET TRANSACTION READ ONLY", None, SIDE),
        made(SIDE, enable_nestloop="off", work_mem="64MB"),
        Sent("SELECT 'the metrics'", None, SIDE),
        made(SIDE, enable_nestloop="on"),  # the side's block ends first
        Sent("SELECT 'the slices'", None, MAIN),
        made(MAIN, enable_nestloop="on"),
        Sent("SELECT 'after'", None, MAIN),
        # A block that raised leaves its setting until its transaction ends, not after.
        made(SIDE, work_mem="1GB"),
        Sent(ENDED, None, SIDE),
        Sent("SELECT 'the next transaction'", None, SIDE),
    ]

    replayed = {sent.sql: settings for sent, settings in settings_of_reads(seen)}

    assert list(replayed) == [
        "SELECT current_setting('enable_nestloop')",
        "SELECT 'the metrics'",
        "SELECT 'the slices'",
        "SELECT 'after'",
        "SELECT 'the next transaction'",
    ]
    assert replayed["SELECT current_setting('enable_nestloop')"] == {}
    assert replayed["SELECT 'the metrics'"] == {"enable_nestloop": "off", "work_mem": "64MB"}
    assert replayed["SELECT 'the slices'"] == {"enable_nestloop": "off", "work_mem": None}
    assert replayed["SELECT 'after'"] == {"enable_nestloop": "on", "work_mem": None}
    assert replayed["SELECT 'the next transaction'"] == {"enable_nestloop": None, "work_mem": None}


def test_a_setting_the_replay_cannot_read_is_refused() -> None:
    unread = Sent("SELECT set_config('enable_sort', 'off', true)", None, MAIN)
    tenant = Sent("SELECT set_config('app.organization_id', $1, true)", ("x",), MAIN)
    assert [sent for sent, _ in settings_of_reads([tenant])] == [tenant]
    with pytest.raises(AssertionError, match="enable_sort"):
        list(settings_of_reads([unread]))
