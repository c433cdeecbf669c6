"""claim takes turns: due jobs are claimed by each organization's turn, then oldest first

Claimed oldest first across every organization, one organization's large run (its chunks all
queued at its start) held every worker of every process until it ended: another's run of one
case, made a moment later, stayed queued behind all of it (hours, against a slow provider).
The claim now ranks each due job by its turn in its organization (how many of that
organization's jobs are under way, plus its place among the organization's due ones, oldest
first), and takes the lowest turns first, the oldest first among equal turns. Within one
organization the order is as before; an organization with nothing under way goes next.

The function is changed in place (its owner, grants and the rest of its body as they are).

Revision ID: 0037_claim_takes_turns
Revises: 0036_shorter_key_hints
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.functions import edited_definition

revision: str = "0037_claim_takes_turns"
down_revision: str | None = "0036_shorter_key_hints"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = "assay_queue_claim(text, integer, double precision, text[], text[], integer)"
DUE = """((c.status = 'queued' AND c.run_after <= now())
                OR (c.status = 'running' AND c.locked_until < now()))
               AND c.kind <> ALL (p_skip_kinds)"""
# As 0032_claim_per_organization left it.
OLDEST_FIRST = f"""picked AS MATERIALIZED (
            SELECT c.id, c.status FROM jobs c
             WHERE {DUE}
               AND (c.kind <> ALL (p_capped_kinds) OR c.id IN (SELECT a.id FROM allowed a))
             ORDER BY c.run_after
             LIMIT p_limit
             FOR UPDATE SKIP LOCKED
          )"""
# `turns` ranks from a snapshot (a window cannot lock); `picked` keeps the conditions on `c`,
# so a job another claim took and committed meanwhile is checked again as it is locked.
BY_TURNS = f"""under_way AS (
            SELECT u.organization_id, count(*) AS n FROM jobs u
             WHERE u.status = 'running' AND u.locked_until >= now()
             GROUP BY u.organization_id
          ), turns AS (
            SELECT c.id,
                   coalesce(under_way.n, 0)
                     + row_number() OVER (PARTITION BY c.organization_id ORDER BY c.run_after)
                     AS turn
              FROM jobs c LEFT JOIN under_way ON under_way.organization_id = c.organization_id
             WHERE {DUE}
               AND (c.kind <> ALL (p_capped_kinds) OR c.id IN (SELECT a.id FROM allowed a))
          ), picked AS MATERIALIZED (
            SELECT c.id, c.status FROM jobs c JOIN turns t ON t.id = c.id
             WHERE {DUE}
             ORDER BY t.turn, c.run_after
             LIMIT p_limit
             FOR UPDATE OF c SKIP LOCKED
          )"""


def _replace(old: str, new: str) -> None:
    op.execute(sa.text(edited_definition(FUNCTION, [(old, new)])))


def upgrade() -> None:
    _replace(OLDEST_FIRST, BY_TURNS)


def downgrade() -> None:
    _replace(BY_TURNS, OLDEST_FIRST)
