"""Clearing between stations and regions (settlements, their lines and cleared items), and
exchange between independent programmes (partners and vouchers).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0007"
down_revision: str | None = "0006"
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
        "tb_settlements",
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
        sa.Column("level", sa.String(length=10), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("cleared_minutes", sa.BigInteger(), nullable=False),
        sa.Column("late_minutes", sa.BigInteger(), nullable=False),
        sa.Column("settled_at", Stamp, nullable=False),
        sa.Column("settled_by", sa.String(length=64), nullable=False),
        sa.CheckConstraint(
            "level IN ('site', 'township', 'county', 'city', 'province')",
            name=op.f("ck_tb_settlements_level"),
        ),
        sa.CheckConstraint(
            "cleared_minutes >= 0 AND late_minutes >= 0 AND late_minutes <= cleared_minutes",
            name=op.f("ck_tb_settlements_minutes"),
        ),
        sa.CheckConstraint("period_end > period_start", name=op.f("ck_tb_settlements_period")),
        sa.ForeignKeyConstraint(
            ["programme_id"],
            ["tb_programmes.id"],
            name=op.f("fk_tb_settlements_programme_id_tb_programmes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tb_settlements")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_tb_settlements_idempotency_key")),
        sa.UniqueConstraint(
            "programme_id",
            "level",
            "period_start",
            name=op.f("uq_tb_settlements_programme_id_level_period_start"),
        ),
    )
    op.create_table(
        "tb_clearing_items",
        sa.Column("level", sa.String(length=10), nullable=False),
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "settlement_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["tb_entries.id"], name=op.f("fk_tb_clearing_items_entry_id_tb_entries")
        ),
        sa.ForeignKeyConstraint(
            ["settlement_id"],
            ["tb_settlements.id"],
            name=op.f("fk_tb_clearing_items_settlement_id_tb_settlements"),
        ),
        sa.PrimaryKeyConstraint("level", "entry_id", name=op.f("pk_tb_clearing_items")),
    )
    with op.batch_alter_table("tb_clearing_items", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_tb_clearing_items_settlement_id"), ["settlement_id"], unique=False
        )

    op.create_table(
        "tb_settlement_lines",
        sa.Column(
            "settlement_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("line", sa.BigInteger(), nullable=False),
        sa.Column(
            "debtor",
            sa.String(length=24)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=24), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=24), "mysql"),
            nullable=False,
        ),
        sa.Column(
            "creditor",
            sa.String(length=24)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=24), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=24), "mysql"),
            nullable=False,
        ),
        sa.Column("minutes", sa.BigInteger(), nullable=False),
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint("debtor <> creditor", name=op.f("ck_tb_settlement_lines_two_units")),
        sa.CheckConstraint("minutes > 0", name=op.f("ck_tb_settlement_lines_minutes")),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["tb_entries.id"], name=op.f("fk_tb_settlement_lines_entry_id_tb_entries")
        ),
        sa.ForeignKeyConstraint(
            ["settlement_id"],
            ["tb_settlements.id"],
            name=op.f("fk_tb_settlement_lines_settlement_id_tb_settlements"),
        ),
        sa.PrimaryKeyConstraint("settlement_id", "line", name=op.f("pk_tb_settlement_lines")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_tb_settlement_lines_entry_id")),
    )
    op.create_table(
        "tb_partners",
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
            "code",
            sa.String(length=24)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=24), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=24), "mysql"),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "entry_site_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("rate_ours", sa.BigInteger(), nullable=False),
        sa.Column("rate_theirs", sa.BigInteger(), nullable=False),
        sa.Column("trust_line_minutes", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.CheckConstraint("rate_ours > 0 AND rate_theirs > 0", name=op.f("ck_tb_partners_rate")),
        sa.CheckConstraint("trust_line_minutes >= 0", name=op.f("ck_tb_partners_trust_line")),
        sa.ForeignKeyConstraint(
            ["account_id"], ["tb_accounts.id"], name=op.f("fk_tb_partners_account_id_tb_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["entry_site_id"], ["tb_sites.id"], name=op.f("fk_tb_partners_entry_site_id_tb_sites")
        ),
        sa.ForeignKeyConstraint(
            ["programme_id"],
            ["tb_programmes.id"],
            name=op.f("fk_tb_partners_programme_id_tb_programmes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tb_partners")),
        sa.UniqueConstraint("account_id", name=op.f("uq_tb_partners_account_id")),
        sa.UniqueConstraint("programme_id", "code", name=op.f("uq_tb_partners_programme_id_code")),
    )
    op.create_table(
        "tb_vouchers",
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
            "partner_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "voucher_id",
            sa.String(length=64)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=64), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=64), "mysql"),
            nullable=False,
        ),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column(
            "idempotency_key",
            sa.String(length=128)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=128), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=128), "mysql"),
            nullable=True,
        ),
        sa.Column("member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("remote_member_id", sa.BigInteger(), nullable=False),
        sa.Column("minutes", sa.BigInteger(), nullable=False),
        sa.Column("remote_minutes", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "return_entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("acknowledgement", sa.Text(), nullable=True),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("decided_at", Stamp, nullable=True),
        sa.CheckConstraint(
            "(direction = 'out') = (idempotency_key IS NOT NULL)",
            name=op.f("ck_tb_vouchers_key_if_out"),
        ),
        sa.CheckConstraint(
            "(entry_id IS NOT NULL) = (direction = 'out' OR status = 'accepted')",
            name=op.f("ck_tb_vouchers_entry_if_moved"),
        ),
        sa.CheckConstraint(
            "(return_entry_id IS NOT NULL) = (direction = 'out' AND status = 'refused')",
            name=op.f("ck_tb_vouchers_returned_if_refused"),
        ),
        sa.CheckConstraint(
            "(status = 'in_flight') = (acknowledgement IS NULL)",
            name=op.f("ck_tb_vouchers_acknowledged_if_decided"),
        ),
        sa.CheckConstraint(
            "direction = 'out' OR status <> 'in_flight'", name=op.f("ck_tb_vouchers_in_decided")
        ),
        sa.CheckConstraint("direction IN ('out', 'in')", name=op.f("ck_tb_vouchers_direction")),
        sa.CheckConstraint(
            "status IN ('in_flight', 'accepted', 'refused')", name=op.f("ck_tb_vouchers_status")
        ),
        sa.CheckConstraint(
            "minutes > 0 AND remote_minutes > 0", name=op.f("ck_tb_vouchers_minutes")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["tb_entries.id"], name=op.f("fk_tb_vouchers_entry_id_tb_entries")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["tb_members.id"], name=op.f("fk_tb_vouchers_member_id_tb_members")
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"], ["tb_partners.id"], name=op.f("fk_tb_vouchers_partner_id_tb_partners")
        ),
        sa.ForeignKeyConstraint(
            ["programme_id"],
            ["tb_programmes.id"],
            name=op.f("fk_tb_vouchers_programme_id_tb_programmes"),
        ),
        sa.ForeignKeyConstraint(
            ["return_entry_id"],
            ["tb_entries.id"],
            name=op.f("fk_tb_vouchers_return_entry_id_tb_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tb_vouchers")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_tb_vouchers_entry_id")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_tb_vouchers_idempotency_key")),
        sa.UniqueConstraint(
            "programme_id", "voucher_id", name=op.f("uq_tb_vouchers_programme_id_voucher_id")
        ),
        sa.UniqueConstraint("return_entry_id", name=op.f("uq_tb_vouchers_return_entry_id")),
    )
    with op.batch_alter_table("tb_vouchers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tb_vouchers_partner_id_status", ["partner_id", "status"], unique=False
        )

    with op.batch_alter_table("tb_redemptions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tb_redemptions_programme_id_occurred_at",
            ["programme_id", "occurred_at"],
            unique=False,
        )


def downgrade() -> None:
    if op.get_context().dialect.name in ("mysql", "mariadb"):
        # MariaDB dropped the implicit index of the programme_id foreign key when the new
        # index could serve it; give the key its own index back before dropping ours.
        op.create_index(
            "fk_tb_redemptions_programme_id_tb_programmes", "tb_redemptions", ["programme_id"]
        )
    with op.batch_alter_table("tb_redemptions", schema=None) as batch_op:
        batch_op.drop_index("ix_tb_redemptions_programme_id_occurred_at")

    # Dropping a table drops its indexes (MariaDB refuses to drop an index a foreign key uses).
    op.drop_table("tb_vouchers")
    op.drop_table("tb_partners")
    op.drop_table("tb_settlement_lines")
    op.drop_table("tb_clearing_items")
    op.drop_table("tb_settlements")
