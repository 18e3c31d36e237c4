"""The time bank, part 1: programmes and their policy versions, regions, sites (stations
and institutions), members with their personal data apart, relations, operators and roles,
services with recipients and confirmations, and lots.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A snapshot of the types of this revision: revisions never import the live models.
# Instants: naive UTC timestamps; on SQLite integer microseconds since the Unix epoch.
Stamp = (
    sa.DateTime()
    .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    .with_variant(sa.BigInteger(), "sqlite")
)


def upgrade() -> None:
    op.create_table(
        "tb_programmes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
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
            "expired_account_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("created_at", Stamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["expired_account_id"],
            ["tb_accounts.id"],
            name=op.f("fk_tb_programmes_expired_account_id_tb_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tb_programmes")),
        sa.UniqueConstraint("code", name=op.f("uq_tb_programmes_code")),
    )
    op.create_table(
        "tb_policies",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "programme_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("effective_from", Stamp, nullable=False),
        sa.Column("body", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("set_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_tb_policies_version")),
        sa.ForeignKeyConstraint(
            ["programme_id"],
            ["tb_programmes.id"],
            name=op.f("fk_tb_policies_programme_id_tb_programmes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tb_policies")),
        sa.UniqueConstraint(
            "programme_id",
            "effective_from",
            name=op.f("uq_tb_policies_programme_id_effective_from"),
        ),
        sa.UniqueConstraint(
            "programme_id", "version", name=op.f("uq_tb_policies_programme_id_version")
        ),
    )
    op.create_table(
        "tb_regions",
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
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("parent_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "path",
            sa.String(length=255)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=255), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=255), "mysql"),
            nullable=False,
        ),
        sa.Column(
            "pool_account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.CheckConstraint(
            "level IN ('province', 'city', 'county', 'township')", name=op.f("ck_tb_regions_level")
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["tb_regions.id"], name=op.f("fk_tb_regions_parent_id_tb_regions")
        ),
        sa.ForeignKeyConstraint(
            ["pool_account_id"],
            ["tb_accounts.id"],
            name=op.f("fk_tb_regions_pool_account_id_tb_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["programme_id"],
            ["tb_programmes.id"],
            name=op.f("fk_tb_regions_programme_id_tb_programmes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tb_regions")),
        sa.UniqueConstraint("programme_id", "code", name=op.f("uq_tb_regions_programme_id_code")),
    )
    op.create_table(
        "tb_sites",
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
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column(
            "region_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "issued_account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "redeemed_account_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(kind = 'institution') = (issued_account_id IS NULL)",
            name=op.f("ck_tb_sites_issues_if_station"),
        ),
        sa.CheckConstraint(
            "kind IN ('social_work_station', 'volunteer_station', 'community_station', "
            "'institution')",
            name=op.f("ck_tb_sites_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["issued_account_id"],
            ["tb_accounts.id"],
            name=op.f("fk_tb_sites_issued_account_id_tb_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["programme_id"],
            ["tb_programmes.id"],
            name=op.f("fk_tb_sites_programme_id_tb_programmes"),
        ),
        sa.ForeignKeyConstraint(
            ["redeemed_account_id"],
            ["tb_accounts.id"],
            name=op.f("fk_tb_sites_redeemed_account_id_tb_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["region_id"], ["tb_regions.id"], name=op.f("fk_tb_sites_region_id_tb_regions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tb_sites")),
        sa.UniqueConstraint("programme_id", "code", name=op.f("uq_tb_sites_programme_id_code")),
    )
    op.create_table(
        "tb_members",
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
            "identity_hash",
            sa.String(length=64)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=64), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=64), "mysql"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("acts_as", sa.String(length=12), nullable=False),
        sa.Column(
            "home_site_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("status_reason", sa.String(length=500), nullable=False),
        sa.Column("registered_at", Stamp, nullable=False),
        sa.Column("registered_by", sa.String(length=64), nullable=False),
        sa.CheckConstraint(
            "acts_as IN ('volunteer', 'recipient', 'both')", name=op.f("ck_tb_members_acts_as")
        ),
        sa.CheckConstraint("kind IN ('person', 'group')", name=op.f("ck_tb_members_kind")),
        sa.CheckConstraint(
            "status IN ('active', 'frozen', 'deceased', 'closed')",
            name=op.f("ck_tb_members_status"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["tb_accounts.id"], name=op.f("fk_tb_members_account_id_tb_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["home_site_id"], ["tb_sites.id"], name=op.f("fk_tb_members_home_site_id_tb_sites")
        ),
        sa.ForeignKeyConstraint(
            ["programme_id"],
            ["tb_programmes.id"],
            name=op.f("fk_tb_members_programme_id_tb_programmes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tb_members")),
        sa.UniqueConstraint("account_id", name=op.f("uq_tb_members_account_id")),
        sa.UniqueConstraint(
            "programme_id", "identity_hash", name=op.f("uq_tb_members_programme_id_identity_hash")
        ),
    )
    op.create_table(
        "tb_operators",
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
            sa.String(length=64)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=64), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=64), "mysql"),
            nullable=False,
        ),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("site_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("region_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", Stamp, nullable=False),
        sa.CheckConstraint(
            "(site_id IS NULL) <> (region_id IS NULL)", name=op.f("ck_tb_operators_one_scope")
        ),
        sa.ForeignKeyConstraint(
            ["programme_id"],
            ["tb_programmes.id"],
            name=op.f("fk_tb_operators_programme_id_tb_programmes"),
        ),
        sa.ForeignKeyConstraint(
            ["region_id"], ["tb_regions.id"], name=op.f("fk_tb_operators_region_id_tb_regions")
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["tb_sites.id"], name=op.f("fk_tb_operators_site_id_tb_sites")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tb_operators")),
        sa.UniqueConstraint("programme_id", "code", name=op.f("uq_tb_operators_programme_id_code")),
    )
    op.create_table(
        "tb_lots",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("minutes", sa.BigInteger(), nullable=False),
        sa.Column("remaining_minutes", sa.BigInteger(), nullable=False),
        sa.Column(
            "origin_site_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("earned_on", sa.Date(), nullable=False),
        sa.Column("expires_on", sa.Date(), nullable=True),
        sa.Column(
            "source_entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "parent_lot_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.CheckConstraint(
            "minutes > 0 AND remaining_minutes >= 0 AND remaining_minutes <= minutes",
            name=op.f("ck_tb_lots_remaining"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["tb_members.id"], name=op.f("fk_tb_lots_member_id_tb_members")
        ),
        sa.ForeignKeyConstraint(
            ["origin_site_id"], ["tb_sites.id"], name=op.f("fk_tb_lots_origin_site_id_tb_sites")
        ),
        sa.ForeignKeyConstraint(
            ["parent_lot_id"], ["tb_lots.id"], name=op.f("fk_tb_lots_parent_lot_id_tb_lots")
        ),
        sa.ForeignKeyConstraint(
            ["source_entry_id"],
            ["tb_entries.id"],
            name=op.f("fk_tb_lots_source_entry_id_tb_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tb_lots")),
    )
    with op.batch_alter_table("tb_lots", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tb_lots_member_id_earned_on", ["member_id", "earned_on", "id"], unique=False
        )

    op.create_table(
        "tb_member_personal",
        sa.Column(
            "member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("display_name", sa.String(length=120), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=False),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["tb_members.id"],
            name=op.f("fk_tb_member_personal_member_id_tb_members"),
        ),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_tb_member_personal")),
    )
    op.create_table(
        "tb_operator_roles",
        sa.Column(
            "operator_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.CheckConstraint(
            "role IN ('recorder', 'confirmer', 'redeemer', 'administrator', 'auditor')",
            name=op.f("ck_tb_operator_roles_role"),
        ),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["tb_operators.id"],
            name=op.f("fk_tb_operator_roles_operator_id_tb_operators"),
        ),
        sa.PrimaryKeyConstraint("operator_id", "role", name=op.f("pk_tb_operator_roles")),
    )
    op.create_table(
        "tb_relations",
        sa.Column(
            "member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("other_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.CheckConstraint(
            "kind IN ('spouse', 'parent', 'child', 'sibling', 'other_relative', 'friend')",
            name=op.f("ck_tb_relations_kind"),
        ),
        sa.CheckConstraint("member_id <> other_id", name=op.f("ck_tb_relations_distinct")),
        sa.ForeignKeyConstraint(
            ["member_id"], ["tb_members.id"], name=op.f("fk_tb_relations_member_id_tb_members")
        ),
        sa.ForeignKeyConstraint(
            ["other_id"], ["tb_members.id"], name=op.f("fk_tb_relations_other_id_tb_members")
        ),
        sa.PrimaryKeyConstraint("member_id", "other_id", name=op.f("pk_tb_relations")),
    )
    op.create_table(
        "tb_services",
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
            "volunteer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("site_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "service_type",
            sa.String(length=24)
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=24), "mariadb")
            .with_variant(mysql.VARCHAR(collation="utf8mb4_nopad_bin", length=24), "mysql"),
            nullable=False,
        ),
        sa.Column("started_at", Stamp, nullable=False),
        sa.Column("ended_at", Stamp, nullable=False),
        sa.Column("raw_minutes", sa.BigInteger(), nullable=False),
        sa.Column("weight_permille", sa.BigInteger(), nullable=False),
        sa.Column("credited_minutes", sa.BigInteger(), nullable=False),
        sa.Column("policy_version", sa.BigInteger(), nullable=False),
        sa.Column("rating", sa.BigInteger(), nullable=True),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("recorded_by", sa.String(length=64), nullable=False),
        sa.Column("recorded_at", Stamp, nullable=False),
        sa.Column("decided_at", Stamp, nullable=True),
        sa.Column(
            "deposit_entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "reversal_entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.CheckConstraint(
            "(status = 'reversed') = (reversal_entry_id IS NOT NULL)",
            name=op.f("ck_tb_services_reversal_if_reversed"),
        ),
        sa.CheckConstraint(
            "(status IN ('confirmed', 'reversed')) = (deposit_entry_id IS NOT NULL)",
            name=op.f("ck_tb_services_deposit_if_confirmed"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'confirmed', 'rejected', 'reversed')",
            name=op.f("ck_tb_services_status"),
        ),
        sa.CheckConstraint("ended_at > started_at", name=op.f("ck_tb_services_interval")),
        sa.CheckConstraint(
            "rating IS NULL OR rating BETWEEN 1 AND 5", name=op.f("ck_tb_services_rating")
        ),
        sa.CheckConstraint(
            "raw_minutes > 0 AND credited_minutes >= 0", name=op.f("ck_tb_services_minutes")
        ),
        sa.CheckConstraint("weight_permille > 0", name=op.f("ck_tb_services_weight")),
        sa.ForeignKeyConstraint(
            ["deposit_entry_id"],
            ["tb_entries.id"],
            name=op.f("fk_tb_services_deposit_entry_id_tb_entries"),
        ),
        sa.ForeignKeyConstraint(
            ["programme_id"],
            ["tb_programmes.id"],
            name=op.f("fk_tb_services_programme_id_tb_programmes"),
        ),
        sa.ForeignKeyConstraint(
            ["reversal_entry_id"],
            ["tb_entries.id"],
            name=op.f("fk_tb_services_reversal_entry_id_tb_entries"),
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["tb_sites.id"], name=op.f("fk_tb_services_site_id_tb_sites")
        ),
        sa.ForeignKeyConstraint(
            ["volunteer_id"], ["tb_members.id"], name=op.f("fk_tb_services_volunteer_id_tb_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tb_services")),
        sa.UniqueConstraint("deposit_entry_id", name=op.f("uq_tb_services_deposit_entry_id")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_tb_services_idempotency_key")),
        sa.UniqueConstraint("reversal_entry_id", name=op.f("uq_tb_services_reversal_entry_id")),
    )
    with op.batch_alter_table("tb_services", schema=None) as batch_op:
        batch_op.create_index(
            "ix_tb_services_status_ended_at", ["status", "ended_at"], unique=False
        )
        batch_op.create_index(
            "ix_tb_services_volunteer_id_started_at", ["volunteer_id", "started_at"], unique=False
        )

    op.create_table(
        "tb_confirmations",
        sa.Column(
            "service_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("party", sa.String(length=10), nullable=False),
        sa.Column("confirmed_by", sa.String(length=64), nullable=False),
        sa.Column("confirmed_at", Stamp, nullable=False),
        sa.CheckConstraint(
            "party IN ('recipient', 'operator', 'automatic')",
            name=op.f("ck_tb_confirmations_party"),
        ),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["tb_services.id"],
            name=op.f("fk_tb_confirmations_service_id_tb_services"),
        ),
        sa.PrimaryKeyConstraint("service_id", "party", name=op.f("pk_tb_confirmations")),
    )
    op.create_table(
        "tb_service_recipients",
        sa.Column(
            "service_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["member_id"],
            ["tb_members.id"],
            name=op.f("fk_tb_service_recipients_member_id_tb_members"),
        ),
        sa.ForeignKeyConstraint(
            ["service_id"],
            ["tb_services.id"],
            name=op.f("fk_tb_service_recipients_service_id_tb_services"),
        ),
        sa.PrimaryKeyConstraint("service_id", "member_id", name=op.f("pk_tb_service_recipients")),
    )


def downgrade() -> None:
    # Dropping a table drops its indexes (MariaDB refuses to drop one a foreign key uses).
    op.drop_table("tb_service_recipients")
    op.drop_table("tb_confirmations")
    op.drop_table("tb_services")
    op.drop_table("tb_relations")
    op.drop_table("tb_operator_roles")
    op.drop_table("tb_member_personal")
    op.drop_table("tb_lots")
    op.drop_table("tb_operators")
    op.drop_table("tb_members")
    op.drop_table("tb_sites")
    op.drop_table("tb_regions")
    op.drop_table("tb_policies")
    op.drop_table("tb_programmes")
