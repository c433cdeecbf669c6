"""legacy run starts: `run.start` jobs still queued from before POST /runs queued a run's chunks
itself become those `run.chunk` jobs, so no job of a kind that nothing handles any more is left

A run.start job split its run (its case positions, or every case when it lists none) into
chunks of ASSAY_RUN_CHUNK_SIZE cases x repetitions; this uses the setting's default (500),
which only decides how many chunks share the run's cases.

Revision ID: 0006_legacy_run_starts
Revises: 0005_set_revisions
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from migrations.rls import across_organizations

revision: str = "0006_legacy_run_starts"
down_revision: str | None = "0005_set_revisions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK_SIZE = 500
# Runs and jobs force row-level security on their owner too: the rewrite spans organizations,
# so it runs with the policies lifted for this transaction only.
TABLES = ("jobs", "runs")

_CHUNK_JOBS = f"""
WITH legacy AS (
    SELECT r.id AS run_id, r.organization_id, GREATEST(1, {CHUNK_SIZE} / r.repetitions) AS size,
           CASE WHEN jsonb_typeof(r.case_positions) = 'array'
                     AND jsonb_array_length(r.case_positions) > 0
                THEN ARRAY(SELECT jsonb_array_elements_text(r.case_positions)::int)
                ELSE ARRAY(SELECT generate_series(0, r.total / r.repetitions - 1))
           END AS positions
    FROM jobs j JOIN runs r ON r.id = (j.payload ->> 'run_id')::uuid
    WHERE j.kind = 'run.start' AND j.status IN ('queued', 'running')
      AND r.status IN ('queued', 'running')
), chunks AS (
    SELECT l.run_id, l.organization_id, (p.n - 1) / l.size AS chunk,
           array_agg(p.position ORDER BY p.n) AS positions
    FROM legacy l, unnest(l.positions) WITH ORDINALITY AS p(position, n)
    GROUP BY l.run_id, l.organization_id, (p.n - 1) / l.size
)
INSERT INTO jobs (id, organization_id, kind, payload, idempotency_key, status, attempts,
                  max_attempts)
SELECT gen_random_uuid(), organization_id, 'run.chunk',
       jsonb_build_object(
           'run_id', run_id::text,
           'positions', to_jsonb(positions),
           'chunks', count(*) OVER (PARTITION BY run_id)
       ),
       'run:' || run_id || ':chunk:' || chunk, 'queued', 0, 5
FROM chunks
ON CONFLICT (idempotency_key) DO NOTHING
"""

_RETIRE = """
UPDATE jobs SET status = 'done', finished_at = now(), locked_by = NULL, locked_until = NULL,
       last_error = 'replaced by its run.chunk jobs at upgrade'
WHERE kind = 'run.start' AND status IN ('queued', 'running')
"""


def upgrade() -> None:
    across_organizations(TABLES, _CHUNK_JOBS, _RETIRE)


def downgrade() -> None:
    """Nothing to undo: the chunk jobs are what the run.start jobs would have queued."""
