"""prune sessions after tokens: a login session is pruned only once none of its refresh tokens
remain

`assay_retention_prune` (0014) deleted a session revoked longer ago than the period, and
`ON DELETE CASCADE` took its refresh tokens with it: tokens that had not expired went (a
revoked session keeps them, so a replayed one is still recognised), uncounted (the
`refresh_tokens` kind said 0), and unbounded by the batch (a long-lived session may hold
thousands of rotated tokens). A session now goes only when it has no token left: its tokens
leave by their own step, once past their expiry and the period, counted and a batch at a time,
so a revoked session goes the period after it would have expired, as documented.

The function is changed in place (its owner, grants and every other kind as they are).

Revision ID: 0044_prune_sessions_after_tokens
Revises: 0043_queue_release_attempts
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.functions import edited_definition

revision: str = "0044_prune_sessions_after_tokens"
down_revision: str | None = "0043_queue_release_attempts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = "assay_retention_prune(integer, integer, integer, integer, integer, integer, integer)"
COMMENT_BEFORE = """\
      -- Refresh tokens past their expiry, then the login sessions that cannot go on: revoked,
      -- or left without a token. A live session always holds its newest token, so a replayed
      -- older one of it is still recognised (and revokes the session).
"""
COMMENT_AFTER = """\
      -- Refresh tokens past their expiry, then the login sessions left without a token (revoked
      -- or not: deleting a session would take its tokens with it, uncounted and unbatched). A
      -- live session always holds its newest token, and a revoked one keeps its tokens until
      -- they expire, so a replayed older one of it is still recognised (and revokes the session,
      -- or is refused).
"""
SESSIONS_BEFORE = """\
                         WHERE d.revoked_at < cutoff
                            OR (d.created_at < cutoff AND NOT EXISTS (
                                  SELECT 1 FROM refresh_tokens t WHERE t.session_id = d.id))
"""
SESSIONS_AFTER = """\
                         WHERE (d.revoked_at < cutoff OR d.created_at < cutoff)
                           AND NOT EXISTS (
                                 SELECT 1 FROM refresh_tokens t WHERE t.session_id = d.id)
"""
CHANGES = [(COMMENT_BEFORE, COMMENT_AFTER), (SESSIONS_BEFORE, SESSIONS_AFTER)]


def upgrade() -> None:
    op.execute(sa.text(edited_definition(FUNCTION, CHANGES)))


def downgrade() -> None:
    op.execute(sa.text(edited_definition(FUNCTION, [(new, old) for old, new in CHANGES])))
