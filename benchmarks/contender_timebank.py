"""The library itself as a contender of workload W (ledger core: no floors on any account,
since W's volunteers redeem and give without having earned first).

Phase B builds one TransferCommand per transfer inside the timed phase (the library's input
is validated commands, so their validation is part of the cost) and posts 1,000 per
``post_many`` call: one database transaction each, with every check on.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine
from workload import ACCOUNT_CODES, Transfer, Workload

import timebank
from timebank import AccountSpec, Ledger, TransferCommand

PHASE_B_COMMIT_EVERY = 1_000
OPERATOR = "bench"


def account_type(code: str) -> str:
    """The account type of a workload account code (the benchmarks' chart of accounts)."""
    return {"V": "member", "S": "station_issued", "I": "institution_redeemed"}[code[0]]


def command(t: Transfer, key_prefix: str = "w-") -> TransferCommand:
    """The library's command for one workload transfer."""
    return TransferCommand(
        idempotency_key=f"{key_prefix}{t.index}",
        code=t.kind,
        debit=t.debit,
        credit=t.credit,
        amount_minutes=t.amount_minutes,
        operator=OPERATOR,
        occurred_at=t.occurred_at,
    )


class TimebankContender:
    name = "timebank"

    def __init__(self) -> None:
        self._ledger: Ledger | None = None

    def _open(self, engine: Engine) -> Ledger:
        if self._ledger is None:
            self._ledger = Ledger(engine)
        return self._ledger

    def setup(self, engine: Engine) -> None:
        timebank.upgrade(engine)
        self._open(engine).open_accounts(
            AccountSpec(code=code, type=account_type(code), floor_minutes=None)
            for code in ACCOUNT_CODES
        )

    def phase_b(self, engine: Engine, transfers: Sequence[Transfer]) -> None:
        ledger = self._open(engine)
        for start in range(0, len(transfers), PHASE_B_COMMIT_EVERY):
            chunk = transfers[start : start + PHASE_B_COMMIT_EVERY]
            ledger.post_many([command(t) for t in chunk])

    def phase_o(self, engine: Engine, transfers: Sequence[Transfer]) -> None:
        ledger = self._open(engine)
        for t in transfers:
            ledger.transfer(
                f"w-{t.index}",
                debit=t.debit,
                credit=t.credit,
                amount_minutes=t.amount_minutes,
                code=t.kind,
                operator=OPERATOR,
                occurred_at=t.occurred_at,
            )

    def phase_q(self, engine: Engine, workload: Workload) -> None:
        self.q_lookups(engine, workload.lookups)
        self.q_trial_balance(engine)
        self.q_statement(engine, workload.busiest_volunteer())

    def q_lookups(self, engine: Engine, codes: Sequence[str]) -> int:
        ledger = self._open(engine)
        return sum(ledger.balance(code).posted_minutes for code in codes)

    def q_trial_balance(self, engine: Engine) -> int:
        return self._open(engine).trial_balance().total_minutes

    def q_statement(self, engine: Engine, code: str) -> int:
        return sum(1 for _ in self._open(engine).iter_statement(code))
