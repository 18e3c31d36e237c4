"""Partial indexes of open lots (PostgreSQL, SQLite): first in, first out, a member's
statement and a bulk import read a member's (or a pool's) open lots, and through the full
index they read every lot the member ever had, spent ones included, before the first open
one (found by issue 10: the statement's plan was the one report still bounded only by the
member). MariaDB has no partial indexes and keeps the full index alone.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The same text as timebank.bank.schema.OPEN_LOT_SQL (a migration does not import the
#: models: it must build the schema of its own day).
_OPEN = "remaining_minutes > 0"

_INDEXES = (
    ("ix_tb_lots_open_member_id_earned_on", "tb_lots", "member_id"),
    ("ix_tb_pool_lots_open_region_id_earned_on", "tb_pool_lots", "region_id"),
)


def _partial() -> bool:
    return op.get_bind().dialect.name in ("postgresql", "sqlite")


def upgrade() -> None:
    if not _partial():
        return
    for name, table, owner in _INDEXES:
        op.create_index(
            name,
            table,
            [owner, "earned_on", "id"],
            postgresql_where=sa.text(_OPEN),
            sqlite_where=sa.text(_OPEN),
        )


def downgrade() -> None:
    if not _partial():
        return
    for name, table, _ in _INDEXES:
        op.drop_index(name, table_name=table)
