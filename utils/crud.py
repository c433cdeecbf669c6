"""Query helpers shared by the entities' crud modules."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import (
    ARRAY,
    BindParameter,
    Integer,
    Select,
    Table,
    TextClause,
    Uuid,
    bindparam,
    delete,
    func,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from utils.errors import Conflict, InvalidInput, NotFound
from utils.storable import storable_document


async def delete_once(session: AsyncSession, row: Any, what: str) -> None:
    """Deletes the row, or answers 404 (`what` not found) when another request deleted it
    first: the ORM's delete of a row already gone only warns, so both requests answered 204
    and recorded the deletion. Children go with it by their foreign keys' ON DELETE."""
    model = type(row)
    deleted = await session.scalar(delete(model).where(model.id == row.id).returning(model.id))
    if deleted is None:
        raise NotFound(f"{what} not found")


async def paginate(
    session: AsyncSession, query: Select[Any], *, limit: int, offset: int
) -> tuple[list[Any], int]:
    """One page of a query's rows and the total the query would return."""
    total = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = await session.scalars(query.limit(limit).offset(offset))
    return list(rows.all()), total or 0


async def flush_unique(session: AsyncSession, message: str, *, field: str = "name") -> None:
    """Flush, turning a unique-constraint violation into a 409 with `message`, naming the
    `field` whose value is taken."""
    try:
        await session.flush()
    except IntegrityError as exc:
        if getattr(exc.orig, "sqlstate", None) == "23505" or "unique" in str(exc.orig).lower():
            raise Conflict(message, errors=[{"field": field, "message": "is taken"}]) from exc
        raise


def refuse_nulls(changes: dict[str, Any], *fields: str) -> None:
    """A partial update may leave these fields out, but may not set them to null."""
    for field in fields:
        if field in changes and changes[field] is None:
            raise InvalidInput("must not be null", field=field)


def apply_update(row: Any, changes: dict[str, Any]) -> None:
    for field, value in changes.items():
        setattr(row, field, value)


def int_array(name: str, values: Sequence[int]) -> BindParameter[Any]:
    """One array parameter, not an IN list of thousands: one prepared statement for any size."""
    return bindparam(name, list(values), type_=ARRAY(Integer()))


def uuid_array(name: str, values: Sequence[uuid.UUID]) -> BindParameter[Any]:
    return bindparam(name, list(values), type_=ARRAY(Uuid()))


@asynccontextmanager
async def custom_plans(session: AsyncSession) -> AsyncIterator[None]:
    """Plans the block's statements for their parameters' values, in this transaction only.

    From its sixth execution on a connection, a prepared statement may run a generic plan, where
    `column = ANY(:array)` can be a filter that walks the array for each row; planned for the
    values, the array is hashed. An organization the statistics do not know yet gets that
    filter over all its rows: with 10,000 ids, 10,000 rows by 10,000 elements."""
    async with local_settings(session, plan_cache_mode="force_custom_plan"):
        yield


# What a block may set: the planner's settings alone (the tenant is database.core's to set).
PLANNER_SETTINGS = frozenset(
    {
        "enable_bitmapscan",
        "enable_hashagg",
        "enable_nestloop",
        "enable_sort",
        "plan_cache_mode",
        "work_mem",
    }
)


@asynccontextmanager
async def local_settings(session: AsyncSession, **settings: str) -> AsyncIterator[None]:
    """Planner settings (given by this code, never by a request) for the block, in this
    transaction only, then back to what they were, so blocks nest. When the block raises they
    stay until the transaction (or the savepoint around the block) ends. Three round trips,
    however many settings (a SET LOCAL per setting, twice, was 6 of a results page's 11
    statements)."""
    if unknown := settings.keys() - PLANNER_SETTINGS:
        raise ValueError(f"not a planner setting: {', '.join(sorted(unknown))}")
    names = ", ".join(f"current_setting('{name}')" for name in settings)
    before = (await session.execute(text(f"SELECT {names}"))).one()
    await session.execute(_set_locally(settings), dict(settings))
    yield
    await session.execute(_set_locally(settings), dict(zip(settings, before, strict=True)))


