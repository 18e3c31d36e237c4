"""The work that tests/test_crash.py kills with SIGKILL at random points, run as its own
process: ``python -m tests.crashworker bulk|confirm URL``.

``bulk`` posts ``BULK_ENTRIES`` transfers in batches of ``BATCH`` (one transaction each),
each with a fixed idempotency key, so a rerun after a crash replays what was committed and
posts the rest. ``confirm`` confirms the bank's pending services one at a time. Each prints
a line per step, so the parent can kill it in the middle of the work.
"""

from __future__ import annotations

import sys

from sqlalchemy import select

from timebank import EntryCommand, Ledger, PostingSpec
from timebank.bank import TimeBank
from timebank.bank.schema import services

ACCOUNTS = 20
BATCH = 50
BULK_ENTRIES = 2_000


def minutes(n: int) -> int:
    """Minutes of the transfer entry ``n`` makes (from account n % 20 to the next one):
    uneven, so an entry posted twice would show in the balances."""
    return 1 + n % 7


def command(n: int) -> EntryCommand:
    source, target = n % ACCOUNTS, (n + 1) % ACCOUNTS
    return EntryCommand(
        idempotency_key=f"crash-{n}",
        code="transfer",
        operator="crash-test",
        postings=(
            PostingSpec(account=f"crash:{source}", amount_minutes=-minutes(n)),
            PostingSpec(account=f"crash:{target}", amount_minutes=minutes(n)),
        ),
    )


def bulk(url: str) -> None:
    with Ledger.open(url) as ledger:
        for start in range(0, BULK_ENTRIES, BATCH):
            receipt = ledger.post_many(command(n) for n in range(start, start + BATCH))
            print(f"batch {start // BATCH} {receipt.created_count}", flush=True)


def confirm(url: str) -> None:
    with TimeBank.open(url, identity_secrets={}) as bank:
        pending = bank._read(
            lambda conn: list(
                conn.execute(
                    select(services.c.id, services.c.recorded_by)
                    .where(services.c.status == "pending")
                    .order_by(services.c.id)
                ).all()
            )
        )
        for service_id, _recorded_by in pending:
            bank.confirm_service(service_id, operator="admin")
            print(f"confirmed {service_id}", flush=True)


if __name__ == "__main__":
    {"bulk": bulk, "confirm": confirm}[sys.argv[1]](sys.argv[2])
