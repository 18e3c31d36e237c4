"""The journal's hash chain: sealed blocks of entries (tamper evidence).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A snapshot of the types of this revision: revisions never import the live models.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Stamp = (
    sa.DateTime()
    .with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
    .with_variant(sa.BigInteger(), "sqlite")
)


def upgrade() -> None:
    op.create_table(
        "tb_seals",
        sa.Column("id", Id, autoincrement=False, nullable=False),
        sa.Column("encoding", sa.Integer(), nullable=False),
        sa.Column("entries", sa.BigInteger(), nullable=False),
        sa.Column("first_entry_id", sa.BigInteger(), nullable=False),
        sa.Column("last_entry_id", sa.BigInteger(), nullable=False),
        sa.Column("previous_hash", sa.String(length=64), nullable=False),
        sa.Column("block_hash", sa.String(length=64), nullable=False),
        sa.Column("sealed_at", Stamp, nullable=False),
        sa.CheckConstraint(
            "id >= 1 AND entries >= 1 AND first_entry_id <= last_entry_id",
            name=op.f("ck_tb_seals_block"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tb_seals")),
        sa.UniqueConstraint("block_hash", name=op.f("uq_tb_seals_block_hash")),
    )
    op.create_table(
        "tb_sealed_entries",
        sa.Column("entry_id", Id, autoincrement=False, nullable=False),
        sa.Column("seal_id", Id, nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["seal_id"], ["tb_seals.id"], name=op.f("fk_tb_sealed_entries_seal_id_tb_seals")
        ),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_tb_sealed_entries")),
        sqlite_with_rowid=False,
    )
    op.create_index(
        op.f("ix_tb_sealed_entries_seal_id"), "tb_sealed_entries", ["seal_id"], unique=False
    )
    _immutable(op.get_bind().dialect.name)


SEALED = ("tb_seals", "tb_sealed_entries")
MESSAGE = "seals are immutable: a block, once written, is evidence"


def _immutable(dialect: str) -> None:
    """Seals are written once, like entries (the audit still catches a change made with the
    triggers dropped: the database refuses, the chain detects)."""
    if dialect == "postgresql":
        op.execute(f"""
            CREATE FUNCTION tb_refuse_seal_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'timebank: % on % refused: {MESSAGE}', TG_OP, TG_TABLE_NAME
                    USING ERRCODE = 'restrict_violation';
            END $$""")
    for table in SEALED:
        if dialect == "postgresql":
            op.execute(f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION tb_refuse_seal_change()")
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION tb_refuse_seal_change()")
            continue
        for action in ("UPDATE", "DELETE"):
            if dialect == "sqlite":
                body = f"BEGIN SELECT RAISE(ABORT, 'timebank: {MESSAGE}'); END"
            else:
                body = (f"FOR EACH ROW SIGNAL SQLSTATE '45000' "
                        f"SET MESSAGE_TEXT = 'timebank: {MESSAGE}'")
            op.execute(f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                       f"{body}")


def downgrade() -> None:
    # Dropping the tables drops their indexes and triggers (MariaDB will not drop an index
    # that a foreign key needs on its own).
    op.drop_table("tb_sealed_entries")
    op.drop_table("tb_seals")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION tb_refuse_seal_change()")
