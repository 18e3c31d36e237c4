"""What one business act runs with: its database transaction, the ledger operations bound to
it, the programme it belongs to and the instant it happens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, select

from timebank import errors
from timebank.bank.schema import programmes
from timebank.ledger import LedgerTransaction
from timebank.schema import accounts


@dataclass(frozen=True, slots=True)
class Act:
    tx: LedgerTransaction
    now: datetime

    @property
    def conn(self) -> Connection:
        return self.tx.connection


def programme_row(conn: Connection, code: str, *, lock: bool = False) -> Row[Any]:
    query = select(programmes).where(programmes.c.code == code)
    if lock:
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None:
        raise errors.BankObjectNotFoundError("programme", code)
    return row


def one(conn: Connection, query: Any, kind: str, ref: object) -> Row[Any]:
    """The single row ``query`` finds, or the not-found refusal for ``kind`` ``ref``."""
    row = conn.execute(query).first()
    if row is None:
        raise errors.BankObjectNotFoundError(kind, ref)
    return row


def differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Names of the fields whose stored value differs from the one asked for."""
    return [name for name, value in wanted.items() if stored.get(name) != value]


def account_code(conn: Connection, account_id: int) -> str:
    code: str = conn.execute(
        select(accounts.c.code).where(accounts.c.id == account_id)
    ).scalar_one()
    return code


def code_of(conn: Connection, table: Any, row_id: int) -> str:
    """The ``code`` of row ``row_id`` of ``table`` (programmes, regions, sites)."""
    code: str = conn.execute(select(table.c.code).where(table.c.id == row_id)).scalar_one()
    return code
