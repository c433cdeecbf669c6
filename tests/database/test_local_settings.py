"""A block's server settings: in force inside it, back to what they were after it, so blocks
nest; and they never outlive their transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from utils.crud import local_settings

_SHOWN = text("SELECT current_setting('enable_sort'), current_setting('work_mem')")


async def _shown(session: AsyncSession) -> tuple[str, str]:
    sort, memory = (await session.execute(_SHOWN)).one()
    return sort, memory


async def test_settings_hold_in_their_block_and_nested_blocks_restore_the_outer_ones(
    runtime_engine: AsyncEngine,
) -> None:
    async with AsyncSession(runtime_engine) as session, session.begin():
        default = await _shown(session)
        assert default[0] == "on"
        async with local_settings(session, enable_sort="off", work_mem="3MB"):
            assert await _shown(session) == ("off", "3MB")
            async with local_settings(session, enable_sort="on"):
                assert await _shown(session) == ("on", "3MB")
            assert await _shown(session) == ("off", "3MB")
        assert await _shown(session) == default


async def test_a_block_that_raised_leaves_its_settings_only_until_the_transaction_ends(
    runtime_engine: AsyncEngine,
) -> None:
    async with runtime_engine.connect() as connection:
        session = AsyncSession(bind=connection)
        async with session.begin():
            default = await _shown(session)
            with pytest.raises(RuntimeError):
                async with local_settings(session, work_mem="7MB"):
                    raise RuntimeError("the block failed")
            assert await _shown(session) == (default[0], "7MB")
        async with session.begin():  # the same connection's next transaction
            assert await _shown(session) == default


@pytest.mark.parametrize("name", ["app.organization_id", "app.user_id", "role", "search_path"])
async def test_a_block_sets_the_planners_settings_only(
    runtime_engine: AsyncEngine, name: str
) -> None:
    async with AsyncSession(runtime_engine) as session, session.begin():
        with pytest.raises(ValueError, match="not a planner setting"):
            async with local_settings(session, **{name: "x"}):
                pass
        setting = (await session.execute(text(f"SELECT current_setting('{name}', true)"))).scalar()
        assert setting != "x"
