"""provider request limits shared by every process on the database.

A model configuration's requests-per-minute is a schedule of evenly spaced slots: one row per
(model configuration, limit) holds the next free slot, and every call takes one with a single
atomic statement (`assay_provider_slot`). The row holds no tenant data and lives in a schema the
runtime role cannot enter; it reaches the schedule only through that SECURITY DEFINER function,
owned by a role that may touch this table and nothing else.

Revision ID: 0013_provider_pacing
Revises: 0012_webhooks
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

from migrations.access import definer_role

revision: str = "0013_provider_pacing"
down_revision: str | None = "0012_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PACER_ROLE = "assay_pacer"
# Outside `public`: the runtime's blanket table grants (migrations/access.py) cover only public.
SCHEMA = "assay_private"
TABLE = f"{SCHEMA}.provider_pacing"
SIGNATURE = "assay_provider_slot(p_model uuid, p_per_minute integer)"
# Returns the seconds the caller waits for its slot, by the database's clock (hosts' clocks may
# differ; the database's is the one every process shares).
TAKE_SLOT = f"""
    RETURNS double precision
    AS $$
    DECLARE
      step interval;
      slot timestamptz;
    BEGIN
      IF p_per_minute IS NULL OR p_per_minute < 1 THEN
        RAISE EXCEPTION 'requests per minute must be at least 1, not %', p_per_minute
          USING ERRCODE = 'invalid_parameter_value';
      END IF;
      step := make_interval(secs => 60.0 / p_per_minute);
      UPDATE {TABLE} p SET next_slot = greatest(p.next_slot, clock_timestamp()) + step
       WHERE p.model_config_id = p_model AND p.requests_per_minute = p_per_minute
      RETURNING p.next_slot - step INTO slot;
      IF NOT FOUND THEN
        -- A first call at this limit. A schedule whose next slot has passed says no more than
        -- a missing row: collect those (never waiting on a row another call holds).
        DELETE FROM {TABLE} p
         WHERE (p.model_config_id, p.requests_per_minute) IN (
           SELECT o.model_config_id, o.requests_per_minute FROM {TABLE} o
            WHERE o.next_slot < clock_timestamp() FOR UPDATE SKIP LOCKED);
        INSERT INTO {TABLE} AS p (model_config_id, requests_per_minute, next_slot)
        VALUES (p_model, p_per_minute, clock_timestamp() + step)
        ON CONFLICT (model_config_id, requests_per_minute) DO UPDATE
          SET next_slot = greatest(p.next_slot, clock_timestamp()) + step
        RETURNING p.next_slot - step INTO slot;
      END IF;
      RETURN greatest(0, extract(epoch FROM slot - clock_timestamp()))::double precision;
    END
    $$ LANGUAGE plpgsql VOLATILE"""


def upgrade() -> None:
    op.execute(definer_role(PACER_ROLE))
    op.execute(f"CREATE SCHEMA {SCHEMA}")
    op.execute(f"REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC")
    op.execute(f"GRANT USAGE ON SCHEMA {SCHEMA} TO {PACER_ROLE}")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {PACER_ROLE}")
    # Keyed by the limit too: a changed limit starts a schedule of its own at once (the calls
    # already waiting keep the slots they took), and two processes briefly disagreeing about
    # the limit never reset each other's schedule. No foreign key: a slot is taken outside the
    # transaction that loaded the configuration, and a deleted model's row expires by itself.
    op.execute(
        f"""
        CREATE TABLE {TABLE} (
          model_config_id uuid NOT NULL,
          requests_per_minute integer NOT NULL,
          next_slot timestamptz NOT NULL,
          CONSTRAINT pk_provider_pacing PRIMARY KEY (model_config_id, requests_per_minute),
          CONSTRAINT ck_provider_pacing_requests_per_minute CHECK (requests_per_minute >= 1)
        )
        """
    )
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {TABLE} TO {PACER_ROLE}")
    op.execute(
        f"CREATE FUNCTION {SIGNATURE} {TAKE_SLOT}"
        " SECURITY DEFINER SET search_path = public, pg_temp"
    )
    op.execute(f"ALTER FUNCTION {SIGNATURE} OWNER TO {PACER_ROLE}")
    op.execute(f"REVOKE ALL ON FUNCTION {SIGNATURE} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {SIGNATURE} TO assay_app")


def downgrade() -> None:
    # The role stays, as the other roles do: roles belong to the cluster, not to this database.
    op.execute("DROP FUNCTION IF EXISTS assay_provider_slot(uuid, integer)")
    op.execute(f"DROP TABLE IF EXISTS {TABLE}")
    op.execute(f"DROP SCHEMA IF EXISTS {SCHEMA}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {PACER_ROLE}")
