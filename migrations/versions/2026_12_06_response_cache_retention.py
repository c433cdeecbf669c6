"""response cache retention: cached answers are pruned a period after they were fetched

The response cache grew for as long as the organization lived: every distinct request of every
run with `use_cache`, its whole output, kept for ever. `assay_retention_prune` now takes a
period for it too (NULL: kept for ever) and deletes, a batch at a time, the answers fetched
longer ago than that. The maintenance role may read the cache's key and age only, never what it
holds, and an index on the age keeps each batch from scanning the table.

The function is changed from its own definition (every other kind as it is), then given back
to the maintenance role with its grants.

Revision ID: 0034_response_cache_retention
Revises: 0033_run_request_keys
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

from migrations.functions import replace_signature

revision: str = "0034_response_cache_retention"
down_revision: str | None = "0033_run_request_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLE = "assay_maintenance"
OLD_SIGNATURE = "assay_retention_prune(integer, integer, integer, integer, integer, integer)"
NEW_SIGNATURE = (
    "assay_retention_prune(integer, integer, integer, integer, integer, integer, integer)"
)
BATCH = "p_invitations_days integer, p_batch integer)"
WITH_CACHE = "p_invitations_days integer, p_batch integer, p_response_cache_days integer)"
CHECK = "p_invitations_days) < 1 THEN"
CHECK_WITH_CACHE = "p_invitations_days, p_response_cache_days) < 1 THEN"
LAST = """      RETURN NEXT;
    END
"""
CACHE = """      RETURN NEXT;

      -- Cached answers fetched longer ago than their period (a hit does not make one younger:
      -- the period bounds how old an answer a run may be given).
      category := 'response_cache'; pruned := 0;
      IF p_response_cache_days IS NOT NULL THEN
        cutoff := now() - make_interval(days => p_response_cache_days);
        DELETE FROM response_cache c
         WHERE (c.organization_id, c.key) IN (
           SELECT d.organization_id, d.key FROM response_cache d WHERE d.created_at < cutoff
            LIMIT batch);
        GET DIAGNOSTICS pruned = ROW_COUNT;
      END IF;
      RETURN NEXT;
    END
"""


def upgrade() -> None:
    op.create_index("ix_response_cache_created_at", "response_cache", ["created_at"])
    op.execute(f"GRANT SELECT (organization_id, key, created_at) ON response_cache TO {ROLE}")
    op.execute(f"GRANT DELETE ON response_cache TO {ROLE}")
    op.execute(f"CREATE POLICY retention_read ON response_cache FOR SELECT TO {ROLE} USING (true)")
    op.execute(
        f"CREATE POLICY retention_delete ON response_cache FOR DELETE TO {ROLE} USING (true)"
    )
    replace_signature(
        OLD_SIGNATURE,
        [(BATCH, WITH_CACHE), (CHECK, CHECK_WITH_CACHE), (LAST, CACHE)],
        NEW_SIGNATURE,
        owner=ROLE,
    )


def downgrade() -> None:
    replace_signature(
        NEW_SIGNATURE,
        [(WITH_CACHE, BATCH), (CHECK_WITH_CACHE, CHECK), (CACHE, LAST)],
        OLD_SIGNATURE,
        owner=ROLE,
    )
    op.execute("DROP POLICY retention_delete ON response_cache")
    op.execute("DROP POLICY retention_read ON response_cache")
    op.execute(f"REVOKE ALL ON response_cache FROM {ROLE}")
    op.drop_index("ix_response_cache_created_at", table_name="response_cache")
