"""The deterministic generator of workload W (see /work/shared/BENCHMARK.md).

Every draw is made from one ``random.Random(42)`` in exactly the order the specification gives,
so any implementation of the specification, in any language, produces the same transfers:

    for i in 0 .. 101_999:
        r = rng.random()
        amount = rng.randint(30, 240)
        r < 0.6  deposit:    station rng.randrange(20)        -> volunteer rng.randrange(10000)
        r < 0.9  redemption: volunteer rng.randrange(10000)   -> institution rng.randrange(10)
        else     gift:       volunteer rng.randrange(10000)   -> volunteer rng.randrange(10000),
                             the receiver drawn again while it equals the giver
    then 1,000 look-up accounts rng.randrange(10030).

Accounts are named by code: volunteers ``V00000``..``V09999``, stations ``S00``..``S19``,
institutions ``I0``..``I9``. Account index 0-9999 is a volunteer, 10000-10019 a station,
10020-10029 an institution (the index space of the look-up draws).

Convention: ``debit`` is the account that loses the minutes (the station of a deposit, the
volunteer of a redemption, the giver of a gift) and ``credit`` the one that gains them.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

SEED = 42
VOLUNTEERS_COUNT = 10_000
STATIONS_COUNT = 20
INSTITUTIONS_COUNT = 10
ACCOUNTS_COUNT = VOLUNTEERS_COUNT + STATIONS_COUNT + INSTITUTIONS_COUNT  # 10,030
PHASE_B_COUNT = 100_000
PHASE_O_COUNT = 2_000
TRANSFERS_COUNT = PHASE_B_COUNT + PHASE_O_COUNT  # 102,000
LOOKUPS_COUNT = 1_000
AMOUNT_MIN_MINUTES = 30
AMOUNT_MAX_MINUTES = 240
DEPOSIT_BELOW = 0.6
REDEMPTION_BELOW = 0.9

TransferKind = Literal["deposit", "redemption", "gift"]


def volunteer_code(n: int) -> str:
    return f"V{n:05d}"


def station_code(n: int) -> str:
    return f"S{n:02d}"


def institution_code(n: int) -> str:
    return f"I{n}"


def account_code(index: int) -> str:
    """The code of the account at ``index`` in the 0..10029 look-up index space."""
    if not 0 <= index < ACCOUNTS_COUNT:
        raise ValueError(f"account index out of range: {index}")
    if index < VOLUNTEERS_COUNT:
        return volunteer_code(index)
    if index < VOLUNTEERS_COUNT + STATIONS_COUNT:
        return station_code(index - VOLUNTEERS_COUNT)
    return institution_code(index - VOLUNTEERS_COUNT - STATIONS_COUNT)


ACCOUNT_CODES: tuple[str, ...] = tuple(account_code(i) for i in range(ACCOUNTS_COUNT))


@dataclass(frozen=True, slots=True)
class Transfer:
    """One transfer of W: ``amount_minutes`` move from ``debit`` to ``credit``."""

    index: int
    kind: TransferKind
    debit: str
    credit: str
    amount_minutes: int
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class Workload:
    transfers: tuple[Transfer, ...]  # 102,000, in generation order
    lookups: tuple[str, ...]  # 1,000 account codes, with repeats, in draw order
    account_codes: tuple[str, ...]  # all 10,030, in index order
    current_year: int

    @property
    def phase_b(self) -> tuple[Transfer, ...]:
        """The first 100,000 transfers (bulk phase)."""
        return self.transfers[:PHASE_B_COUNT]

    @property
    def phase_o(self) -> tuple[Transfer, ...]:
        """The next 2,000 transfers (one at a time phase)."""
        return self.transfers[PHASE_B_COUNT:TRANSFERS_COUNT]

    def busiest_volunteer(self) -> str:
        """The volunteer touched by the most transfers of all 102,000 (ties: smallest code)."""
        return busiest_volunteer(self.transfers)


def busiest_volunteer(transfers: Sequence[Transfer]) -> str:
    """The volunteer touched by the most of ``transfers``; ties go to the smallest code."""
    counts: Counter[str] = Counter()
    for t in transfers:
        for code in (t.debit, t.credit):
            if code.startswith("V"):
                counts[code] += 1
    if not counts:
        raise ValueError("no transfer touches a volunteer")
    return min(counts, key=lambda code: (-counts[code], code))


def expected_balances(transfers: Sequence[Transfer]) -> dict[str, int]:
    """Reference balances (credits minus debits) of every account after ``transfers``.

    No overdraft rule applies here: W's volunteers may go below zero.
    """
    balances = dict.fromkeys(ACCOUNT_CODES, 0)
    for t in transfers:
        balances[t.debit] -= t.amount_minutes
        balances[t.credit] += t.amount_minutes
    return balances


def generate(current_year: int | None = None) -> Workload:
    """Generate W; service times start on 2 January of ``current_year`` (default: this year)."""
    year = datetime.now(UTC).year if current_year is None else current_year
    start = datetime(year, 1, 2, tzinfo=UTC)
    rng = random.Random(SEED)
    transfers: list[Transfer] = []
    for i in range(TRANSFERS_COUNT):
        r = rng.random()
        amount = rng.randint(AMOUNT_MIN_MINUTES, AMOUNT_MAX_MINUTES)
        kind: TransferKind
        if r < DEPOSIT_BELOW:
            kind = "deposit"
            debit = station_code(rng.randrange(STATIONS_COUNT))
            credit = volunteer_code(rng.randrange(VOLUNTEERS_COUNT))
        elif r < REDEMPTION_BELOW:
            kind = "redemption"
            debit = volunteer_code(rng.randrange(VOLUNTEERS_COUNT))
            credit = institution_code(rng.randrange(INSTITUTIONS_COUNT))
        else:
            kind = "gift"
            giver = rng.randrange(VOLUNTEERS_COUNT)
            receiver = rng.randrange(VOLUNTEERS_COUNT)
            while receiver == giver:
                receiver = rng.randrange(VOLUNTEERS_COUNT)
            debit = volunteer_code(giver)
            credit = volunteer_code(receiver)
        transfers.append(
            Transfer(
                index=i,
                kind=kind,
                debit=debit,
                credit=credit,
                amount_minutes=amount,
                occurred_at=start + timedelta(minutes=i),
            )
        )
    lookups = tuple(account_code(rng.randrange(ACCOUNTS_COUNT)) for _ in range(LOOKUPS_COUNT))
    return Workload(
        transfers=tuple(transfers),
        lookups=lookups,
        account_codes=ACCOUNT_CODES,
        current_year=year,
    )
