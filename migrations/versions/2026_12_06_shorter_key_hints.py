"""shorter key hints: stored hints shown as the new rule shows them, at most

A model's key hint (which viewers read) is computed when the key is saved. It showed a key's
first three and last four characters from nine characters on (seven of a twelve-character
token); it now shows at most a sixth of the key, and nothing of one under twelve characters.
A stored hint cannot tell a nine-character key from a long one, so every one is cut to what
the rule shows of the shortest: nothing. Saving a key again shows it as the rule says for its
length. There is no way back: a hint cut is not restored.

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
        f"UPDATE model_configs SET api_key_hint = '{HIDDEN}'"
        f" WHERE api_key_hint IS NOT NULL AND api_key_hint <> '{HIDDEN}'",
    )


def downgrade() -> None:
    pass  # (see the module: cut hints stay cut)
