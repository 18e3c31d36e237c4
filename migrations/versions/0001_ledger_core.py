"""Ledger core: accounts (with materialised balances), entries, postings, holds; triggers that
keep entries and postings immutable and frozen accounts still; on PostgreSQL a deferred check
that every entry balances.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A snapshot of the types of this revision: revisions never import the live models.
AMOUNT_MAX_MINUTES = 1_000_000_000
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# Instants: naive UTC timestamps; on SQLite integer microseconds since the Unix epoch.
Stamp = (
    sa.DateTime()
    .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    .with_variant(sa.BigInteger(), "sqlite")
)


# Keys and codes compare byte for byte (MariaDB's default collation ignores case and trailing
# spaces).
def Exact(length: int) -> sa.types.TypeEngine[str]:
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, collation="utf8mb4_nopad_bin"), "mysql", "mariadb"
    )


# Minutes may not move on an account that is not open; holds may only shrink there.
FROZEN_MOVES = (
    "(OLD.status <> 'open' OR NEW.status <> 'open') AND "
    "(NEW.posted_minutes <> OLD.posted_minutes OR NEW.held_out_minutes > OLD.held_out_minutes "
    "OR NEW.held_in_minutes > OLD.held_in_minutes)"
)
IMMUTABLE = "entries and postings are immutable: correct by posting a reversal"
NOT_OPEN = "minutes cannot move on an account that is not open"


def upgrade() -> None:
    _accounts()
    _entries()
    _holds()
    _postings()
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        _postgresql_triggers()
    elif dialect == "sqlite":
        _sqlite_triggers()
    elif dialect in ("mysql", "mariadb"):
        _mysql_triggers()


def _accounts() -> None:
    op.create_table(
        "tb_accounts",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("code", Exact(64), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("owner_ref", sa.String(128), nullable=True),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("status_reason", sa.String(500), nullable=False),
        sa.Column("floor_minutes", sa.BigInteger(), nullable=True),
        sa.Column("ceiling_minutes", sa.BigInteger(), nullable=True),
        sa.Column("posted_minutes", sa.BigInteger(), nullable=False),
        sa.Column("held_out_minutes", sa.BigInteger(), nullable=False),
        sa.Column("held_in_minutes", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("next_hold_expiry_at", Stamp, nullable=True),
        sa.Column("last_recorded_at", Stamp, nullable=True),
        sa.Column("created_at", Stamp, nullable=False),
        sa.CheckConstraint(
            "status <> 'closed' OR "
            "(posted_minutes = 0 AND held_out_minutes = 0 AND held_in_minutes = 0)",
            name=op.f("ck_tb_accounts_closed_empty"),
        ),
        sa.CheckConstraint(
            "status IN ('open', 'frozen', 'closed')", name=op.f("ck_tb_accounts_status")
        ),
        sa.CheckConstraint(
            "ceiling_minutes IS NULL OR posted_minutes + held_in_minutes <= ceiling_minutes",
            name=op.f("ck_tb_accounts_ceiling"),
        ),
        sa.CheckConstraint(
            "floor_minutes IS NULL OR ceiling_minutes IS NULL OR floor_minutes <= ceiling_minutes",
            name=op.f("ck_tb_accounts_limits"),
        ),
        sa.CheckConstraint(
            "floor_minutes IS NULL OR posted_minutes - held_out_minutes >= floor_minutes",
            name=op.f("ck_tb_accounts_floor"),
        ),
        sa.CheckConstraint(
            "held_out_minutes >= 0 AND held_in_minutes >= 0", name=op.f("ck_tb_accounts_holds")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tb_accounts")),
        sa.UniqueConstraint("code", name=op.f("uq_tb_accounts_code")),
    )


def _entries() -> None:
    op.create_table(
        "tb_entries",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("idempotency_key", Exact(128), nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("occurred_at", Stamp, nullable=False),
        sa.Column("recorded_at", Stamp, nullable=False),
        sa.Column("operator", sa.String(64), nullable=False),
        sa.Column("memo", sa.String(500), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("reverses_entry_id", Id, nullable=True),
        sa.ForeignKeyConstraint(
            ["reverses_entry_id"],
            ["tb_entries.id"],
            name=op.f("fk_tb_entries_reverses_entry_id_tb_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tb_entries")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_tb_entries_idempotency_key")),
    )
    op.create_index(
        "uq_tb_entries_reverses_entry_id",
        "tb_entries",
        ["reverses_entry_id"],
        unique=True,
        postgresql_where=sa.text("reverses_entry_id IS NOT NULL"),
        sqlite_where=sa.text("reverses_entry_id IS NOT NULL"),
    )


def _holds() -> None:
    op.create_table(
        "tb_holds",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("idempotency_key", Exact(128), nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("debit_account_id", Id, nullable=False),
        sa.Column("credit_account_id", Id, nullable=False),
        sa.Column("amount_minutes", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("operator", sa.String(64), nullable=False),
        sa.Column("memo", sa.String(500), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("expires_at", Stamp, nullable=True),
        sa.Column("resolved_at", Stamp, nullable=True),
        sa.Column("resolution_key", Exact(128), nullable=True),
        sa.Column("resolved_by", sa.String(64), nullable=True),
        sa.Column("resolution_memo", sa.String(500), nullable=True),
        sa.Column("posted_entry_id", Id, nullable=True),
        sa.CheckConstraint(
            "(status = 'pending' AND resolved_at IS NULL) OR "
            "(status <> 'pending' AND resolved_at IS NOT NULL)",
            name=op.f("ck_tb_holds_resolved"),
        ),
        sa.CheckConstraint(
            "(status = 'posted') = (posted_entry_id IS NOT NULL)",
            name=op.f("ck_tb_holds_posted_entry"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'posted', 'voided', 'expired')", name=op.f("ck_tb_holds_status")
        ),
        sa.CheckConstraint(
            f"amount_minutes > 0 AND amount_minutes <= {AMOUNT_MAX_MINUTES}",
            name=op.f("ck_tb_holds_amount"),
        ),
        sa.CheckConstraint(
            "debit_account_id <> credit_account_id", name=op.f("ck_tb_holds_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["credit_account_id"],
            ["tb_accounts.id"],
            name=op.f("fk_tb_holds_credit_account_id_tb_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["debit_account_id"],
            ["tb_accounts.id"],
            name=op.f("fk_tb_holds_debit_account_id_tb_accounts"),
        ),
        sa.ForeignKeyConstraint(
            ["posted_entry_id"],
            ["tb_entries.id"],
            name=op.f("fk_tb_holds_posted_entry_id_tb_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tb_holds")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_tb_holds_idempotency_key")),
        sa.UniqueConstraint("posted_entry_id", name=op.f("uq_tb_holds_posted_entry_id")),
        sa.UniqueConstraint("resolution_key", name=op.f("uq_tb_holds_resolution_key")),
    )
    op.create_index("ix_tb_holds_credit_account_id", "tb_holds", ["credit_account_id"])
    op.create_index("ix_tb_holds_debit_account_id", "tb_holds", ["debit_account_id"])
    op.create_index("ix_tb_holds_status_expires_at", "tb_holds", ["status", "expires_at"])


def _postings() -> None:
    op.create_table(
        "tb_postings",
        sa.Column("entry_id", Id, nullable=False),
        sa.Column("account_id", Id, nullable=False),
        sa.Column("amount_minutes", sa.BigInteger(), nullable=False),
        sa.Column("balance_after_minutes", sa.BigInteger(), nullable=False),
        sa.Column("recorded_at", Stamp, nullable=False),
        sa.CheckConstraint(
            f"amount_minutes <> 0 AND amount_minutes BETWEEN {-AMOUNT_MAX_MINUTES} "
            f"AND {AMOUNT_MAX_MINUTES}",
            name=op.f("ck_tb_postings_amount"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["tb_accounts.id"], name=op.f("fk_tb_postings_account_id_tb_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["tb_entries.id"], name=op.f("fk_tb_postings_entry_id_tb_entries")
        ),
        sa.PrimaryKeyConstraint("entry_id", "account_id", name=op.f("pk_tb_postings")),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_tb_postings_account_id_recorded_at",
        "tb_postings",
        ["account_id", "recorded_at", "entry_id"],
    )


def _postgresql_triggers() -> None:
    op.execute(f"""
        CREATE FUNCTION tb_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'timebank: % on % refused: {IMMUTABLE}', TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'restrict_violation';
        END $$""")
    for table in ("tb_entries", "tb_postings"):
        op.execute(
            f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION tb_refuse_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION tb_refuse_change()"
        )
    op.execute(f"""
        CREATE FUNCTION tb_refuse_frozen_move() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'timebank: account %: {NOT_OPEN}', OLD.code
                USING ERRCODE = 'check_violation';
        END $$""")
    op.execute(
        "CREATE TRIGGER tb_accounts_frozen BEFORE UPDATE ON tb_accounts FOR EACH ROW "
        f"WHEN ({FROZEN_MOVES}) EXECUTE FUNCTION tb_refuse_frozen_move()"
    )
    # Checked at COMMIT, once per entry: its postings, written after it, must balance.
    op.execute("""
        CREATE FUNCTION tb_check_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            legs bigint;
            total numeric;
        BEGIN
            SELECT count(*), coalesce(sum(amount_minutes), 0) INTO legs, total
            FROM tb_postings WHERE entry_id = NEW.id;
            IF legs < 2 OR total <> 0 THEN
                RAISE EXCEPTION 'timebank: entry % has % postings summing to %, not >= 2 and 0',
                    NEW.id, legs, total USING ERRCODE = 'check_violation';
            END IF;
            RETURN NULL;
        END $$""")
    op.execute(
        "CREATE CONSTRAINT TRIGGER tb_entries_balanced AFTER INSERT ON tb_entries "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
        "EXECUTE FUNCTION tb_check_entry_balanced()"
    )


def _sqlite_triggers() -> None:
    for table in ("tb_entries", "tb_postings"):
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, 'timebank: {IMMUTABLE}'); END"
            )
    op.execute(
        f"CREATE TRIGGER tb_accounts_frozen BEFORE UPDATE ON tb_accounts "
        f"WHEN {FROZEN_MOVES} BEGIN SELECT RAISE(ABORT, 'timebank: {NOT_OPEN}'); END"
    )


def _mysql_triggers() -> None:
    for table in ("tb_entries", "tb_postings"):
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"FOR EACH ROW SIGNAL SQLSTATE '45000' "
                f"SET MESSAGE_TEXT = 'timebank: {IMMUTABLE}'"
            )
    op.execute(
        f"CREATE TRIGGER tb_accounts_frozen BEFORE UPDATE ON tb_accounts FOR EACH ROW "
        f"BEGIN IF {FROZEN_MOVES} THEN SIGNAL SQLSTATE '45000' "
        f"SET MESSAGE_TEXT = 'timebank: {NOT_OPEN}'; END IF; END"
    )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TABLE tb_postings, tb_holds, tb_entries, tb_accounts")
        for fn in ("tb_refuse_change", "tb_refuse_frozen_move", "tb_check_entry_balanced"):
            op.execute(f"DROP FUNCTION {fn}()")
        return
    for table in ("tb_postings", "tb_holds", "tb_entries", "tb_accounts"):
        op.drop_table(table)
