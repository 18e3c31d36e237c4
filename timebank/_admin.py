"""Opening accounts and changing their status or limits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, insert, select, update
from sqlalchemy import exc as sa_exc

from timebank import _accounts, errors
from timebank._db import KeyRace, planned_each_time, violated
from timebank.limits import SQL_CHUNK_ROWS
from timebank.models import AccountSpec
from timebank.schema import accounts

_SPEC_FIELDS = ("type", "owner_ref", "floor_minutes", "ceiling_minutes")


def open_accounts(conn: Connection, specs: Sequence[AccountSpec], now: datetime) -> int:
    """Create the accounts that do not exist yet; an existing code must match its spec (the
    code is the idempotency key of opening an account). Returns how many were created."""
    by_code: dict[str, AccountSpec] = {}
    for spec in specs:
        seen = by_code.setdefault(spec.code, spec)
        if seen != spec:
            raise errors.AccountExistsError(spec.code, _differing(seen, spec))
    # One statement per chunk of codes, against a table these calls keep growing. The
    # insert below stays prepared: psycopg's executemany plans it once for every row.
    with planned_each_time(conn):
        _drop_existing(conn, by_code)
    for spec in by_code.values():
        _check_starts_within_limits(spec)
    rows = [_row(spec, now) for spec in by_code.values()]
    if rows:
        try:
            conn.execute(insert(accounts), rows)
        except sa_exc.IntegrityError as exc:
            if violated(exc, "code"):
                raise KeyRace from exc
            raise
    return len(rows)


def _drop_existing(conn: Connection, by_code: dict[str, AccountSpec]) -> None:
    """Take the accounts that exist out of ``by_code``; each must match its spec."""
    codes = sorted(by_code)
    for start in range(0, len(codes), SQL_CHUNK_ROWS):
        chunk = codes[start : start + SQL_CHUNK_ROWS]
        existing = conn.execute(
            select(accounts.c.code, *(accounts.c[f] for f in _SPEC_FIELDS)).where(
                accounts.c.code.in_(chunk)
            )
        )
        for row in existing:
            spec = by_code.pop(row.code)
            stored = AccountSpec(code=row.code, **{f: getattr(row, f) for f in _SPEC_FIELDS})
            if stored != spec:
                raise errors.AccountExistsError(row.code, _differing(stored, spec))


def _check_starts_within_limits(spec: AccountSpec) -> None:
    """A new account holds 0 minutes, which must lie within its limits."""
    if spec.floor_minutes is not None and spec.floor_minutes > 0:
        raise errors.InvalidInputError(
            f"account {spec.code!r}: floor_minutes {spec.floor_minutes} is above 0, "
            "where a new account starts"
        )
    if spec.ceiling_minutes is not None and spec.ceiling_minutes < 0:
        raise errors.InvalidInputError(
            f"account {spec.code!r}: ceiling_minutes {spec.ceiling_minutes} is below 0, "
            "where a new account starts"
        )


def _differing(a: AccountSpec, b: AccountSpec) -> list[str]:
    return [f for f in _SPEC_FIELDS if getattr(a, f) != getattr(b, f)]


def _row(spec: AccountSpec, now: datetime) -> dict[str, object]:
    return {
        "code": spec.code,
        "type": spec.type,
        "owner_ref": spec.owner_ref,
        "status": "open",
        "status_reason": "",
        "floor_minutes": spec.floor_minutes,
        "ceiling_minutes": spec.ceiling_minutes,
        "posted_minutes": 0,
        "held_out_minutes": 0,
        "held_in_minutes": 0,
        "version": 0,
        "next_hold_expiry_at": None,
        "last_recorded_at": None,
        "created_at": now,
    }


_TRANSITIONS = {
    "frozen": ("open", "frozen"),
    "open": ("frozen", "open"),
    "closed": ("open", "frozen", "closed"),
}


def set_status(conn: Connection, code: str, status: str, reason: str, now: datetime) -> None:
    """Freeze, unfreeze or close. Setting the status an account already has is a no-op,
    so repeating the call is safe. Closing needs a zero balance and no pending holds."""
    locked = _accounts.lock(conn, [code], now)
    # Locking may have expired holds, changing this and other accounts: keep those changes.
    _accounts.write_back(conn, locked.values())
    account = locked[code]
    if account.status == status:
        return
    if account.status not in _TRANSITIONS[status]:
        raise errors.AccountStateError(
            f"account {code!r} is {account.status}; cannot make it {status}"
        )
    if status == "closed" and (
        account.posted_minutes or account.held_out_minutes or account.held_in_minutes
    ):
        raise errors.AccountStateError(
            f"account {code!r} cannot close: {account.posted_minutes} minutes posted, "
            f"{account.held_out_minutes + account.held_in_minutes} held"
        )
    conn.execute(
        update(accounts)
        .where(accounts.c.id == account.id)
        .values(status=status, status_reason=reason, version=accounts.c.version + 1)
    )


def set_limits(
    conn: Connection, code: str, floor: int | None, ceiling: int | None, now: datetime
) -> None:
    """Change an account's limits; refused if the balance and holds would already be past them."""
    locked = _accounts.lock(conn, [code], now)
    account = locked[code]
    account.require_open()
    if floor is not None and account.posted_minutes - account.held_out_minutes < floor:
        raise errors.LimitExceededError(
            code,
            limit="floor",
            limit_minutes=floor,
            available_minutes=account.posted_minutes - account.held_out_minutes - floor,
            requested_minutes=0,
        )
    if ceiling is not None and account.posted_minutes + account.held_in_minutes > ceiling:
        raise errors.LimitExceededError(
            code,
            limit="ceiling",
            limit_minutes=ceiling,
            available_minutes=ceiling - account.posted_minutes - account.held_in_minutes,
            requested_minutes=0,
        )
    _accounts.write_back(conn, locked.values())
    conn.execute(
        update(accounts)
        .where(accounts.c.id == account.id)
        .values(floor_minutes=floor, ceiling_minutes=ceiling, version=accounts.c.version + 1)
    )
