"""The rows of clearing, kept with each redemption: the minutes it took from lots earned at
each site (tb_redemption_origins), filled here from the lot uses of every redemption already
recorded. Clearing and a station's net position read them through one index instead of
joining redemptions, lot uses and lots over the period (issue 10: at 1.8 million postings
that join was more than half of a station's monthly report).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A snapshot of the types of this revision: revisions never import the live models.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = (
    sa.DateTime()
    .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    .with_variant(sa.BigInteger(), "sqlite")
)

_TABLE = "tb_redemption_origins"
_INDEXES = {
    "ix_tb_redemption_origins_programme_id_occurred_at": [
        "programme_id", "occurred_at", "origin_site_id", "site_id", "minutes"],
    "ix_tb_redemption_origins_site_id_occurred_at": [
        "site_id", "occurred_at", "origin_site_id", "minutes"],
    "ix_tb_redemption_origins_origin_site_id_occurred_at": [
        "origin_site_id", "occurred_at", "site_id", "minutes"],
}

# Every redemption's minutes by the site where the lots it used were earned.
_FILL = f"""
INSERT INTO {_TABLE} (entry_id, origin_site_id, programme_id, site_id, occurred_at, minutes)
SELECT r.entry_id, l.origin_site_id, r.programme_id, r.site_id, r.occurred_at, SUM(u.minutes)
FROM tb_redemptions r
JOIN tb_lot_uses u ON u.entry_id = r.entry_id
JOIN tb_lots l ON l.id = u.lot_id
GROUP BY r.entry_id, l.origin_site_id, r.programme_id, r.site_id, r.occurred_at
"""


def upgrade() -> None:
    op.create_table(
        _TABLE,
        sa.Column("entry_id", Id, nullable=False),
        sa.Column("origin_site_id", Id, nullable=False),
        sa.Column("programme_id", Id, nullable=False),
        sa.Column("site_id", Id, nullable=False),
        sa.Column("occurred_at", Stamp, nullable=False),
        sa.Column("minutes", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("minutes > 0", name=op.f("ck_tb_redemption_origins_minutes")),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["tb_redemptions.entry_id"],
            name=op.f("fk_tb_redemption_origins_entry_id_tb_redemptions"),
        ),
        sa.ForeignKeyConstraint(
            ["origin_site_id"], ["tb_sites.id"],
            name=op.f("fk_tb_redemption_origins_origin_site_id_tb_sites"),
        ),
        sa.ForeignKeyConstraint(
            ["programme_id"], ["tb_programmes.id"],
            name=op.f("fk_tb_redemption_origins_programme_id_tb_programmes"),
        ),
        sa.ForeignKeyConstraint(
            ["site_id"], ["tb_sites.id"], name=op.f("fk_tb_redemption_origins_site_id_tb_sites")
        ),
        sa.PrimaryKeyConstraint(
            "entry_id", "origin_site_id", name=op.f("pk_tb_redemption_origins")
        ),
    )
    op.execute(_FILL)
    for name, columns in _INDEXES.items():
        op.create_index(name, _TABLE, columns)


def downgrade() -> None:
    op.drop_table(_TABLE)  # its indexes and keys with it
