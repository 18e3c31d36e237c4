"""An index of members by home station (with their account): a station's report and a
region's exposure list the accounts of the members who live there. Without it both read
the whole table of members, a million rows in a province (found by the scale run of
issue 10).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_tb_members_home_site_id_account_id", "tb_members", ["home_site_id", "account_id"]
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name in ("mysql", "mariadb"):
        # InnoDB dropped the index it had made for the foreign key on home_site_id when the
        # new index began to serve it; one must be back before the new one can go (unless
        # an earlier downgrade left it there: InnoDB keeps an index it did not make).
        present = {ix["name"] for ix in sa.inspect(bind).get_indexes("tb_members")}
        if "fk_tb_members_home_site_id_tb_sites" not in present:
            op.create_index("fk_tb_members_home_site_id_tb_sites", "tb_members", ["home_site_id"])
    op.drop_index("ix_tb_members_home_site_id_account_id", table_name="tb_members")
