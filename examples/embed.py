"""Embedding timebank in station software: your engine, your session, your transaction.

Run: python examples/embed.py [sqlite:///path.db]
"""

from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session

import timebank


def main(url: str) -> None:
    engine = timebank.make_engine(url)  # your app's engine, with timebank's SQLite defaults
    timebank.upgrade(engine)  # migrations are yours to run when you own the database
    ledger = timebank.Ledger(engine)

    ledger.open_accounts(
        [
            timebank.AccountSpec(
                code="station:s1:issued", type="station_issued", floor_minutes=None
            ),
            timebank.AccountSpec(code="member:m1", type="member", ceiling_minutes=90_000),
        ]
    )

    # One business act of your app, written together with your own rows, in one transaction:
    with Session(engine) as session, session.begin():
        book = ledger.bind(session)
        book.transfer(
            "svc-0001",
            debit="station:s1:issued",
            credit="member:m1",
            amount_minutes=90,
            code="deposit",
            operator="op:s1-clerk",
            occurred_at=datetime(2026, 11, 2, 9, 0, tzinfo=UTC),
        )
        # ... session.add(YourServiceRecord(...)) here; commit happens at the end of the block.

    print(ledger.balance("member:m1"))
    for line in ledger.iter_statement("member:m1"):
        print(line.code, line.amount_minutes, line.balance_after_minutes)
    engine.dispose()


if __name__ == "__main__":
    default = f"sqlite:///{Path(tempfile.mkdtemp()) / 'embed.db'}"
    main(sys.argv[1] if len(sys.argv) > 1 else default)
