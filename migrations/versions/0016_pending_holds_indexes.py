"""An account's pending holds by expiry: the holds' indexes by debit and by credit account
gain the status and the expiry. Recomputing an account's soonest pending expiry (after a
hold resolves), releasing its expired holds and summing a station's live bookings each read
one range of the account's pending holds, a side at a time. Before, an index by account alone
reached every hold the account ever had, and the look-ups that named both sides in one
condition were planned through the index by status: every pending hold of the ledger that
expires before the account's first (issue 10, `benchmarks/holds.py`).

The new indexes are made before the old ones go: MariaDB keeps an index on each foreign key
column first at every moment.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "tb_holds"
_SIDES = ("debit", "credit")


def upgrade() -> None:
    for side in _SIDES:
        op.create_index(
            f"ix_tb_holds_{side}_account_id_status_expires_at",
            _TABLE,
            [f"{side}_account_id", "status", "expires_at"],
        )
        op.drop_index(f"ix_tb_holds_{side}_account_id", table_name=_TABLE)


def downgrade() -> None:
    for side in _SIDES:
        op.create_index(f"ix_tb_holds_{side}_account_id", _TABLE, [f"{side}_account_id"])
        op.drop_index(f"ix_tb_holds_{side}_account_id_status_expires_at", table_name=_TABLE)
