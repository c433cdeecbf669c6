"""retention: pruning of finished runs' events, finished jobs, the webhook delivery log, expired
sessions and invitations.

Pruning looks across organizations, which the runtime role cannot: one SECURITY DEFINER
function does it, owned by `assay_maintenance`, a role that may read only the columns the
cut-offs compare and delete only from the pruned tables (runs are read, never deleted; results,
tests and everything else are out of its reach). Not the migration owner: FORCE ROW LEVEL
SECURITY holds a non-superuser owner to the tenant policies, so it would see no rows.

The function takes the cut-off ages in days (NULL: keep that kind forever) and a batch size,
deletes at most one batch of each kind per call (each call its own short transaction), and
returns the rows each kind lost. A batch is `p_batch` rows, except for run events, which go a
whole run at a time (see the function). It holds a transaction-level advisory lock while it
works: a second caller gets no rows back at once, meaning another process is pruning.

The maintenance job is a job of no tenant's: it belongs to a reserved organization that has no
members (nobody can act for it), so the queue's tenant rules hold for it unchanged and an
unscoped transaction still sees no job at all.

Two indexes keep each batch from scanning whole tables: finished jobs by their end, refresh
tokens by their expiry. The delivery log is scanned: it holds no more than the deliveries of
one retention period.

Revision ID: 0014_retention
Revises: 0013_provider_pacing
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

from migrations.access import definer_role
from migrations.rls import across_organizations

revision: str = "0014_retention"
down_revision: str | None = "0013_provider_pacing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "assay_maintenance"
SYSTEM_ORGANIZATION_ID = "00000000-0000-0000-0000-000000000000"
SYSTEM_ORGANIZATION_NAME = "Assay maintenance (system)"
SIGNATURE = (
    "assay_retention_prune(p_run_events_days integer, p_jobs_days integer,"
    " p_dead_jobs_days integer, p_sessions_days integer, p_invitations_days integer,"
    " p_batch integer)"
)
DROP_SIGNATURE = "assay_retention_prune(integer, integer, integer, integer, integer, integer)"
# What the function may read (to compare with the cut-offs) and delete, table by table.
READS = {
    "runs": "id, status, finished_at, updated_at",
    "run_events": "run_id",
    "jobs": "id, status, finished_at, kind, payload",
    "webhook_deliveries": "id, status, created_at, last_attempt_at, delivered_at",
    "refresh_tokens": "id, session_id, expires_at",
    "auth_sessions": "id, revoked_at, created_at",
    "invitations": "id, expires_at, accepted_at, revoked_at",
}
DELETES = (
    "run_events",
    "jobs",
    "webhook_deliveries",
    "refresh_tokens",
    "auth_sessions",
    "invitations",
)
BODY = """
    RETURNS TABLE (category text, pruned bigint)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = public, pg_temp
    SET lock_timeout = '10s'
    AS $$
    DECLARE
      batch integer := least(greatest(coalesce(p_batch, 1000), 1), 50000);
      cutoff timestamptz;
      ended_run uuid;
      gone bigint;
      job_status text;
      days integer;
    BEGIN
      IF least(p_run_events_days, p_jobs_days, p_dead_jobs_days, p_sessions_days,
               p_invitations_days) < 1 THEN
        RAISE EXCEPTION 'retention periods are whole days, at least 1'
          USING ERRCODE = 'invalid_parameter_value';
      END IF;
      -- One pruner at a time across every process; the lock ends with the transaction.
      IF NOT pg_try_advisory_xact_lock(hashtextextended('assay.retention', 0)) THEN
        RETURN;
      END IF;

      -- Events of runs that ended (a run still going keeps its log, however old), a whole run
      -- at a time: a live replay must never find part of a run's log, and a finished run with
      -- no event left reads as pruned. Runs are taken one by one until their events reach
      -- the batch's rows, so a batch is at most `batch` runs (each has an event) and at most
      -- `batch` rows plus the last run's (a run larger than the batch goes alone, whole).
      category := 'run_events'; pruned := 0;
      IF p_run_events_days IS NOT NULL THEN
        cutoff := now() - make_interval(days => p_run_events_days);
        FOR ended_run IN
          SELECT r.id FROM runs r
           WHERE r.status IN ('completed', 'failed', 'cancelled', 'stopped')
             AND coalesce(r.finished_at, r.updated_at) < cutoff
             AND EXISTS (SELECT 1 FROM run_events ev WHERE ev.run_id = r.id)
           LIMIT batch
        LOOP
          DELETE FROM run_events e WHERE e.run_id = ended_run;
          GET DIAGNOSTICS gone = ROW_COUNT;
          pruned := pruned + gone;
          EXIT WHEN pruned >= batch;
        END LOOP;
      END IF;
      RETURN NEXT;

      -- Finished jobs, then dead ones, each after its own period. A run's chunk jobs are its
      -- plan: resuming a run that ended without completing (failed, cancelled, stopped)
      -- rebuilds its work from all of them, so they stay while their run exists and has not
      -- completed. ('run.chunk' is the results' CHUNK_JOB; CASE: only a chunk job's payload is
      -- read as naming a run.)
      FOR category, job_status, days IN
        VALUES ('jobs', 'done', p_jobs_days), ('dead_jobs', 'dead', p_dead_jobs_days)
      LOOP
        pruned := 0;
        IF days IS NOT NULL THEN
          cutoff := now() - make_interval(days => days);
          DELETE FROM jobs j
           WHERE j.id IN (
             SELECT d.id FROM jobs d
              WHERE d.status = job_status AND d.finished_at < cutoff
                AND NOT CASE WHEN d.kind = 'run.chunk' THEN EXISTS (
                      SELECT 1 FROM runs r
                       WHERE r.id = CAST(d.payload->>'run_id' AS uuid)
                         AND r.status <> 'completed')
                    ELSE false END
              LIMIT batch);
          GET DIAGNOSTICS pruned = ROW_COUNT;
        END IF;
        RETURN NEXT;
      END LOOP;

      -- The webhook delivery log: deliveries that are over (delivered, or failed for good) go
      -- after the finished jobs' period, p_jobs_days (a delivery is the record of finished
      -- jobs: it has no period of its own), counted from their last attempt; pending ones
      -- are never pruned, however old. A redelivery makes one pending again: the status is
      -- checked again on the row being deleted.
      category := 'webhook_deliveries'; pruned := 0;
      IF p_jobs_days IS NOT NULL THEN
        cutoff := now() - make_interval(days => p_jobs_days);
        DELETE FROM webhook_deliveries w
         WHERE w.id IN (
           SELECT d.id FROM webhook_deliveries d
            WHERE d.status IN ('delivered', 'failed')
              AND coalesce(d.delivered_at, d.last_attempt_at, d.created_at) < cutoff
            LIMIT batch)
           AND w.status IN ('delivered', 'failed');
        GET DIAGNOSTICS pruned = ROW_COUNT;
      END IF;
      RETURN NEXT;

      -- Refresh tokens past their expiry, then the login sessions that cannot go on: revoked,
      -- or left without a token. A live session always holds its newest token, so a replayed
      -- older one of it is still recognised (and revokes the session).
      category := 'refresh_tokens'; pruned := 0;
      IF p_sessions_days IS NOT NULL THEN
        cutoff := now() - make_interval(days => p_sessions_days);
        DELETE FROM refresh_tokens t
         WHERE t.id IN (SELECT d.id FROM refresh_tokens d WHERE d.expires_at < cutoff
                         LIMIT batch);
        GET DIAGNOSTICS pruned = ROW_COUNT;
      END IF;
      RETURN NEXT;

      category := 'auth_sessions'; pruned := 0;
      IF p_sessions_days IS NOT NULL THEN
        DELETE FROM auth_sessions s
         WHERE s.id IN (SELECT d.id FROM auth_sessions d
                         WHERE d.revoked_at < cutoff
                            OR (d.created_at < cutoff AND NOT EXISTS (
                                  SELECT 1 FROM refresh_tokens t WHERE t.session_id = d.id))
                         LIMIT batch);
        GET DIAGNOSTICS pruned = ROW_COUNT;
      END IF;
      RETURN NEXT;

      -- Invitations that stopped being usable (expired, accepted or revoked) long enough ago.
      category := 'invitations'; pruned := 0;
      IF p_invitations_days IS NOT NULL THEN
        cutoff := now() - make_interval(days => p_invitations_days);
        DELETE FROM invitations i
         WHERE i.id IN (SELECT d.id FROM invitations d
                         WHERE least(d.expires_at, d.accepted_at, d.revoked_at) < cutoff
                         LIMIT batch);
        GET DIAGNOSTICS pruned = ROW_COUNT;
      END IF;
      RETURN NEXT;
    END
    $$"""


def _role() -> None:
    op.execute(definer_role(ROLE))
    op.execute(f"GRANT USAGE ON SCHEMA public TO {ROLE}")
    for table, columns in READS.items():
        op.execute(f"GRANT SELECT ({columns}) ON {table} TO {ROLE}")
        op.execute(f"CREATE POLICY retention_read ON {table} FOR SELECT TO {ROLE} USING (true)")
    for table in DELETES:
        op.execute(f"GRANT DELETE ON {table} TO {ROLE}")
        op.execute(f"CREATE POLICY retention_delete ON {table} FOR DELETE TO {ROLE} USING (true)")


def _system_organization(present: bool) -> None:
    """Written or deleted as the owner of every organization (see across_organizations)."""
    statement = (
        f"INSERT INTO organizations (id, name) VALUES"
        f" ('{SYSTEM_ORGANIZATION_ID}', '{SYSTEM_ORGANIZATION_NAME}')"
        " ON CONFLICT (id) DO NOTHING"
        if present
        else f"DELETE FROM organizations WHERE id = '{SYSTEM_ORGANIZATION_ID}'"  # jobs go too
    )
    across_organizations(("organizations",), statement)


def upgrade() -> None:
    op.create_index(
        "ix_jobs_finished",
        "jobs",
        ["status", "finished_at"],
        postgresql_where="status IN ('done', 'dead')",
    )
    op.create_index("ix_refresh_tokens_expires_at", "refresh_tokens", ["expires_at"])
    _role()
    op.execute(f"CREATE FUNCTION {SIGNATURE} {BODY}")
    op.execute(f"ALTER FUNCTION {DROP_SIGNATURE} OWNER TO {ROLE}")
    op.execute(f"REVOKE ALL ON FUNCTION {DROP_SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {DROP_SIGNATURE} TO assay_app")
    _system_organization(present=True)


def downgrade() -> None:
    # The role stays: roles belong to the whole server, and other databases on it may use it.
    _system_organization(present=False)
    op.execute(f"DROP FUNCTION {DROP_SIGNATURE}")
    for table in DELETES:
        op.execute(f"DROP POLICY retention_delete ON {table}")
    for table in READS:
        op.execute(f"DROP POLICY retention_read ON {table}")
        op.execute(f"REVOKE ALL ON {table} FROM {ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {ROLE}")
    op.drop_index("ix_refresh_tokens_expires_at", table_name="refresh_tokens")
    op.drop_index("ix_jobs_finished", table_name="jobs")
