"""Indexes for reports over a period of recording: the entries recorded in it, and the
services recorded at a site in it. Without them a station's monthly report read every
service and every redemption ever recorded (found by the scale run of issue 10).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_tb_entries_recorded_at", "tb_entries", ["recorded_at"])
    op.create_index(
        "ix_tb_services_site_id_recorded_at", "tb_services", ["site_id", "recorded_at"]
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name in ("mysql", "mariadb"):
        # InnoDB dropped the index it had made for the foreign key on site_id when the new
        # index began to serve it; one must be back before the new one can go (unless an
        # earlier downgrade left it there: InnoDB keeps an index it did not make).
        present = {ix["name"] for ix in sa.inspect(bind).get_indexes("tb_services")}
        if "fk_tb_services_site_id_tb_sites" not in present:
            op.create_index("fk_tb_services_site_id_tb_sites", "tb_services", ["site_id"])
    op.drop_index("ix_tb_services_site_id_recorded_at", table_name="tb_services")
    op.drop_index("ix_tb_entries_recorded_at", table_name="tb_entries")
