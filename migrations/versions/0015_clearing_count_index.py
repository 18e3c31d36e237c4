"""The clearing's count of redemptions read from an index alone: the programme's index of
clearing rows by period gains the entry id, so counting the distinct redemptions of a
period visits no table row (issue 10: on a 3-million-posting SQLite file the count visited
each clearing row of the month for its entry id, 22 ms against 3.3 ms from an index).

The new index is made before the old one goes: MariaDB keeps an index on ``programme_id``
first for its foreign key at every moment.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "tb_redemption_origins"
_OLD = "ix_tb_redemption_origins_programme_id_occurred_at"
_NEW = "ix_tb_redemption_origins_programme_id_occurred_at_entry_id"
_COLUMNS = ["programme_id", "occurred_at", "origin_site_id", "site_id", "minutes"]


def upgrade() -> None:
    op.create_index(_NEW, _TABLE, [*_COLUMNS, "entry_id"])
    op.drop_index(_OLD, table_name=_TABLE)


def downgrade() -> None:
    op.create_index(_OLD, _TABLE, _COLUMNS)
    op.drop_index(_NEW, table_name=_TABLE)