def _set_locally(settings: Mapping[str, str]) -> TextClause:
    calls = ", ".join(f"set_config('{name}', :{name}, true)" for name in settings)
    return text(f"SELECT {calls}")


@asynccontextmanager
async def index_order_plans(session: AsyncSession) -> AsyncIterator[None]:
    """For reads of a page of rows in the order of an index, in this transaction only. Read
    right after they are written (a run's results as it runs or just after), before the
    statistics know the rows, every plan looks cheap: a results page was read by sorting the
    rest of the run (at 50,000 of 100,000 fresh results, 74 ms against 0.6 ms), and its
    evaluations by walking all of the run's (500 ms); a whole export's database time grew with
    the square of its results. Without sorts (nor bitmaps, which lose the order), the plans
    left read an index from the page's start in the order asked; arrays of ids are planned for
    their values."""
    async with local_settings(
        session, enable_bitmapscan="off", enable_sort="off", plan_cache_mode="force_custom_plan"
    ):
        yield


def recordset_insert(
    table: Table,
    columns: list[str],
    suffix: str = "",
    computed: Mapping[str, str] | None = None,
) -> TextClause:
    """INSERT ... SELECT FROM jsonb_to_recordset(one JSON array of the rows): a whole batch is
    one statement with one parameter (`:rows`, see `json_rows`), prepared once. Encoding a batch
    as one JSON document is a single C call here, and PostgreSQL unpacks it on its own core,
    where per-column arrays cost this process about a tenth of its time in a run. `computed`:
    columns written from an SQL expression of the row's columns."""
    dialect = postgresql.dialect()
    computed = computed or {}
    names = ", ".join([*columns, *computed])
    values = ", ".join([*columns, *computed.values()])
    types = ", ".join(f"{name} {table.c[name].type.compile(dialect=dialect)}" for name in columns)
    return text(
        f"INSERT INTO {table.name} ({names}) SELECT {values}"
        f" FROM jsonb_to_recordset(CAST(:rows AS JSONB)) AS r({types}) {suffix}"
    )


# PostgreSQL refuses a JSONB value past 256 MB (its array's size, not the text's): up to six
# bytes for a character of JSON text (a number of one digit), four for UTF-8 text.
MAX_DOCUMENT_CHARS = 32 * 1024 * 1024


def json_row_groups(
    rows: Sequence[dict[str, Any]], max_chars: int | None = None
) -> Iterator[dict[str, str]]:
    """A batch as one recordset insert's parameter (`json_rows`); a batch whose text would be
    too large for one JSONB value (a run's large outputs, many together), as several (see
    `json_row_packs`; the rare case pays the encoding again). A row alone is never split."""
    limit = max_chars or MAX_DOCUMENT_CHARS
    document = storable_document(rows)
    if len(document) <= limit or len(rows) <= 1:
        yield {"rows": document}
        return
    del document
    yield from json_row_packs(rows, limit)


def json_row_packs(rows: Sequence[dict[str, Any]], max_chars: int) -> Iterator[dict[str, str]]:
    """Rows as recordset parameters of at most `max_chars` each (a row larger alone), encoded a
    row at a time: encoding and sending a statement holds the event loop, so a caller that
    yields between statements holds it for one pack's worth, not the batch's."""
    pack: list[str] = []
    size = 2  # the brackets
    for row in rows:
        document = storable_document(row)
        if pack and size + 1 + len(document) > max_chars:
            yield {"rows": f"[{','.join(pack)}]"}
            pack, size = [], 2
        pack.append(document)
        size += 1 + len(document)
    if pack:
        yield {"rows": f"[{','.join(pack)}]"}


def json_rows(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """A batch as a recordset insert's one parameter (keys that are not columns are ignored,
    and a missing one is NULL), its text storable."""
    return {"rows": storable_document(rows)}
