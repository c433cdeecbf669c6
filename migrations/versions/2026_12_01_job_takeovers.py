"""job takeovers: a job taken over from a dead process (its lease ran out) counts a takeover,
not an attempt; attempts count only the runs whose handler raised. Takeovers have a cap of
their own.

Revision ID: 0008_job_takeovers
Revises: 0007_verdicts
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_job_takeovers"
down_revision: str | None = "0007_verdicts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORKER_ROLE = "assay_worker"
SIGNATURE = "assay_queue_claim(p_worker text, p_limit integer, p_lease double precision)"
RETURNS = """RETURNS TABLE (id uuid, organization_id uuid, kind text, payload jsonb,
                       attempts integer, max_attempts integer{extra})"""
CLAIM = """
        AS $$
          -- A MATERIALIZED CTE is evaluated once: a LIMIT ... SKIP LOCKED subquery inside
          -- UPDATE ... FROM/IN may be rescanned by the planner and claim more than p_limit.
          WITH picked AS MATERIALIZED (
            SELECT c.id, c.status FROM jobs c
             WHERE (c.status = 'queued' AND c.run_after <= now())
                OR (c.status = 'running' AND c.locked_until < now())
             ORDER BY c.run_after
             LIMIT p_limit
             FOR UPDATE SKIP LOCKED
          )
          UPDATE jobs j
             SET status = 'running', locked_by = p_worker,
                 locked_until = now() + make_interval(secs => p_lease),
                 {counts}, updated_at = now()
            FROM picked
           WHERE j.id = picked.id
          RETURNING j.id, j.organization_id, j.kind, j.payload, j.attempts, j.max_attempts{extra}
        $$ LANGUAGE sql VOLATILE"""


def _replace_claim(returns: str, body: str) -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
    op.execute(
        f"CREATE FUNCTION {SIGNATURE} {returns} {body}"
        " SECURITY DEFINER SET search_path = public, pg_temp"
    )
    op.execute(f"ALTER FUNCTION {SIGNATURE} OWNER TO {WORKER_ROLE}")
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO assay_app")


def upgrade() -> None:
    op.add_column("jobs", sa.Column("takeovers", sa.Integer, nullable=False, server_default="0"))
    op.add_column(
        "jobs", sa.Column("max_takeovers", sa.Integer, nullable=False, server_default="20")
    )
    extra = ",\n                       takeovers integer, max_takeovers integer"
    counts = (
        "attempts = j.attempts + (picked.status = 'queued')::int,"
        " takeovers = j.takeovers + (picked.status = 'running')::int"
    )
    _replace_claim(
        RETURNS.format(extra=extra),
        CLAIM.format(counts=counts, extra=", j.takeovers, j.max_takeovers"),
    )


def downgrade() -> None:
    _replace_claim(
        RETURNS.format(extra=""), CLAIM.format(counts="attempts = j.attempts + 1", extra="")
    )
    op.drop_column("jobs", "max_takeovers")
    op.drop_column("jobs", "takeovers")
