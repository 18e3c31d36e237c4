"""PostgreSQL: postings' references to their entry and account checked once per statement.

A foreign key checks each inserted row with a query of its own (and locks the referenced
row): two checks per posting, a quarter of the cost of a bulk write. On PostgreSQL this
revision replaces the two foreign keys of ``tb_postings`` with one statement-level trigger
that checks every inserted posting in one query, and guards the referenced side: entries
are immutable already, and an account can be neither deleted (accounts are closed, never
deleted), renumbered, nor truncated away. SQLite and MariaDB keep their foreign keys.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FOREIGN_KEYS = {
    "fk_tb_postings_entry_id_tb_entries": ("entry_id", "tb_entries"),
    "fk_tb_postings_account_id_tb_accounts": ("account_id", "tb_accounts"),
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # Scalar subqueries, never flattened into joins: whatever the plan cache keeps, each
    # posting costs two primary-key probes, for one posting as for thousands.
    op.execute("""
        CREATE FUNCTION tb_check_posting_references() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            orphans bigint;
        BEGIN
            SELECT count(*) INTO orphans FROM new_postings p
            WHERE (SELECT 1 FROM tb_entries e WHERE e.id = p.entry_id) IS NULL
               OR (SELECT 1 FROM tb_accounts a WHERE a.id = p.account_id) IS NULL;
            IF orphans > 0 THEN
                RAISE EXCEPTION 'timebank: % posting(s) name no existing entry or account',
                    orphans USING ERRCODE = 'foreign_key_violation';
            END IF;
            RETURN NULL;
        END $$""")
    op.execute(
        "CREATE TRIGGER tb_postings_references AFTER INSERT ON tb_postings "
        "REFERENCING NEW TABLE AS new_postings FOR EACH STATEMENT "
        "EXECUTE FUNCTION tb_check_posting_references()"
    )
    op.execute("""
        CREATE FUNCTION tb_refuse_account_removal() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'timebank: % on tb_accounts refused: accounts are closed, '
                'never deleted or renumbered', TG_OP USING ERRCODE = 'restrict_violation';
        END $$""")
    op.execute(
        "CREATE TRIGGER tb_accounts_kept BEFORE DELETE ON tb_accounts "
        "FOR EACH ROW EXECUTE FUNCTION tb_refuse_account_removal()"
    )
    op.execute(
        "CREATE TRIGGER tb_accounts_renumbered BEFORE UPDATE ON tb_accounts FOR EACH ROW "
        "WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION tb_refuse_account_removal()"
    )
    op.execute(
        "CREATE TRIGGER tb_accounts_no_truncate BEFORE TRUNCATE ON tb_accounts "
        "FOR EACH STATEMENT EXECUTE FUNCTION tb_refuse_account_removal()"
    )
    for name in _FOREIGN_KEYS:
        op.drop_constraint(name, "tb_postings", type_="foreignkey")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, (column, table) in _FOREIGN_KEYS.items():
        op.create_foreign_key(name, "tb_postings", table, [column], ["id"])
    for trigger, table in (
        ("tb_accounts_no_truncate", "tb_accounts"),
        ("tb_accounts_renumbered", "tb_accounts"),
        ("tb_accounts_kept", "tb_accounts"),
        ("tb_postings_references", "tb_postings"),
    ):
        op.execute(f"DROP TRIGGER {trigger} ON {table}")
    op.execute("DROP FUNCTION tb_refuse_account_removal()")
    op.execute("DROP FUNCTION tb_check_posting_references()")
