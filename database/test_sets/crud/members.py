"""Queries of a test set's membership: which tests it holds, and in what order. Flush, never
commit.

A set may hold hundreds of thousands of tests: a request about a few of them reads those
alone, and a reader of the whole order (a publish, an export) reads it as one packed value."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection, Sequence
from typing import overload

from sqlalchemy import Integer, Uuid, any_, bindparam, delete, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from database.test_sets.models import TestSet
from database.tests.models import TestSetMember
from utils.crud import uuid_array

# The set's test ids in its order, 16 bytes each, as one value: read as a row per member, each
# made into objects on the event loop, 200,000 members held it for over a second.
_PACKED_MEMBER_IDS = text("""
SELECT string_agg(uuid_send(test_id), ''::bytea ORDER BY position, test_id)
FROM test_set_members WHERE test_set_id = :test_set_id
""").bindparams(bindparam("test_set_id", type_=Uuid()))
_UUID_BYTES = 16


class MemberOrder(Sequence[uuid.UUID]):
    """A set's test ids in its order, kept packed and made into ids a slice at a time, as they
    are used: 200,000 ids made at once take half a second, and even in a thread hold the event
    loop for a few hundred milliseconds (the garbage collections their making sets off)."""

    __slots__ = ("_packed",)

    def __init__(self, packed: bytes) -> None:
        self._packed = packed

    def __len__(self) -> int:
        return len(self._packed) // _UUID_BYTES

    @overload
    def __getitem__(self, index: int) -> uuid.UUID: ...

    @overload
    def __getitem__(self, index: slice) -> list[uuid.UUID]: ...

    def __getitem__(self, index: int | slice) -> uuid.UUID | list[uuid.UUID]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return _unpacked(self._packed[start * _UUID_BYTES : stop * _UUID_BYTES])
            return [self[i] for i in range(start, stop, step)]
        at = range(len(self))[index]  # (an IndexError out of range)
        return uuid.UUID(bytes=self._packed[at * _UUID_BYTES : (at + 1) * _UUID_BYTES])


async def member_order(session: AsyncSession, test_set_id: uuid.UUID) -> MemberOrder:
    """The set's test ids, in its order: the whole membership (`held_ids` checks a few)."""
    packed = await session.scalar(_PACKED_MEMBER_IDS, {"test_set_id": test_set_id})
    return MemberOrder(packed or b"")


async def member_ids(session: AsyncSession, test_set_id: uuid.UUID) -> list[uuid.UUID]:
    """`member_order` made into a list at once, in a thread (see MemberOrder: a reader that
    can take a page at a time takes `member_order`)."""
    order = await member_order(session, test_set_id)
    return await asyncio.to_thread(order.__getitem__, slice(None))


def _unpacked(packed: bytes) -> list[uuid.UUID]:
    return [
        uuid.UUID(bytes=packed[start : start + _UUID_BYTES])
        for start in range(0, len(packed), _UUID_BYTES)
    ]


async def held_ids(
    session: AsyncSession, test_set_id: uuid.UUID, test_ids: Collection[uuid.UUID]
) -> set[uuid.UUID]:
    """Those of `test_ids` the set holds (read alone, however large the set)."""
    rows = await session.scalars(
        select(TestSetMember.test_id).where(
            TestSetMember.test_set_id == test_set_id,
            TestSetMember.test_id == any_(uuid_array("ids", list(test_ids))),
        )
    )
    return set(rows.all())


async def count_held(
    session: AsyncSession, test_set_id: uuid.UUID, test_ids: Collection[uuid.UUID]
) -> int:
    """How many of `test_ids` the set holds."""
    counted = await session.scalar(
        select(func.count()).where(
            TestSetMember.test_set_id == test_set_id,
            TestSetMember.test_id == any_(uuid_array("ids", list(test_ids))),
        )
    )
    return counted or 0


async def count_members(session: AsyncSession, test_set_id: uuid.UUID) -> int:
    """How many tests the set holds (kept by the database's triggers: nothing is counted)."""
    counted = await session.scalar(select(TestSet.member_count).where(TestSet.id == test_set_id))
    return counted or 0


async def max_position(session: AsyncSession, test_set_id: uuid.UUID) -> int:
    value = await session.scalar(
        select(func.max(TestSetMember.position)).where(TestSetMember.test_set_id == test_set_id)
    )
    return -1 if value is None else value


# Members in one statement, however many: the triggers that bump the set's revision run once.
_INSERT_MEMBERS = text("""
INSERT INTO test_set_members (test_set_id, test_id, organization_id, position)
SELECT :test_set_id, member.test_id, :organization_id, :first_position + member.ordinal - 1
FROM unnest(:test_ids) WITH ORDINALITY AS member(test_id, ordinal)
""").bindparams(
    bindparam("test_set_id", type_=Uuid()),
    bindparam("organization_id", type_=Uuid()),
    bindparam("first_position", type_=Integer()),
    bindparam("test_ids", type_=ARRAY(Uuid())),
)


async def insert_members(
    session: AsyncSession,
    *,
    test_set: TestSet,
    test_ids: Sequence[uuid.UUID],
    first_position: int,
) -> None:
    if not test_ids:
        return
    await session.execute(
        _INSERT_MEMBERS,
        {
            "test_ids": list(test_ids),
            "test_set_id": test_set.id,
            "organization_id": test_set.organization_id,
            "first_position": first_position,
        },
    )


async def clear_members(session: AsyncSession, test_set_id: uuid.UUID) -> None:
    await session.execute(delete(TestSetMember).where(TestSetMember.test_set_id == test_set_id))


async def remove_member(session: AsyncSession, test_set_id: uuid.UUID, test_id: uuid.UUID) -> bool:
    result = await session.execute(
        delete(TestSetMember)
        .where(TestSetMember.test_set_id == test_set_id, TestSetMember.test_id == test_id)
        .returning(TestSetMember.test_id)
    )
    return result.first() is not None
