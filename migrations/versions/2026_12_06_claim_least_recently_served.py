"""claim least recently served: among equal turns, the organization served longest ago first;
a chunk hands back to an organization with nothing under way

Claims rank due jobs by their turn in their organization (0037), but an organization whose
chunk had just ended, with nothing under way, tied a newcomer's turn, and the tie went to the
older job: a large run's chunks, all queued at its start. With every worker busy and one
organization under way on each, a newcomer's run of three cases waited for a whole run of
hundreds (50 s against a 0.5 s provider), however often a chunk ended.

Each claim now stamps the jobs it takes (`claimed_at`), and equal turns go to the
organization whose last claim is oldest (never claimed: first), then the oldest job first. The
stamp is on the claimed rows themselves: a claim never waits on another's lock.

A chunk ran its whole length (up to 500 cases) while a newcomer waited whenever every
organization under way held one worker (always, with one worker): it handed back only to an
organization with two fewer under way, so that two a worker apart do not trade one back and
forth. The organization holding the most under way now hands back to one with nothing under
way too: with more organizations than workers, they take the workers in turns of
`chunk_turn_seconds`.

Revision ID: 0040_claim_least_recently_served
Revises: 0039_queue_others_waiting
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.functions import edited_definition

revision: str = "0040_claim_least_recently_served"
down_revision: str | None = "0039_queue_others_waiting"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = "assay_queue_claim(text, integer, double precision, text[], text[], integer)"
HAND_BACK = "assay_queue_others_waiting(uuid, double precision, text[])"
# Two fewer under way than the asker, or none while the asker holds the most (ties by id):
# one organization gives a newcomer a worker, not every one that has any.
FEWER = [
    (
        """               AND coalesce(w.n, 0) + 1 < (
                 SELECT coalesce(max(o.n), 0) FROM under_way o
                  WHERE o.organization_id = p_organization
               )
""",
        """               AND (
                 coalesce(w.n, 0) + 1 < (
                   SELECT coalesce(max(o.n), 0) FROM under_way o
                    WHERE o.organization_id = p_organization
                 )
                 OR coalesce(w.n, 0) = 0 AND p_organization = (
                   SELECT m.organization_id FROM under_way m
                    ORDER BY m.n DESC, m.organization_id LIMIT 1
                 )
               )
""",
    )
]
CHANGES = [
    (
        "SELECT c.id,\n                   coalesce(under_way.n, 0)",
        "SELECT c.id, c.organization_id,\n                   coalesce(under_way.n, 0)",
    ),
    (
        "          ), picked AS MATERIALIZED (\n"
        "            SELECT c.id, c.status FROM jobs c JOIN turns t ON t.id = c.id\n",
        "          ), served AS (\n"
        "            SELECT o.organization_id,\n"
        "                   (SELECT max(x.claimed_at) FROM jobs x\n"
        "                     WHERE x.organization_id = o.organization_id) AS served_at\n"
        "              FROM (SELECT DISTINCT t.organization_id FROM turns t) o\n"
        "          ), picked AS MATERIALIZED (\n"
        "            SELECT c.id, c.status FROM jobs c JOIN turns t ON t.id = c.id\n"
        "              LEFT JOIN served s ON s.organization_id = t.organization_id\n",
    ),
    ("ORDER BY t.turn, c.run_after", "ORDER BY t.turn, s.served_at NULLS FIRST, c.run_after"),
    (
        ", updated_at = now()\n            FROM picked",
        ", updated_at = now(),\n                 claimed_at = now()\n            FROM picked",
    ),
]


def upgrade() -> None:
    op.add_column("jobs", sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_jobs_organization_claimed", "jobs", ["organization_id", "claimed_at"])
    op.execute(sa.text(edited_definition(FUNCTION, CHANGES)))
    op.execute(sa.text(edited_definition(HAND_BACK, FEWER)))


def downgrade() -> None:
    op.execute(sa.text(edited_definition(HAND_BACK, [(new, old) for old, new in FEWER])))
    op.execute(sa.text(edited_definition(FUNCTION, [(new, old) for old, new in CHANGES])))
    op.drop_index("ix_jobs_organization_claimed", "jobs")
    op.drop_column("jobs", "claimed_at")
