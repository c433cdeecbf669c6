"""claim per organization: jobs of some kinds (webhook deliveries) claimed at most so many
at once per organization

A delivery may hold a worker for the webhook timeout. Claimed oldest first across every
organization, one organization's receivers that never answer (twenty webhooks, each of its
runs' ends a message for each) held every delivery slot, and every other organization's
messages waited behind theirs. The claim now takes a capped kind's jobs of an organization
only while that organization has fewer than `p_per_organization` of them under way (their
leases running), counting those it takes in the same claim.

The function is changed from its own definition (its body as it is, the picking query
widened), then given back to the worker role with its grants.

Revision ID: 0032_claim_per_organization
Revises: 0031_run_prompted
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from migrations.functions import replace_signature

revision: str = "0032_claim_per_organization"
down_revision: str | None = "0031_run_prompted"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORKER_ROLE = "assay_worker"
ARGUMENTS = (
    "p_worker text, p_limit integer, p_lease double precision,"
    " p_skip_kinds text[] DEFAULT '{}'::text[]"
)
CAPPING = ", p_capped_kinds text[] DEFAULT '{}'::text[], p_per_organization integer DEFAULT 0"
OLD_SIGNATURE = "assay_queue_claim(text, integer, double precision, text[])"
NEW_SIGNATURE = "assay_queue_claim(text, integer, double precision, text[], text[], integer)"
DUE = """((c.status = 'queued' AND c.run_after <= now())
                OR (c.status = 'running' AND c.locked_until < now()))
               AND c.kind <> ALL (p_skip_kinds)"""
# The picking query as 0030_claim_skips_kinds left it, and with the cap.
PICKED = f"""WITH picked AS MATERIALIZED (
            SELECT c.id, c.status FROM jobs c
             WHERE {DUE}
             ORDER BY c.run_after
             LIMIT p_limit
             FOR UPDATE SKIP LOCKED
          )"""
# Only the capped kinds' due jobs are ranked (few: deliveries), in `allowed`; every other job
# is picked as before, walking the claimable jobs by run_after until the limit, so that run
# chunks are claimed at the old query's cost. `picked` keeps the conditions on `c`: a job
# another claim took and committed meanwhile is checked again as it is locked, not claimed
# twice. The cap is held per claim from its snapshot: claims at the same moment may each take
# one more (never more than one each, nor more after them until those end).
PICKED_CAPPED = f"""WITH held AS (
            SELECT h.organization_id, count(*) AS n FROM jobs h
             WHERE h.status = 'running' AND h.locked_until >= now()
               AND h.kind = ANY (p_capped_kinds)
             GROUP BY h.organization_id
          ), allowed AS (
            SELECT d.id FROM (
              SELECT c.id, c.organization_id,
                     row_number() OVER (PARTITION BY c.organization_id ORDER BY c.run_after) AS nth
                FROM jobs c
               WHERE {DUE}
                 AND c.kind = ANY (p_capped_kinds)
            ) d LEFT JOIN held ON held.organization_id = d.organization_id
             WHERE d.nth + coalesce(held.n, 0) <= p_per_organization
          ), picked AS MATERIALIZED (
            SELECT c.id, c.status FROM jobs c
             WHERE {DUE}
               AND (c.kind <> ALL (p_capped_kinds) OR c.id IN (SELECT a.id FROM allowed a))
             ORDER BY c.run_after
             LIMIT p_limit
             FOR UPDATE SKIP LOCKED
          )"""


def upgrade() -> None:
    replace_signature(
        OLD_SIGNATURE,
        [(f"({ARGUMENTS})", f"({ARGUMENTS}{CAPPING})"), (PICKED, PICKED_CAPPED)],
        NEW_SIGNATURE,
        owner=WORKER_ROLE,
    )


def downgrade() -> None:
    replace_signature(
        NEW_SIGNATURE,
        [(f"({ARGUMENTS}{CAPPING})", f"({ARGUMENTS})"), (PICKED_CAPPED, PICKED)],
        OLD_SIGNATURE,
        owner=WORKER_ROLE,
    )
