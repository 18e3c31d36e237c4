"""The time bank, part 2: gifts between relatives (their minutes travel as lots).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A snapshot of the types of this revision: revisions never import the live models.
Stamp = (
    sa.DateTime()
    .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    .with_variant(sa.BigInteger(), "sqlite")
)


def upgrade() -> None:
    op.create_table(
        "tb_gifts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "programme_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "idempotency_key",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=128), "mysql"),
            nullable=False,
        ),
        sa.Column("giver_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "receiver_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("minutes", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", Stamp, nullable=False),
        sa.Column("given_by", sa.String(length=64), nullable=False),
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint("giver_id <> receiver_id", name=op.f("ck_tb_gifts_two_people")),
        sa.CheckConstraint("minutes > 0", name=op.f("ck_tb_gifts_minutes")),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["tb_entries.id"], name=op.f("fk_tb_gifts_entry_id_tb_entries")
        ),
        sa.ForeignKeyConstraint(
            ["giver_id"], ["tb_members.id"], name=op.f("fk_tb_gifts_giver_id_tb_members")
        ),
        sa.ForeignKeyConstraint(
            ["programme_id"],
            ["tb_programmes.id"],
            name=op.f("fk_tb_gifts_programme_id_tb_programmes"),
        ),
        sa.ForeignKeyConstraint(
            ["receiver_id"], ["tb_members.id"], name=op.f("fk_tb_gifts_receiver_id_tb_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tb_gifts")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_tb_gifts_entry_id")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_tb_gifts_idempotency_key")),
    )
    with op.batch_alter_table("tb_gifts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tb_gifts_giver_id_occurred_at", ["giver_id", "occurred_at"], unique=False
        )


def downgrade() -> None:
    # Dropping a table drops its indexes (MariaDB refuses to drop one a foreign key uses).
    op.drop_table("tb_gifts")
