"""The planner tests replay a request's reads under the settings each was sent under. A request
may read on two connections at once (a summary's metrics beside its other figures), and one
connection's settings must not leak into the other's reads in the replay."""

from __future__ import annotations

from tests.planner import ENDED, Sent, settings_of_reads

MAIN, SIDE = 1, 2
SET = "SELECT set_config(%s)"  # as utils.crud.local_settings sends its settings


def test_each_read_is_replayed_under_its_own_connections_settings() -> None:
    seen = [
        Sent("SELECT current_setting('enable_nestloop')", None, MAIN),
        Sent(SET % "'enable_nestloop', $1, true", ("off",), MAIN),
        Sent("SET TRANSACTION READ ONLY", None, SIDE),
        Sent(
            SET % "'enable_nestloop', $1, true), set_config('work_mem', $2, true",
            ("off", "64MB"),
            SIDE,
        ),
        Sent("SELECT 'the metrics'", None, SIDE),
        Sent(SET % "'enable_nestloop', $1, true", ("on",), SIDE),  # the side's block ends first
        Sent("SELECT 'the slices'", None, MAIN),
        Sent(SET % "'enable_nestloop', $1, true", ("on",), MAIN),
        Sent("SELECT 'after'", None, MAIN),
        # A block that raised leaves its setting until its transaction ends, not after.
        Sent(SET % "'work_mem', $1, true", ("1GB",), SIDE),
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
