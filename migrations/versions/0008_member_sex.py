"""Members' declared sex (optional), for the statistics by age band and sex.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tb_member_personal", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sex", sa.String(length=8), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_tb_member_personal_sex"), "sex IS NULL OR sex IN ('female', 'male')"
        )


def downgrade() -> None:
    with op.batch_alter_table("tb_member_personal", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_tb_member_personal_sex"), type_="check")
        batch_op.drop_column("sex")
