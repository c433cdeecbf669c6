"""metrics snapshot: the database-wide figures `/metrics` reports (runs by status, ready jobs
and the age of the oldest by kind, dead jobs), read across organizations by one function.

The function runs as `assay_metrics`, a role that may read only the columns it counts
(runs.status; jobs.kind, status, run_after) and returns aggregates, never rows.

Revision ID: 0015_metrics_snapshot
Revises: 0014_retention
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

from migrations.access import definer_role

revision: str = "0015_metrics_snapshot"
down_revision: str | None = "0014_retention"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "assay_metrics"
SIGNATURE = "assay_metrics_snapshot()"
BODY = """
    RETURNS TABLE (metric text, label text, value double precision)
    AS $$
      SELECT 'runs', status, count(*)::double precision FROM runs GROUP BY status
      UNION ALL
      SELECT 'jobs_ready', kind, count(*)::double precision
        FROM jobs WHERE status = 'queued' AND run_after <= now() GROUP BY kind
      UNION ALL
      SELECT 'jobs_oldest_ready_seconds', kind,
             extract(epoch FROM now() - min(run_after))::double precision
        FROM jobs WHERE status = 'queued' AND run_after <= now() GROUP BY kind
      UNION ALL
      SELECT 'jobs_running', kind, count(*)::double precision
        FROM jobs WHERE status = 'running' GROUP BY kind
      UNION ALL
      SELECT 'jobs_dead', kind, count(*)::double precision
        FROM jobs WHERE status = 'dead' GROUP BY kind
    $$ LANGUAGE sql STABLE"""


def upgrade() -> None:
    op.execute(definer_role(ROLE))
    op.execute(f"GRANT USAGE ON SCHEMA public TO {ROLE}")
    op.execute(f"GRANT SELECT (status) ON runs TO {ROLE}")
    op.execute(f"GRANT SELECT (kind, status, run_after) ON jobs TO {ROLE}")
    op.execute(f"CREATE POLICY metrics_snapshot ON runs FOR SELECT TO {ROLE} USING (true)")
    op.execute(f"CREATE POLICY metrics_snapshot ON jobs FOR SELECT TO {ROLE} USING (true)")
    op.execute(
        f"CREATE FUNCTION {SIGNATURE} {BODY} SECURITY DEFINER SET search_path = public, pg_temp"
    )
    op.execute(f"ALTER FUNCTION {SIGNATURE} OWNER TO {ROLE}")
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO assay_app")


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {SIGNATURE}")
    op.execute("DROP POLICY metrics_snapshot ON jobs")
    op.execute("DROP POLICY metrics_snapshot ON runs")
    op.execute(f"REVOKE ALL ON jobs FROM {ROLE}")
    op.execute(f"REVOKE ALL ON runs FROM {ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {ROLE}")
