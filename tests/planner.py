"""What PostgreSQL's planner makes of the statements a request runs, when its statistics do not
know the organization yet (as autovacuum leaves them for a while after a bulk write)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

REMOVED = ("Rows Removed by Filter", "Rows Removed by Join Filter", "Rows Removed by Index Recheck")


async def analyze(owner_engine: AsyncEngine, *tables: str) -> None:
    """Statistics as of now (as the owner: the runtime role may not ANALYZE)."""
    async with owner_engine.begin() as connection:
        await connection.execute(text(f"ANALYZE {', '.join(tables)}"))


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[tuple[str, Any]]]:
    """The statements run on `engine` during the block, in order, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def rows_handled(
    session: AsyncSession, seen: Sequence[tuple[str, Any]], *tables: str
) -> list[tuple[int, str]]:
    """Replays `seen` in the session's transaction, the settings they made (SET) and, for each
    read of one of `tables`, EXPLAIN ANALYZE: the rows its plan handled (every node's rows and
    those its filters dropped, over all its loops), with the read."""
    raw = await (await session.connection()).get_raw_connection()
    connection = raw.driver_connection
    assert connection is not None
    names = re.compile(rf"\b({'|'.join(tables)})\b")
    handled = []
    for sql, parameters in seen:
        verb = sql.lstrip("(\n ").split(maxsplit=1)[0].upper()  # (a union of parenthesized reads)
        if verb == "SET":
            await connection.execute(sql)
        elif verb in ("SELECT", "WITH") and names.search(sql):
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
