"""Pages of a run's results, in (position, repetition) order: by offset, or after a key (a
keyset page costs the same at any depth, and while results are added as a client walks the
run no row is repeated and none there at the start is skipped; one added behind the key, as
cases finish out of order, is not in that walk).

A page also takes no more results once their texts reach PAGE_BYTES: an output may be
megabytes (a provider's answer may be up to 10 MB), and a page of a hundred such would be
built, and its JSON written, in the server's memory at once. A page holds its first result,
whatever its size, so it holds at most PAGE_BYTES plus one result.

The listings are built once: building one took about 4 ms, a tenth of a page's time then.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, Row, Select, Subquery, bindparam, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from database.results.models import Result

Key = tuple[int, int]  # (position, repetition)
PAGE_BYTES = 4 * 1024 * 1024
START: Key = (-1, -1)  # before every result: positions and repetitions count from 0
_ORDER = (Result.position, Result.repetition)


def stored_size() -> ColumnElement[int]:
    """What reading a result's texts costs: `text_bytes`, written with the row. A row written
    before it was has its output's and error's bytes and its input's and trajectory's stored
    size (compressed, where PostgreSQL compressed them), each read from the value's header."""
    return func.coalesce(
        Result.text_bytes,
        func.coalesce(func.octet_length(Result.output), 0)
        + func.coalesce(func.octet_length(Result.error_message), 0)
        + func.coalesce(func.pg_column_size(Result.input), 0)
        + func.coalesce(func.pg_column_size(Result.trajectory), 0),
    )


def sized_page(columns: Select[Any]) -> Subquery:
    """`columns` of the run's (`run_id`) results after the key (`position`, `repetition`), in
    key order, at most `limit` of them, with `before`: the sizes of the page's rows before each.
    A row whose `before` is under PAGE_BYTES is in the page (the first always is). The sizes
    are summed as the rows are read: a row cut from the page passes its texts on unread (as
    references to where they are stored)."""
    size = stored_size()
    after = tuple_(bindparam("position"), bindparam("repetition"))
    return (
        columns.add_columns((func.sum(size).over(order_by=_ORDER) - size).label("before"))
        .where(Result.run_id == bindparam("run_id"), tuple_(*_ORDER) > after)
        .order_by(*_ORDER)
        .limit(bindparam("limit"))
        .subquery()
    )


def _listing(by_status: bool) -> Select[Any]:
    """A page of results (with `status`, when `by_status`), and the position of the result
    after each (`next`: None for the last). Rows, not ORM objects: loading a page's results
    and their evaluations as objects took a fifth of its time."""
    columns = select(Result, func.lead(Result.position).over(order_by=_ORDER).label("next"))
    if by_status:
        columns = columns.where(Result.status == bindparam("status"))
    sized = sized_page(columns)
    return (
        select(*(column for column in sized.c if column.key != "before"))
        .where(sized.c.before < PAGE_BYTES)
        .order_by(sized.c.position, sized.c.repetition)
    )


_LISTINGS = {False: _listing(by_status=False), True: _listing(by_status=True)}


async def offset_key(
    session: AsyncSession, run_id: uuid.UUID, *, status: str | None, offset: int
) -> Key | None:
    """The key of the result before the `offset`th that match, where a page from `offset`
    starts (a sum of sizes beside an OFFSET would count the rows it skips); None when no more
    match. (Read in index_order_plans: the walk follows the run's (position, repetition) index;
    read before the statistics knew a run's rows, it was planned as a sort of the whole run,
    which spilled to disk: 45 ms against 26 at offset 99,900 of 100,000.)"""
    before = select(*_ORDER).where(Result.run_id == run_id)
    if status is not None:
        before = before.where(Result.status == status)
    found = (await session.execute(before.order_by(*_ORDER).offset(offset - 1).limit(1))).first()
    return None if found is None else (found.position, found.repetition)


async def results_page(
    session: AsyncSession, run_id: uuid.UUID, *, status: str | None, limit: int, after: Key
) -> tuple[list[Row[Any]], bool]:
    """Up to `limit` results after `after` (START for the first) as rows of the results'
    columns, fewer where PAGE_BYTES ends the page, and whether more follow. (Read in
    index_order_plans.)"""
    position, repetition = after
    parameters: dict[str, Any] = {
        "run_id": run_id,
        "position": position,
        "repetition": repetition,
        "limit": limit,
    }
    if status is not None:
        parameters["status"] = status
    rows = (await session.execute(_LISTINGS[status is not None], parameters)).all()
    return list(rows), bool(rows) and rows[-1].next is not None
