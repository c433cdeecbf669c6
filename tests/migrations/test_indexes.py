"""What keeps a read or a delete in proportion to the rows it touches, checked in the catalog
(so a later migration is held to it too):

- Row-level security's policy reads the transaction's organization once per statement (an
  init plan), not once per row: read per row it cost 210 ns a row wherever the policy is a
  filter (migration 0018_policy_once_per_statement). The few tables a user's own policy
  guards (sessions, tokens) keep the per-row form.
- Results, evaluations and run events are indexed `(organization_id, run_id)` and by nothing
  leading with the organization alone, which the planner could AND with the run's index and so
  read every entry of an organization with many runs (migration 0017_tenant_run_indexes).
- Every foreign key leads an index, but those naming a user: the runtime is not granted to
  delete a user (an account outlives its organizations), so those keys never act. Deleting a
  row runs, for each foreign key naming its table, a statement on the referencing table
  across every organization (row-level security does not apply to it): a test's results took
  18 ms per test deleted with 2,000 runs in the installation, found by skipping through
  `(run_id, test_id)`, and 0.04 ms by `(test_id)`. (Evaluations name their metric with no
  key: migration 0021_evaluation_metric_reference.) A project's deletion deletes its runs, and
  each deleted run had its references in runs and projects looked for by a walk of both
  (11.8 s for a project of 16,000 runs, 0.54 s indexed: migration 0022_reference_indexes); a
  model's deletion walked every metric for the ones it judged (26 ms with 200,000 metrics:
  migration 0023_metric_judge_index)."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from database.core import Database, Tenant
from tests.helpers import register

PER_RUN = ("results", "evaluations", "run_events")

_POLICIES = text("""
SELECT c.relname, pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
WHERE p.polname = 'tenant_isolation'
  AND pg_get_expr(p.polqual, p.polrelid) NOT LIKE '%assay_current_user()%'
ORDER BY 1
""")
_LEADING = text("""
SELECT c.relname, array_agg(a.attname ORDER BY k.n)
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE c.relname = ANY(:tables) AND k.n <= 2
GROUP BY i.indexrelid, c.relname
""")
# An index serves a key's action when it is a valid B-tree whose leading key columns (not its
# INCLUDE columns) are the key's, and it is whole or leaves out only the rows naming nothing.
_UNINDEXED = text("""
SELECT c.conname FROM pg_constraint c
WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace
  AND c.confrelid <> 'users'::regclass
  AND NOT EXISTS (
      SELECT FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
      WHERE i.indrelid = c.conrelid AND i.indisvalid
        AND ic.relam = (SELECT oid FROM pg_am WHERE amname = 'btree')
        AND i.indnkeyatts >= cardinality(c.conkey)
        AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey
        AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] <@ c.conkey
        AND (i.indpred IS NULL
             OR (cardinality(c.conkey) = 1
                 AND pg_get_expr(i.indpred, i.indrelid) = format('(%I IS NOT NULL)', (
                     SELECT a.attname FROM pg_attribute a
                     WHERE a.attrelid = c.conrelid AND a.attnum = c.conkey[1])))))
ORDER BY 1
""")


async def test_the_policies_read_the_organization_once_per_statement(owner_engine: AsyncEngine):
    async with owner_engine.connect() as connection:
        policies = (await connection.execute(_POLICIES)).all()
    assert len(policies) > 20
    once = "( SELECT assay_current_organization()"  # as PostgreSQL prints an init plan
    per_row = [table for table, *conditions in policies if not all(once in c for c in conditions)]
    assert per_row == []


async def test_a_runs_rows_are_one_range_of_the_tenants_index(owner_engine: AsyncEngine):
    async with owner_engine.connect() as connection:
        found = await connection.execute(_LEADING, {"tables": list(PER_RUN)})
        leading = [(table, columns) for table, columns in found.all()]
    tenant = {table for table, columns in leading if columns[0] == "organization_id"}
    assert tenant == set(PER_RUN)
    for table, columns in leading:
        if columns[0] == "organization_id":
            assert columns == ["organization_id", "run_id"], table


async def test_each_foreign_key_leads_an_index(owner_engine: AsyncEngine):
    async with owner_engine.connect() as connection:
        unindexed = set((await connection.execute(_UNINDEXED)).scalars().all())
    assert unindexed == set()


async def test_the_runtime_deletes_no_user(database: Database, client: httpx.AsyncClient):
    """What lets the keys naming a user go unindexed: no user is deleted, by grant."""
    account = await register(client)
    with pytest.raises(DBAPIError) as refused:
        async with database.transaction(Tenant(account.organization_id, account.user_id)) as s:
            await s.execute(text("DELETE FROM users WHERE id = :id"), {"id": account.user_id})
    assert refused.value.orig.sqlstate == "42501"  # type: ignore[union-attr]
