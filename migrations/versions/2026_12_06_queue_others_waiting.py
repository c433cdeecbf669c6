"""queue others waiting: whether another organization's due job waits for a worker

Claims take turns by organization, but a worker is free only once its job ends: one
organization's long run held every worker (its chunks run up to 500 cases each), and another's
run of one case waited for a chunk to end (72 s against a 100 ms provider, hours against a
slow one). A chunk now asks, every so often, whether another organization's chunk has waited
for a worker while that organization has fewer under way; if so, it hands the rest of its
cases back to the queue (see app/engine). The
jobs table is seen across organizations only by the queue's own role: a SECURITY DEFINER
function answers, as the claim does.

Revision ID: 0039_queue_others_waiting
Revises: 0038_invitation_key_makers
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0039_queue_others_waiting"
down_revision: str | None = "0038_invitation_key_makers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORKER_ROLE = "assay_worker"
SIGNATURE = (
    "assay_queue_others_waiting(p_organization uuid, p_waited double precision, p_kinds text[])"
)
# A job of `p_kinds` of another organization, due and unclaimed for `p_waited` seconds, whose
# organization has fewer jobs under way than this one less one: its turn is before this one's
# next (as the claim ranks turns), and handing one job back frees it a worker. Two
# organizations with as many under way each are even: neither hands back.
BODY = """
        RETURNS boolean
        AS $$
          WITH under_way AS (
            SELECT u.organization_id, count(*) AS n FROM jobs u
             WHERE u.status = 'running' AND u.locked_until >= now()
             GROUP BY u.organization_id
          )
          SELECT EXISTS (
            SELECT 1 FROM jobs c LEFT JOIN under_way w ON w.organization_id = c.organization_id
             WHERE c.status = 'queued'
               AND c.run_after <= now() - make_interval(secs => p_waited)
               AND c.kind = ANY (p_kinds)
               AND c.organization_id <> p_organization
               AND coalesce(w.n, 0) + 1 < (
                 SELECT coalesce(max(o.n), 0) FROM under_way o
                  WHERE o.organization_id = p_organization
               )
          )
        $$ LANGUAGE sql STABLE"""


def upgrade() -> None:
    op.execute(
        f"CREATE FUNCTION {SIGNATURE} {BODY} SECURITY DEFINER SET search_path = public, pg_temp"
    )
    op.execute(f"ALTER FUNCTION {SIGNATURE} OWNER TO {WORKER_ROLE}")
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO assay_app")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
