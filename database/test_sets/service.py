"""Test sets: ordered membership, immutable versions, import and export."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from database.projects.service import require_project
from database.test_sets import crud
from database.test_sets.content_hash import ContentHash
from database.test_sets.crud import version_cases
from database.test_sets.exports import case_encoder, current_pages, version_pages
from database.test_sets.import_threads import off_loop as off_loop
from database.test_sets.io import Format, parse_case_documents, require_cases
from database.test_sets.models import TestSet, TestSetVersion
from database.test_sets.schemas import TestSetCreate, TestSetRead, TestSetUpdate
from database.test_sets.slice_index import SliceIndex
from database.test_sets.streaming import ConvertedPages, ReadPage, stream_pages
from database.test_sets.sync_cases import current_cases
from database.test_sets.sync_cases import stored_case as _stored
from database.tests import crud as test_crud
from database.tests.schemas import TestBulkCreate
from utils.auth import Principal
from utils.crud import apply_update, refuse_nulls
from utils.errors import InvalidInput, NotFound
from utils.ids import new_id

ImportMode = Literal["append", "sync"]


async def get_test_set_or_404(
    session: AsyncSession, test_set_id: uuid.UUID, *, for_update: bool = False
) -> TestSet:
    test_set = await crud.get_test_set(session, test_set_id, for_update=for_update)
    if test_set is None:
        raise NotFound("Test set not found")
    return test_set


async def require_test_set(session: AsyncSession, test_set_id: uuid.UUID, *, field: str) -> TestSet:
    """A test set named in a request body: unknown (or another organization's) is a 422."""
    test_set = await crud.get_test_set(session, test_set_id, for_update=True)
    if test_set is None:
        raise InvalidInput("no such test set", field=field)
    return test_set


async def to_reads(session: AsyncSession, test_sets: Sequence[TestSet]) -> list[TestSetRead]:
    counts = await crud.counts(session, [s.id for s in test_sets])
    return [
        TestSetRead(
            id=s.id,
            project_id=s.project_id,
            name=s.name,
            description=s.description,
            test_count=counts[s.id][0],
            latest_version=counts[s.id][1],
            created_at=s.created_at,
            updated_at=s.updated_at,
        )
        for s in test_sets
    ]


async def create_test_set(
    session: AsyncSession, principal: Principal, body: TestSetCreate
) -> TestSet:
    await require_project(session, body.project_id, field="project_id")
    test_set = await crud.create_test_set(
        session,
        TestSet(
            organization_id=principal.organization_id,
            project_id=body.project_id,
            name=body.name,
            description=body.description,
        ),
    )
    if body.test_ids:
        await _check_tests(session, test_set, body.test_ids)
        await crud.insert_members(
            session, test_set=test_set, test_ids=body.test_ids, first_position=0
        )
    return test_set


async def update_test_set(session: AsyncSession, test_set: TestSet, body: TestSetUpdate) -> None:
    changes = body.model_dump(exclude_unset=True)
    refuse_nulls(changes, "name")
    apply_update(test_set, changes)
    await crud.save_test_set(session)


async def create_tests_bulk(
    session: AsyncSession, principal: Principal, body: TestBulkCreate
) -> list[uuid.UUID]:
    """Creates tests in one go and, given a set of the same project, appends them to it."""
    await require_project(session, body.project_id, field="project_id")
    test_set = None
    if body.test_set_id is not None:
        test_set = await require_test_set(session, body.test_set_id, field="test_set_id")
        if test_set.project_id != body.project_id:
            raise InvalidInput("belongs to another project", field="test_set_id")
    ids = await test_crud.insert_tests(
        session,
        organization_id=principal.organization_id,
        project_id=body.project_id,
        cases=[case.model_dump(mode="json") for case in body.tests],
    )
    if test_set is not None:
        await append_members(session, test_set, ids)
    return ids


# --- membership -----------------------------------------------------------------------------


async def _check_tests(
    session: AsyncSession, test_set: TestSet, test_ids: Sequence[uuid.UUID]
) -> None:
    """Every id must be a test of the set's project (another organization's is unknown)."""
    if len(set(test_ids)) != len(test_ids):
        raise InvalidInput("lists a test more than once", field="test_ids")
    found = await test_crud.existing_test_ids(session, test_ids, project_id=test_set.project_id)
    missing = [str(test_id) for test_id in test_ids if test_id not in found]
    if missing:
        raise InvalidInput(
            f"{len(missing)} test id(s) are not tests of this set's project: "
            + ", ".join(missing[:20]),
            errors=[
                {"field": "test_ids", "message": "unknown test", "value": m} for m in missing[:100]
            ],
        )


async def append_members(
    session: AsyncSession, test_set: TestSet, test_ids: Sequence[uuid.UUID]
) -> int:
    """Appends tests not yet in the set, in the given order; returns how many were added."""
    present = await crud.held_ids(session, test_set.id, test_ids)
    new = [test_id for test_id in dict.fromkeys(test_ids) if test_id not in present]
    if new:
        await _check_tests(session, test_set, new)
        first = await crud.max_position(session, test_set.id) + 1
        await crud.insert_members(session, test_set=test_set, test_ids=new, first_position=first)
    return len(new)


async def replace_members(
    session: AsyncSession, test_set: TestSet, test_ids: Sequence[uuid.UUID]
) -> int:
    """The set then holds exactly `test_ids`, in order; returns how many it did not before."""
    await _check_tests(session, test_set, test_ids)
    held = await crud.count_held(session, test_set.id, set(test_ids)) if test_ids else 0
    await crud.clear_members(session, test_set.id)
    await crud.insert_members(session, test_set=test_set, test_ids=test_ids, first_position=0)
    return len(set(test_ids)) - held


async def remove_member(session: AsyncSession, test_set: TestSet, test_id: uuid.UUID) -> None:
    if not await crud.remove_member(session, test_set.id, test_id):
        raise NotFound("This test is not in the test set")


# --- versions -------------------------------------------------------------------------------


async def _published_pages(
    session: AsyncSession, test_ids: Sequence[uuid.UUID], digest: ContentHash, slices: SliceIndex
) -> AsyncIterator[list[tuple[uuid.UUID | None, dict[str, Any]]]]:
    """The cases of `test_ids` a page at a time, each made, hashed into `digest` and indexed
    into `slices` in a thread: on the event loop, a page of 5,000 held it for half a second
    (and every run of a changed set publishes it)."""
    for start in range(0, len(test_ids), test_crud.ROWS_PER_STATEMENT):
        tests = await crud.tests_in_order(
            session, test_ids[start : start + test_crud.ROWS_PER_STATEMENT]
        )
        yield await asyncio.to_thread(_published_page, tests, digest, slices)


def _published_page(
    tests: list[Any], digest: ContentHash, slices: SliceIndex
) -> list[tuple[uuid.UUID | None, dict[str, Any]]]:
    cases = [test_crud.case_fields(test) for test in tests]
    digest.add(cases)
    slices.add(cases)
    return [(test.id, case) for test, case in zip(tests, cases, strict=True)]


async def publish(
    session: AsyncSession, test_set: TestSet, note: str | None = None
) -> tuple[TestSetVersion, bool]:
    """The version holding the set's current cases: made now if they (or the tests holding
    them) changed since the last one. Returns it and whether it is new. Callers hold the set's
    row lock (for_update).

    An unchanged set (its content revision is the one last published) is answered without
    reading its cases: a run of a large set starts at once."""
    latest, revision, holds_cases = await _latest_version(session, test_set)
    if latest is not None and holds_cases:
        return latest, False
    await crud.mark_published(session, test_set.id, revision)
    # A large set is never held whole, nor read twice: a page at a time, its cases are hashed
    # and copied under the id of a version written after them, whole (versions are immutable),
    # once their digest is known; their key to it is checked at commit.
    version = TestSetVersion(
        id=new_id(),
        organization_id=test_set.organization_id,
        test_set_id=test_set.id,
        number=(latest.number + 1) if latest else 1,
        note=note,
    )
    attempt = await session.begin_nested()
    await crud.defer_version_key(session)
    digest, slices = ContentHash(), SliceIndex()
    test_ids, position = await crud.member_order(session, test_set.id), 0
    async for cases in _published_pages(session, test_ids, digest, slices):
        await crud.insert_version_cases(session, version, cases, first_position=position)
        position += len(cases)
    # The digest covers the cases, not their tests: the same text of other tests (a test
    # deleted and made again, or equal tests reordered) is a new version, else runs of the set
    # would pin one naming tests it no longer holds.
    if (
        latest is not None
        and latest.content_hash == digest.hexdigest()
        and await version_cases.same_tests(session, version.id, latest.id)
    ):
        await attempt.rollback()  # a change undone: the latest version holds these tests
        return latest, False
    version.content_hash, version.case_count = digest.hexdigest(), digest.count
    version.slice_values, version.slice_codes = slices.values(), slices.codes()
    session.add(version)
    await attempt.commit()
    return version, True


async def published_hash(session: AsyncSession, test_set: TestSet) -> str | None:
    """The content hash of the set's cases when its latest version holds them still, read
    from that version, not from the cases; else None."""
    latest, _, holds_cases = await _latest_version(session, test_set)
    return latest.content_hash if latest is not None and holds_cases else None


async def _latest_version(
    session: AsyncSession, test_set: TestSet
) -> tuple[TestSetVersion | None, int, bool]:
    """The set's latest version, the set's content revision, and whether that version holds
    the set's cases still: the revision is the one it was published at, nothing changed since."""
    revision, published = await crud.revisions(session, test_set.id)
    return await crud.latest_version(session, test_set.id), revision, revision == published


async def get_version_or_404(
    session: AsyncSession, test_set: TestSet, number: int
) -> TestSetVersion:
    version = await crud.get_version(session, test_set.id, number)
    if version is None:
        raise NotFound("Version not found")
    return version


# --- import and export ----------------------------------------------------------------------


def parsed_cases(
    content: bytes, fmt: Format, hashed: bool
) -> tuple[list[dict[str, Any]], str | None]:
    """A native file's cases as `write_cases` takes them (run it `off_loop`), and when
    `hashed` their content hash, as a version holding exactly them has it. A file may hold
    none: a sync of it empties the set (an append of it is refused by `write_cases`)."""
    if not hashed:
        return parse_case_documents(content, fmt, allow_empty=True), None
    digest = ContentHash()
    cases = parse_case_documents(
        content, fmt, allow_empty=True, seen=lambda dumped: digest.add((dumped,))
    )
    return cases, digest.hexdigest()


async def write_cases(
    session: AsyncSession,
    principal: Principal,
    test_set: TestSet,
    cases: list[dict[str, Any]],
    *,
    mode: ImportMode,
    content_hash: str | None = None,
) -> tuple[int, bool]:
    """Writes parsed cases to the set; returns the tests written and whether the set changed.

    `append` adds every case as a new test (and refuses no cases). `sync` makes the set hold
    exactly these cases, in this order (no cases empties it): a set that holds them already is
    not touched (so no new version is made), and otherwise a case equal to one of the set's
    tests keeps that test (its id, so comparisons pair it with earlier runs) while the others
    become new tests.

    A sync given the cases' `content_hash` (see `parsed_cases`) that is the `published_hash`
    holds them already, and its cases are not read (a set synced from the same file before
    every run: each run publishes it)."""
    if mode == "append":
        ids = await _insert(session, principal, test_set, require_cases(cases))
        first = await crud.max_position(session, test_set.id) + 1
        await crud.insert_members(session, test_set=test_set, test_ids=ids, first_position=first)
        return len(ids), True
    if content_hash is not None and content_hash == await published_hash(session, test_set):
        return 0, False
    held = await current_cases(session, test_set)
    kept = await off_loop(test_set.organization_id, held.kept, cases)
    if kept is None:
        return 0, False
    new = [case for case, test_id in zip(cases, kept, strict=True) if test_id is None]
    inserted = iter(await _insert(session, principal, test_set, new))
    order = [test_id if test_id is not None else next(inserted) for test_id in kept]
    await crud.clear_members(session, test_set.id)
    await crud.insert_members(session, test_set=test_set, test_ids=order, first_position=0)
    return len(new), True


async def _insert(
    session: AsyncSession, principal: Principal, test_set: TestSet, cases: list[dict[str, Any]]
) -> list[uuid.UUID]:
    return await test_crud.insert_tests(
        session,
        organization_id=principal.organization_id,
        project_id=test_set.project_id,
        cases=cases,
    )


async def export(
    session: AsyncSession,
    principal: Principal,
    test_set: TestSet,
    fmt: Format,
    *,
    version_number: int | None,
) -> AsyncIterator[bytes]:
    """The set's cases (current, or a published version's) as a streamed document. A version
    that does not exist is a NotFound here, before anything is sent."""
    read_page: ReadPage[dict[str, Any]]
    if version_number is None:
        # The order is read now, ids only; the cases follow a page at a time.
        read_page = current_pages(test_set.id, await crud.member_order(session, test_set.id))
    else:
        version = await get_version_or_404(session, test_set, version_number)
        read_page = version_pages(version.id)
    return stream_pages(principal, read_page, ConvertedPages(_stored, case_encoder(fmt)))
