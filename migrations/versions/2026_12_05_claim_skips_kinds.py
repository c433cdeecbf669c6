"""claim skips kinds: a worker may leave jobs of some kinds to others while it runs its share
of them

Webhook deliveries share the workers with run chunks, oldest first. Each attempt may hold a
worker for the webhook timeout: receivers that never answer, or many messages at once, could
hold every worker and stall every tenant's runs. A worker now runs at most its share of them
(see tasks/worker.py) and claims past them meanwhile, with `p_skip_kinds`.

The function is changed from its own definition (its body as it is, one condition added),
then given back to the worker role with its grants.

Revision ID: 0030_claim_skips_kinds
Revises: 0029_prune_recheck
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from migrations.functions import replace_signature

revision: str = "0030_claim_skips_kinds"
down_revision: str | None = "0029_prune_recheck"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORKER_ROLE = "assay_worker"
ARGUMENTS = "p_worker text, p_limit integer, p_lease double precision"
SKIPPING = ", p_skip_kinds text[] DEFAULT '{}'::text[]"
OLD_SIGNATURE = "assay_queue_claim(text, integer, double precision)"
NEW_SIGNATURE = "assay_queue_claim(text, integer, double precision, text[])"
# The picking query's condition, as 0008_job_takeovers wrote it, and with the kinds skipped.
PICKED = """WHERE (c.status = 'queued' AND c.run_after <= now())
                OR (c.status = 'running' AND c.locked_until < now())"""
PICKED_SKIPPING = """WHERE ((c.status = 'queued' AND c.run_after <= now())
                OR (c.status = 'running' AND c.locked_until < now()))
               AND c.kind <> ALL (p_skip_kinds)"""


def upgrade() -> None:
    replace_signature(
        OLD_SIGNATURE,
        [(f"({ARGUMENTS})", f"({ARGUMENTS}{SKIPPING})"), (PICKED, PICKED_SKIPPING)],
        NEW_SIGNATURE,
        owner=WORKER_ROLE,
    )


def downgrade() -> None:
    replace_signature(
        NEW_SIGNATURE,
        [(f"({ARGUMENTS}{SKIPPING})", f"({ARGUMENTS})"), (PICKED_SKIPPING, PICKED)],
        OLD_SIGNATURE,
        owner=WORKER_ROLE,
    )
