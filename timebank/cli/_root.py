"""The root ``timebank`` group and the ``db`` group."""

from __future__ import annotations

import click

from timebank import __version__, migrate
from timebank.cli import EXIT_SCHEMA
from timebank.cli._app import EXIT_CODES_HELP, SectionedGroup, common
from timebank.cli._output import emit, note
from timebank.cli._state import STATE, database_revision

SECTIONS = (
    ("Database", ["db"]),
    ("Set-up", ["programme", "policy", "region", "site", "operator", "member"]),
    ("Daily work", ["record", "confirm", "reject", "reverse", "confirm-due", "book",
                    "complete", "cancel", "redeem", "gift", "donate", "grant", "expire",
                    "freeze", "unfreeze", "settle"]),
    ("Reading", ["balance", "statement", "lots", "show", "report", "clearing", "exposure"]),
    ("Data", ["export", "import"]),
    ("Audit", ["seal", "digest", "audit"]),
    ("Simulation", ["demo", "simulate"]),
)


@click.group(
    cls=SectionedGroup,
    sections=SECTIONS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES_HELP,
)
@click.version_option(__version__, "--version", prog_name="timebank")
def root() -> None:
    """Run a time bank from the terminal: set it up, record the day's work, read balances,
    statements and reports.

    \b
    The database is --db (a URL or an SQLite file), else TIMEBANK_DATABASE_URL, else
    ./timebank.db. Acts name their operator (--operator or TIMEBANK_OPERATOR).

    \b
    Examples:
      timebank db upgrade --db bank.db
      timebank programme create nj --name "Nanjing" --policy policy.toml \\
          --root-region js --root-region-name "Jiangsu" --administrator admin \\
          --administrator-name "Admin"
      timebank record -p nj -o desk1 --volunteer 1 --recipient 2 --site st1 \\
          --type chat --start 2026-11-29T09:00 --end 2026-11-29T10:00
      timebank balance 1 --json
    """


@root.group(cls=SectionedGroup)
def db() -> None:
    """Create, upgrade and check the database's schema.

    \b
    Examples:
      timebank db upgrade --db bank.db
      timebank db current --db postgresql+psycopg://bank@db.example/bank --json
      timebank db check || timebank db upgrade
    """


@db.command("upgrade")
@common()
@click.option("--revision", default="head", show_default=True,
              help="The schema revision to reach.")
def db_upgrade(revision: str) -> None:
    """Create the database's tables, or migrate them to this version's schema.

    \b
    Example:
      timebank db upgrade --db bank.db
    """
    engine = STATE.engine()
    try:
        before = migrate.current_revision(engine)
        migrate.upgrade(engine, revision)
        after = migrate.current_revision(engine)
    finally:
        engine.dispose()
    emit({"database": STATE.shown_url(), "from_revision": before, "revision": after,
          "head": migrate.head_revision()}, title="schema upgraded")


@db.command("current")
@common()
def db_current() -> None:
    """The database's schema revision and the one this version of timebank needs.

    \b
    Example:
      timebank db current --json
    """
    STATE.require_database()
    current, head = database_revision(STATE.engine())
    emit({"database": STATE.shown_url(), "revision": current, "head": head,
          "up_to_date": current == head}, title="schema")


@db.command("check")
@common()
def db_check() -> None:
    """Exit 0 when the database is at this version's schema, 9 (with the fix) when not.

    \b
    Example:
      timebank db check || timebank db upgrade
    """
    STATE.require_database()
    current, head = database_revision(STATE.engine())
    ok = current == head
    emit({"database": STATE.shown_url(), "revision": current, "head": head, "up_to_date": ok},
         title="schema")
    if not ok:
        note(f"timebank: schema: the database is at {current or 'no schema'}, this version "
             f"needs {head}. Fix: timebank db upgrade --db URL")
        STATE.exit_code = EXIT_SCHEMA


@root.command("migrate", hidden=True)
@common()
@click.pass_context
def migrate_alias(ctx: click.Context) -> None:
    """The name of `db upgrade` before the command grew (kept for existing scripts)."""
    ctx.invoke(db_upgrade, revision="head")
