"""queue release attempts: a release gives back only what its claim counted; whether others
wait is answered only for the organization asking

A claim counts an attempt, or (since 0008_job_takeovers) a takeover when it takes a job over
from a process that died; a release (a job handed back, or a worker's shutdown) always took an
attempt back. Released after a takeover, a job lost an attempt that a failure had counted: its
handler could run more often than `max_attempts`. A claim now marks each job it takes over
(`taken_over`), and a release takes back the takeover of such a job, the attempt of any other.

`assay_queue_others_waiting` (a SECURITY DEFINER function: it sees every organization's jobs)
answered for any organization it was given, and with no tenant set: the runtime role could
read other organizations' queue. It now answers false unless asked for the organization of
the transaction's tenant (a chunk asks in its job's transaction, which has it set).

Revision ID: 0043_queue_release_attempts
Revises: 0042_set_member_counts
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.functions import edited_definition

revision: str = "0043_queue_release_attempts"
down_revision: str | None = "0042_set_member_counts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLAIM = "assay_queue_claim(text, integer, double precision, text[], text[], integer)"
RELEASE = "assay_queue_release(text, uuid[])"
OTHERS_WAITING = "assay_queue_others_waiting(uuid, double precision, text[])"

TAKEOVER_COUNTED = "takeovers = j.takeovers + (picked.status = 'running')::int"
CLAIM_CHANGES = [
    (
        TAKEOVER_COUNTED,
        f"{TAKEOVER_COUNTED},\n                 taken_over = picked.status = 'running'",
    )
]
RELEASE_CHANGES = [
    (
        "attempts = greatest(attempts - 1, 0)",
        "attempts = greatest(attempts - (NOT taken_over)::int, 0),\n"
        "                          takeovers = greatest(takeovers - taken_over::int, 0)",
    )
]
ASKER = "AND c.organization_id <> p_organization"
OTHERS_WAITING_CHANGES = [
    (ASKER, f"{ASKER}\n               AND p_organization = (SELECT assay_current_organization())")
]
FUNCTION_CHANGES = {
    CLAIM: CLAIM_CHANGES,
    RELEASE: RELEASE_CHANGES,
    OTHERS_WAITING: OTHERS_WAITING_CHANGES,
}


def upgrade() -> None:
    op.add_column(
        "jobs", sa.Column("taken_over", sa.Boolean, nullable=False, server_default="false")
    )
    for function, changes in FUNCTION_CHANGES.items():
        op.execute(sa.text(edited_definition(function, changes)))


def downgrade() -> None:
    for function, changes in FUNCTION_CHANGES.items():
        op.execute(sa.text(edited_definition(function, [(new, old) for old, new in changes])))
    op.drop_column("jobs", "taken_over")
