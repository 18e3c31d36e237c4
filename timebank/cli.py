"""The ``timebank`` command: ``timebank demo`` and ``timebank migrate``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from timebank import migrate
from timebank._db import make_engine
from timebank._demo import run_demo


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="timebank", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="simulate a month of a small province into an SQLite file and report on it"
    )
    demo.add_argument(
        "--db",
        default="timebank-demo.db",
        help="SQLite file to create (default: ./timebank-demo.db) or a database URL",
    )
    upgrade = commands.add_parser("migrate", help="migrate a database to the latest schema")
    upgrade.add_argument("--db", required=True, help="database URL, e.g. sqlite:///bank.db")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo(_as_url(args.db), print)
    engine = make_engine(args.db)
    try:
        migrate.upgrade(engine)
        print(f"{args.db}: at revision {migrate.current_revision(engine)}")
    finally:
        engine.dispose()
    return 0


def _as_url(db: str) -> str:
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).resolve()}"


if __name__ == "__main__":
    sys.exit(main())
