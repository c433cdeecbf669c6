"""The tests table holds to what the API validates (migration 0024_test_input_check): a row
has an input, a non-empty chat or a conversation, however it is written."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import null, text, update
from sqlalchemy.exc import IntegrityError

from database.migrate import migrate
from database.tests.models import TestCase
from tests.helpers import create_project, create_test, register, tenant_session
from tests.scratch import downgrade


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"messages": []},
        {"messages": null()},
        {"conversation": null()},
        {"expected_output": "only this"},
    ],
    ids=["nothing", "an empty chat", "no chat", "no conversation", "only an answer"],
)
async def test_a_row_without_input_is_refused(client, database, fields):
    owner = await register(client)
    project = await create_project(client, owner)
    row = TestCase(
        organization_id=owner.organization_id, project_id=uuid.UUID(project["id"]), **fields
    )
    with pytest.raises(IntegrityError, match="ck_tests_has_input"):
        async with tenant_session(database, owner.organization_id) as session:
            session.add(row)
            await session.flush()


async def test_each_kind_of_input_is_enough_on_its_own(client, database):
    owner = await register(client)
    project = await create_project(client, owner)
    chat = await create_test(
        client, owner, project["id"], messages=[{"role": "user", "content": "Hi"}]
    )
    talk = await create_test(client, owner, project["id"], conversation={"turns": ["Hi", "Bye"]})
    prompt = await create_test(client, owner, project["id"], input="Hi")
    async with tenant_session(database, owner.organization_id) as session:
        # A conversation-only test whose "no chat" is SQL's NULL, as a set-based write may leave
        # it: the check is about what the row holds, not how an absent chat is spelled.
        await session.execute(
            update(TestCase).where(TestCase.id == talk["id"]).values(messages=null())
        )
    for test, emptied in ((chat, {"messages": []}), (prompt, {"input": None})):
        with pytest.raises(IntegrityError, match="ck_tests_has_input"):
            async with tenant_session(database, owner.organization_id) as session:
                await session.execute(
                    update(TestCase).where(TestCase.id == test["id"]).values(**emptied)
                )


INPUT_CHECK = "0024_test_input_check"
BEFORE = "0023_metric_judge_index"
_OWNERS = (
    "INSERT INTO organizations (id, name) VALUES (:org, 'o')",
    "INSERT INTO projects (id, organization_id, name) VALUES (:project, :org, 'p')",
)
# A test of each kind, with "no chat" and "no conversation" as the ORM writes them (JSON null).
_TEST = (
    "INSERT INTO tests (id, organization_id, project_id, context, tags, variables, metadata,"
    " input, messages, conversation)"
    " VALUES (gen_random_uuid(), :org, :project, '[]', '{}', '{}', '{}', "
)
_TESTS_OF_EACH_KIND = (
    _TEST + "'q', 'null', 'null')",
    _TEST + 'NULL, \'[{"role": "user", "content": "Hi"}]\', \'null\')',
    _TEST + "NULL, 'null', '{\"turns\": [\"Hi\"]}')",
)
_CONVERSATION_WITHOUT_CHAT = text(_TEST + 'NULL, NULL, \'{"turns": ["Hi"]}\')')


async def test_the_check_holds_for_new_rows_leaves_the_rows_before_it_and_goes_down_and_up(
    own_database,
):
    url = own_database.url.render_as_string(hide_password=False)
    await migrate(url, None, revision=BEFORE)
    ids = {"org": uuid.uuid4(), "project": uuid.uuid4()}
    async with own_database.begin() as connection:
        for statement in (*_OWNERS, *_TESTS_OF_EACH_KIND):
            await connection.execute(text(statement), ids)

    # An old row the new check would refuse: the migration leaves it (NOT VALID: no scan).
    async with own_database.begin() as connection:
        await connection.execute(text(_TEST + "NULL, '[]', 'null')"), ids)
    await migrate(url, None, revision=INPUT_CHECK)
    async with own_database.begin() as connection:
        await connection.execute(_CONVERSATION_WITHOUT_CHAT, ids)
        assert (await connection.execute(text("SELECT count(*) FROM tests"))).scalar() == 5
    with pytest.raises(IntegrityError, match="ck_tests_has_input"):
        async with own_database.begin() as connection:
            await connection.execute(text(_TEST + "NULL, '[]', 'null')"), ids)

    async with own_database.begin() as connection:
        await connection.run_sync(downgrade, BEFORE)  # with a row the old check would refuse
    with pytest.raises(IntegrityError, match="ck_tests_has_input"):
        async with own_database.begin() as connection:
            await connection.execute(_CONVERSATION_WITHOUT_CHAT, ids)
