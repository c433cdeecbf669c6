"""result text bytes: each result's texts' size, written with the row

Pages of results end before a budget of bytes (an output may be megabytes). The output's and
error's sizes can be read from their values' headers, but a JSON value's header holds its
stored size, which for compressible text can be a hundredth of what reading it costs: the
size of the output, error, input and trajectory as text is written with each result.

A nullable column without a default: added without rewriting or reading the table. Rows
written before it keep NULL, and their pages measure them by the headers as before.

Revision ID: 0025_result_text_bytes
Revises: 0024_test_input_check
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025_result_text_bytes"
down_revision: str | None = "0024_test_input_check"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("results", sa.Column("text_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("results", "text_bytes")
