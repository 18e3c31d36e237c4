"""Lots: minutes credited together, consumed first in, first out.

Consumption order (documented, and the only one): the lot earned first goes first; lots
earned the same day go in the order they were created (lot id). A member's balance on the
ledger always equals the sum of the remaining minutes of their lots. ``earned_on`` and
``expires_on`` are days of the programme's calendar (``Policy.timezone``).
"""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import Connection, func, insert, select, update

from timebank import errors
from timebank.bank.schema import lot_uses, lots


def create(
    conn: Connection,
    *,
    member_id: int,
    minutes: int,
    origin_site_id: int,
    earned_on: date,
    expiry_days: int | None,
    source_entry_id: int,
    parent_lot_id: int | None = None,
    expires_on: date | None = None,
) -> int:
    if expires_on is None and expiry_days is not None:
        expires_on = earned_on + timedelta(days=expiry_days)
    lot_id: int = conn.execute(
        insert(lots)
        .values(
            member_id=member_id,
            minutes=minutes,
            remaining_minutes=minutes,
            origin_site_id=origin_site_id,
            earned_on=earned_on,
            expires_on=expires_on,
            source_entry_id=source_entry_id,
            parent_lot_id=parent_lot_id,
        )
        .returning(lots.c.id)
    ).scalar_one()
    return lot_id


def consume(
    conn: Connection, member_id: int, minutes: int, *, first_lot_id: int | None = None
) -> list[tuple[int, int]]:
    """Take ``minutes`` from the member's open lots, ``first_lot_id`` first (a reversal takes
    back the lot its deposit made), then first in, first out. Returns (lot id, minutes
    taken) pairs. The caller holds the member's account lock, so no one else consumes."""
    query = (
        select(lots.c.id, lots.c.remaining_minutes)
        .where(lots.c.member_id == member_id, lots.c.remaining_minutes > 0)
        .order_by(lots.c.earned_on, lots.c.id)
        .with_for_update()
    )
    open_lots = list(conn.execute(query))
    if first_lot_id is not None:
        open_lots.sort(key=lambda lot: lot.id != first_lot_id)  # stable: FIFO otherwise
    taken: list[tuple[int, int]] = []
    left = minutes
    for lot in open_lots:
        if left == 0:
            break
        part = min(left, lot.remaining_minutes)
        taken.append((lot.id, part))
        left -= part
    if left:
        # The ledger's floor refuses this before we get here; lots and ledger disagree.
        raise errors.IntegrityViolationError(
            f"member {member_id}'s lots hold {minutes - left} of the {minutes} minutes taken"
        )
    for lot_id, part in taken:
        conn.execute(
            update(lots)
            .where(lots.c.id == lot_id)
            .values(remaining_minutes=lots.c.remaining_minutes - part)
        )
    return taken


def open_total(conn: Connection, member_id: int) -> int:
    total = conn.execute(
        select(func.coalesce(func.sum(lots.c.remaining_minutes), 0)).where(
            lots.c.member_id == member_id
        )
    ).scalar_one()
    return int(total)


def used_by(conn: Connection, entry_id: int) -> tuple[tuple[int, int], ...]:
    """(lot id, minutes) that the entry took, by lot id."""
    rows = conn.execute(
        select(lot_uses.c.lot_id, lot_uses.c.minutes)
        .where(lot_uses.c.entry_id == entry_id)
        .order_by(lot_uses.c.lot_id)
    )
    return tuple((lot, minutes) for lot, minutes in rows)
