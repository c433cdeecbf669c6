"""shorter key hints: stored hints shown as the new rule shows them

A model's key hint (which viewers read) is computed when the key is saved. It showed a key's
first three and last four characters from nine characters on (seven of a twelve-character
token); it now shows at most a sixth of the key. The hints already stored are cut to what the
rule would show of the shortest key they could stand for: the last two characters of one that
shows its start, nothing of one that showed two characters alone (a key under nine
characters). Saving a key again shows it as the rule says for its length. There is no way
back: a hint cut is not restored.

Revision ID: 0036_shorter_key_hints
Revises: 0035_api_key_makers
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from migrations.rls import across_organizations

revision: str = "0036_shorter_key_hints"
down_revision: str | None = "0035_api_key_makers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HIDDEN = "…"


def upgrade() -> None:
    across_organizations(
        ("model_configs",),
        f"UPDATE model_configs SET api_key_hint = CASE"
        f" WHEN api_key_hint LIKE '{HIDDEN}%' THEN '{HIDDEN}'"
        f" ELSE '{HIDDEN}' || right(api_key_hint, 2) END"
        f" WHERE api_key_hint IS NOT NULL AND api_key_hint <> '{HIDDEN}'",
    )


def downgrade() -> None:
    pass  # (see the module: cut hints stay cut)
