"""What PostgreSQL's planner makes of the statements a request runs, when its statistics do not
know the organization yet (as autovacuum leaves them for a while after a bulk write)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

REMOVED = ("Rows Removed by Filter", "Rows Removed by Join Filter", "Rows Removed by Index Recheck")
# The settings the code makes for a block of its transaction (utils.crud.local_settings): one
# SELECT of set_config(name, value, true) calls, each value a parameter ($1, $2 ...).
_LOCAL_SETTING = re.compile(r"set_config\('(\w+)', \$(\d+), true\)")


class Sent(NamedTuple):
    """A statement run on the engine, its parameters, and which connection it was sent on."""

    sql: str
    parameters: Any
    connection_id: int


# Recorded where a connection's transaction ends (its settings end with it).
ENDED = "-- the transaction ended"


async def analyze(owner_engine: AsyncEngine, *tables: str) -> None:
    """Statistics as of now (as the owner: the runtime role may not ANALYZE)."""
    async with owner_engine.begin() as connection:
        await connection.execute(text(f"ANALYZE {', '.join(tables)}"))


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[Sent]]:
    """The statements run on `engine` during the block, in order, with their parameters and
    connections (a request may read on two at once), and where each transaction ended."""
    seen: list[Sent] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append(Sent(statement, parameters, id(conn.connection.dbapi_connection)))

    def ended(conn: Any) -> None:
        seen.append(Sent(ENDED, None, id(conn.connection.dbapi_connection)))

    def reset(dbapi_connection: Any, *_: Any) -> None:  # (returned to the pool)
        seen.append(Sent(ENDED, None, id(dbapi_connection)))

    listeners: list[tuple[Any, str, Callable[..., None]]] = [
        (engine.sync_engine, "before_cursor_execute", record),
        (engine.sync_engine, "commit", ended),
        (engine.sync_engine, "rollback", ended),
        (engine.sync_engine.pool, "reset", reset),
    ]
    for target, name, listener in listeners:
        event.listen(target, name, listener)
    try:
        yield seen
    finally:
        for target, name, listener in listeners:
            event.remove(target, name, listener)


def settings_of_reads(seen: Sequence[Sent]) -> Iterator[tuple[Sent, dict[str, str | None]]]:
    """Each statement sent (not the settings, nor a transaction's end), with the settings it ran
    under: those its connection had made (set_config, local) in its transaction, None (the default)
    for those made only by other connections or earlier transactions. (A savepoint's rollback
    is not followed: none of the code's settings is made inside one.)"""
    made: dict[int, dict[str, str]] = {}
    names: set[str] = set()
    for sent in seen:
        settings = _LOCAL_SETTING.findall(sent.sql)
        if settings:
            for name, number in settings:
                made.setdefault(sent.connection_id, {})[name] = sent.parameters[int(number) - 1]
                names.add(name)
        elif "set_config(" in sent.sql and "set_config('app." not in sent.sql:
            raise AssertionError(f"a setting the replay cannot read: {sent.sql}")
        elif sent.sql == ENDED:
            made.pop(sent.connection_id, None)
        elif not sent.sql.lstrip().upper().startswith("SET "):
            own = made.get(sent.connection_id, {})
            yield sent, {name: own.get(name) for name in sorted(names)}


async def rows_handled(
    session: AsyncSession, seen: Sequence[Sent], *tables: str
) -> list[tuple[int, str]]:
    """Replays, in the session's transaction, each read in `seen` of one of `tables` under the
    settings its connection had made, with EXPLAIN ANALYZE: the rows its plan handled (every
    node's rows and those its filters dropped, over all its loops), with the read."""
    raw = await (await session.connection()).get_raw_connection()
    connection = raw.driver_connection
    assert connection is not None
    names = re.compile(rf"\b({'|'.join(tables)})\b")
    handled = []
    for (sql, parameters, _), settings in settings_of_reads(seen):
        verb = sql.lstrip("(\n ").split(maxsplit=1)[0].upper()  # (a union of parenthesized reads)
        if verb in ("SELECT", "WITH") and names.search(sql):
            for name, value in settings.items():
                value = "DEFAULT" if value is None else f"'{value}'"
                await connection.execute(f"SET LOCAL {name} TO {value}")
            plan = await connection.fetchval(
                f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *(parameters or ())
            )
            if isinstance(plan, str):  # unless the engine's codec has decoded it
                plan = json.loads(plan)
            handled.append((round(_handled(plan[0]["Plan"])), sql))
    return handled


def _handled(node: dict[str, Any]) -> float:
    # EXPLAIN gives a node's rows, and the rows its filters removed, per loop.
    own = (node["Actual Rows"] + sum(node.get(key, 0) for key in REMOVED)) * node["Actual Loops"]
    return own + sum(_handled(child) for child in node.get("Plans", []))
