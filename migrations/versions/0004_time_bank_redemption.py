"""The time bank, part 2 begins: redemptions, the lots each entry used (the basis of
clearing), and members' assessed need.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0004"
down_revision: str | None = "0003"
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
        "tb_redemptions",
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
        sa.Column(
            "member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "recipient_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("site_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "service_type",
            sa.String(length=24)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=24), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=24), "mysql"),
            nullable=False,
        ),
        sa.Column("minutes", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", Stamp, nullable=False),
        sa.Column("redeemed_by", sa.String(length=64), nullable=False),
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint("minutes > 0", name=op.f("ck_tb_redemptions_minutes")),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["tb_entries.id"], name=op.f("fk_tb_redemptions_entry_id_tb_entries")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["tb_members.id"], name=op.f("fk_tb_redemptions_member_id_tb_members")
        ),
        sa.ForeignKeyConstraint(
            ["programme_id"],
            ["tb_programmes.id"],
            name=op.f("fk_tb_redemptions_programme_id_tb_programmes"),
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["tb_members.id"],
            name=op.f("fk_tb_redemptions_recipient_id_tb_members"),
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["tb_sites.id"], name=op.f("fk_tb_redemptions_site_id_tb_sites")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tb_redemptions")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_tb_redemptions_entry_id")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_tb_redemptions_idempotency_key")),
    )
    op.create_table(
        "tb_lot_uses",
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("lot_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("minutes", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("minutes > 0", name=op.f("ck_tb_lot_uses_minutes")),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["tb_entries.id"], name=op.f("fk_tb_lot_uses_entry_id_tb_entries")
        ),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["tb_lots.id"], name=op.f("fk_tb_lot_uses_lot_id_tb_lots")
        ),
        sa.PrimaryKeyConstraint("entry_id", "lot_id", name=op.f("pk_tb_lot_uses")),
    )
    with op.batch_alter_table("tb_members", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("assessed_need", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("tb_members", schema=None) as batch_op:
        batch_op.drop_column("assessed_need")

    op.drop_table("tb_lot_uses")
    op.drop_table("tb_redemptions")
