"""The time bank, part 2: pools with their lots, donations, grants and estates, bookings,
members' priority attributes and beneficiaries.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A snapshot of the types of this revision: revisions never import the live models.
Stamp = (
    sa.DateTime()
    .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    .with_variant(sa.BigInteger(), "sqlite")
)


#: Part 1 sent expired minutes to region pools without pool lots: give each its lot, with
#: the origin and earned day of the member's lot it came from (no grant could take any yet).
BACKFILL_POOL_LOTS = """
INSERT INTO tb_pool_lots
    (region_id, minutes, remaining_minutes, origin_site_id, earned_on, source_entry_id)
SELECT r.id, u.minutes, u.minutes, l.origin_site_id, l.earned_on, u.entry_id
FROM tb_lot_uses u
JOIN tb_entries e ON e.id = u.entry_id AND e.code = 'expiry'
JOIN tb_postings p ON p.entry_id = u.entry_id AND p.amount_minutes > 0
JOIN tb_regions r ON r.pool_account_id = p.account_id
JOIN tb_lots l ON l.id = u.lot_id
ORDER BY u.entry_id, u.lot_id
"""


def upgrade() -> None:
    op.create_table(
        "tb_pool_lots",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "region_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("minutes", sa.BigInteger(), nullable=False),
        sa.Column("remaining_minutes", sa.BigInteger(), nullable=False),
        sa.Column(
            "origin_site_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("earned_on", sa.Date(), nullable=False),
        sa.Column(
            "source_entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.CheckConstraint(
            "minutes > 0 AND remaining_minutes >= 0 AND remaining_minutes <= minutes",
            name=op.f("ck_tb_pool_lots_remaining"),
        ),
        sa.ForeignKeyConstraint(
            ["origin_site_id"],
            ["tb_sites.id"],
            name=op.f("fk_tb_pool_lots_origin_site_id_tb_sites"),
        ),
        sa.ForeignKeyConstraint(
            ["region_id"], ["tb_regions.id"], name=op.f("fk_tb_pool_lots_region_id_tb_regions")
        ),
        sa.ForeignKeyConstraint(
            ["source_entry_id"],
            ["tb_entries.id"],
            name=op.f("fk_tb_pool_lots_source_entry_id_tb_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tb_pool_lots")),
    )
    with op.batch_alter_table("tb_pool_lots", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tb_pool_lots_region_id_earned_on", ["region_id", "earned_on", "id"], unique=False
        )

    op.create_table(
        "tb_beneficiaries",
        sa.Column(
            "member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "beneficiary_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("set_by", sa.String(length=64), nullable=False),
        sa.Column("set_at", Stamp, nullable=False),
        sa.CheckConstraint(
            "member_id <> beneficiary_id", name=op.f("ck_tb_beneficiaries_two_people")
        ),
        sa.ForeignKeyConstraint(
            ["beneficiary_id"],
            ["tb_members.id"],
            name=op.f("fk_tb_beneficiaries_beneficiary_id_tb_members"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["tb_members.id"], name=op.f("fk_tb_beneficiaries_member_id_tb_members")
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_tb_beneficiaries")),
    )
    op.create_table(
        "tb_member_attributes",
        sa.Column(
            "member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "attribute",
            sa.String(length=24)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=24), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=24), "mysql"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["tb_members.id"],
            name=op.f("fk_tb_member_attributes_member_id_tb_members"),
        ),
        sa.PrimaryKeyConstraint("member_id", "attribute", name=op.f("pk_tb_member_attributes")),
    )
    op.create_table(
        "tb_pool_lot_uses",
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "pool_lot_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("minutes", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("minutes > 0", name=op.f("ck_tb_pool_lot_uses_minutes")),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["tb_entries.id"], name=op.f("fk_tb_pool_lot_uses_entry_id_tb_entries")
        ),
        sa.ForeignKeyConstraint(
            ["pool_lot_id"],
            ["tb_pool_lots.id"],
            name=op.f("fk_tb_pool_lot_uses_pool_lot_id_tb_pool_lots"),
        ),
        sa.PrimaryKeyConstraint("entry_id", "pool_lot_id", name=op.f("pk_tb_pool_lot_uses")),
    )
    op.create_table(
        "tb_pool_moves",
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
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column(
            "member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("region_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "beneficiary_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("minutes", sa.BigInteger(), nullable=False),
        sa.Column("pool_minutes", sa.BigInteger(), nullable=False),
        sa.Column("occurred_at", Stamp, nullable=False),
        sa.Column("entered_by", sa.String(length=64), nullable=False),
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint(
            "kind = 'estate' OR (region_id IS NOT NULL AND beneficiary_id IS NULL"
            " AND pool_minutes = minutes)",
            name=op.f("ck_tb_pool_moves_pool_side"),
        ),
        sa.CheckConstraint(
            "kind IN ('donation', 'grant', 'estate')", name=op.f("ck_tb_pool_moves_kind")
        ),
        sa.CheckConstraint(
            "(region_id IS NULL) = (pool_minutes = 0)",
            name=op.f("ck_tb_pool_moves_region_if_pool_minutes"),
        ),
        sa.CheckConstraint(
            "beneficiary_id IS NULL OR beneficiary_id <> member_id",
            name=op.f("ck_tb_pool_moves_two_people"),
        ),
        sa.CheckConstraint(
            "minutes > 0 AND pool_minutes >= 0 AND pool_minutes <= minutes",
            name=op.f("ck_tb_pool_moves_minutes"),
        ),
        sa.ForeignKeyConstraint(
            ["beneficiary_id"],
            ["tb_members.id"],
            name=op.f("fk_tb_pool_moves_beneficiary_id_tb_members"),
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["tb_entries.id"], name=op.f("fk_tb_pool_moves_entry_id_tb_entries")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["tb_members.id"], name=op.f("fk_tb_pool_moves_member_id_tb_members")
        ),
        sa.ForeignKeyConstraint(
            ["programme_id"],
            ["tb_programmes.id"],
            name=op.f("fk_tb_pool_moves_programme_id_tb_programmes"),
        ),
        sa.ForeignKeyConstraint(
            ["region_id"], ["tb_regions.id"], name=op.f("fk_tb_pool_moves_region_id_tb_regions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tb_pool_moves")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_tb_pool_moves_entry_id")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_tb_pool_moves_idempotency_key")),
    )
    with op.batch_alter_table("tb_pool_moves", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tb_pool_moves_member_id_occurred_at", ["member_id", "occurred_at"], unique=False
        )

    op.create_table(
        "tb_bookings",
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
        sa.Column("scheduled_at", Stamp, nullable=False),
        sa.Column("hold_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("booked_by", sa.String(length=64), nullable=False),
        sa.Column("booked_at", Stamp, nullable=False),
        sa.Column(
            "redemption_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.CheckConstraint("minutes > 0", name=op.f("ck_tb_bookings_minutes")),
        sa.ForeignKeyConstraint(
            ["hold_id"], ["tb_holds.id"], name=op.f("fk_tb_bookings_hold_id_tb_holds")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["tb_members.id"], name=op.f("fk_tb_bookings_member_id_tb_members")
        ),
        sa.ForeignKeyConstraint(
            ["programme_id"],
            ["tb_programmes.id"],
            name=op.f("fk_tb_bookings_programme_id_tb_programmes"),
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"], ["tb_members.id"], name=op.f("fk_tb_bookings_recipient_id_tb_members")
        ),
        sa.ForeignKeyConstraint(
            ["redemption_id"],
            ["tb_redemptions.id"],
            name=op.f("fk_tb_bookings_redemption_id_tb_redemptions"),
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["tb_sites.id"], name=op.f("fk_tb_bookings_site_id_tb_sites")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tb_bookings")),
        sa.UniqueConstraint("hold_id", name=op.f("uq_tb_bookings_hold_id")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_tb_bookings_idempotency_key")),
        sa.UniqueConstraint("redemption_id", name=op.f("uq_tb_bookings_redemption_id")),
    )
    with op.batch_alter_table("tb_bookings", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tb_bookings_member_id_scheduled_at", ["member_id", "scheduled_at"], unique=False
        )

    op.execute(sa.text(BACKFILL_POOL_LOTS))


def downgrade() -> None:
    # Dropping a table drops its indexes (MariaDB refuses to drop one a foreign key uses).
    op.drop_table("tb_bookings")
    op.drop_table("tb_pool_moves")
    op.drop_table("tb_pool_lot_uses")
    op.drop_table("tb_member_attributes")
    op.drop_table("tb_beneficiaries")
    op.drop_table("tb_pool_lots")
