"""Expiry: lots past their expiry day give their remaining minutes up, to the programme's
expired account or to a region's pool, as the policy says. A lot expires at the start of its
``expires_on`` day (programme calendar). Running the sweep again posts nothing new: expired
lots have nothing left."""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from typing import Any

from sqlalchemy import Row, select, update

from timebank import errors
from timebank.bank import _lots, _pools
from timebank.bank._bookings import held_minutes
from timebank.bank._ctx import Act, account_code, programme_row
from timebank.bank._org import actor, policy_at
from timebank.bank.limits import SERVICES_PER_SWEEP_MAX
from timebank.bank.schema import is_open, lots, members, regions, sites

#: Lots one ``expire`` call may expire.
LOTS_PER_SWEEP_MAX = SERVICES_PER_SWEEP_MAX * 10


def expire(act: Act, programme_code: str, as_of: datetime, operator: str) -> int:
    """Expire the lots due by ``as_of`` of members under the operator's region (an
    administrator's). Frozen and deceased members' lots wait, and so do minutes a live
    booking holds. Returns how many lots expired in full."""
    if as_of > act.now:
        raise errors.InvalidInputError("expire looks back, not ahead: as_of is in the future")
    programme = programme_row(act.conn, programme_code)
    who = actor(act.conn, programme.id, operator)
    if "auditor" in who.roles or "administrator" not in who.roles or who.region_path is None:
        raise errors.PermissionDeniedError(
            f"operator {operator!r} may not expire lots: region administrators only"
        )
    _, policy = policy_at(act.conn, programme.id, as_of)
    today = policy.local_date(as_of)
    candidates = act.conn.execute(
        select(lots.c.member_id, regions.c.id.label("region_id"))
        .join(members, members.c.id == lots.c.member_id)
        .join(sites, sites.c.id == members.c.home_site_id)
        .join(regions, regions.c.id == sites.c.region_id)
        .where(
            members.c.programme_id == programme.id,
            members.c.status == "active",
            regions.c.path.startswith(who.region_path),
            is_open(lots),
            lots.c.expires_on <= today,
        )
        .group_by(lots.c.member_id, regions.c.id)
        .order_by(lots.c.member_id)
        .limit(LOTS_PER_SWEEP_MAX)
    ).all()
    expired, budget = 0, LOTS_PER_SWEEP_MAX
    for member_id, region_id in candidates:
        rows = _due_lots(act, member_id, today, budget)
        if not rows:
            continue  # a writer got there first, or the member is no longer active
        budget -= len(rows)
        pool = _lots.Destination(_lots.POOL, region_id)
        to = programme.expired_account_id if policy.expired_to == "programme" else pool
        expired += _expire_member(act, rows, to, operator, as_of)
        if budget <= 0:
            break
    return expired


def _due_lots(act: Act, member_id: int, today: date, limit: int) -> list[Row[Any]]:
    """The member's due lots, read again under the member's row lock (every writer that
    takes minutes from a member holds it) and locked themselves, oldest first."""
    status = act.conn.execute(
        select(members.c.status).where(members.c.id == member_id).with_for_update()
    ).scalar_one()
    if status != "active":
        return []
    rows: list[Row[Any]] = act.conn.execute(
        select(lots.c.id, lots.c.member_id, lots.c.remaining_minutes)
        .where(
            lots.c.member_id == member_id,
            is_open(lots),
            lots.c.expires_on <= today,
        )
        .order_by(lots.c.earned_on, lots.c.id)
        .limit(limit)
        .with_for_update()
    ).all()  # type: ignore[assignment]
    return rows


def _expire_member(
    act: Act,
    due: list[Row[Any]],
    to: int | _lots.Destination,
    operator: str,
    as_of: datetime,
) -> int:
    """Expire the member's due lots, oldest first, except the minutes a live booking holds:
    those stay until the booking resolves, and a later sweep takes what is left. Returns how
    many lots were fully expired."""
    first = due[0]
    account_id = act.conn.execute(
        select(members.c.account_id).where(members.c.id == first.member_id)
    ).scalar_one()
    code = account_code(act.conn, account_id)
    free = act.tx.balance(code).posted_minutes - held_minutes(act.conn, account_id, act.now)
    taken: list[tuple[Row[Any], int]] = []
    for row in due:
        part = min(row.remaining_minutes, free)
        if part <= 0:
            break
        taken.append((row, part))
        free -= part
    if not taken:
        return 0
    # Unique per sweep: the pairs (lot, minutes left) of a member's due lots never come
    # back once a sweep has taken minutes from one of them (minutes left only go down).
    digest = hashlib.sha256(
        ",".join(f"{row.id}:{row.remaining_minutes}" for row in due).encode()
    ).hexdigest()[:32]
    destination = (
        account_code(act.conn, to)
        if isinstance(to, int)
        else _pools.pool_code(act.conn, to.owner_id)
    )
    entry = act.tx.transfer(
        f"expiry-m{first.member_id}-{digest}",
        debit=code,
        credit=destination,
        amount_minutes=sum(part for _, part in taken),
        code="expiry",
        operator=operator,
        occurred_at=as_of,
        memo=f"{len(taken)} lot(s) past their expiry day",
    )
    _lots.record_uses(act.conn, entry.id, [(row.id, part) for row, part in taken])
    for row, part in taken:
        act.conn.execute(
            update(lots)
            .where(lots.c.id == row.id)
            .values(remaining_minutes=lots.c.remaining_minutes - part)
        )
        if not isinstance(to, int):
            lot = act.conn.execute(select(lots).where(lots.c.id == row.id)).one()
            _lots.arrive(act.conn, to, part, lot, entry.id)
    return sum(1 for row, part in taken if part == row.remaining_minutes)
