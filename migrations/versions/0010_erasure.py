"""Erasure of a member's personal data on request: when, by whom, why.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A snapshot of the types of this revision: revisions never import the live models.
Stamp = (
    sa.DateTime()
    .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    .with_variant(sa.BigInteger(), "sqlite")
)


def upgrade() -> None:
    with op.batch_alter_table("tb_member_personal", schema=None) as batch_op:
        batch_op.add_column(sa.Column("erased_at", Stamp, nullable=True))
        batch_op.add_column(sa.Column("erased_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("erased_reason", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tb_member_personal", schema=None) as batch_op:
        batch_op.drop_column("erased_reason")
        batch_op.drop_column("erased_by")
        batch_op.drop_column("erased_at")
