"""Changing a function in place: its definition as PostgreSQL holds it, edited, so that a
migration restates only what it changes (its owner, settings and the rest of its body stay)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def edited_definition(signature: str, changes: list[tuple[str, str]]) -> str:
    """The CREATE OR REPLACE statement of the function `signature` (e.g. `f(integer, text)`),
    each (old, new) of `changes` replaced in it; each old text must occur once."""
    definition = op.get_bind().scalar(
        sa.text("SELECT pg_get_functiondef(CAST(:function AS regprocedure))"),
        {"function": signature},
    )
    assert definition is not None, f"no function {signature}"
    for old, new in changes:
        assert definition.count(old) == 1, f"{signature} is not as expected: {old!r}"
        definition = definition.replace(old, new)
    return str(definition)


def replace_signature(
    signature: str, changes: list[tuple[str, str]], new_signature: str, *, owner: str
) -> None:
    """The function `signature` dropped and made again, edited (`edited_definition`), with a
    new signature (its arguments changed): its owner `owner`, executed by the runtime role
    only, as before."""
    definition = edited_definition(signature, changes)
    op.execute(f"DROP FUNCTION {signature}")
    op.execute(sa.text(definition))
    op.execute(f"ALTER FUNCTION {new_signature} OWNER TO {owner}")
    op.execute(f"REVOKE ALL ON FUNCTION {new_signature} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {new_signature} TO assay_app")
