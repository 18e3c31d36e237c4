"""Expiry: lots past their expiry day give their remaining minutes up, to the programme's
expired account or to a region's pool, as the policy says. A lot expires at the start of its
``expires_on`` day (programme calendar). Running the sweep again posts nothing new: expired
lots have nothing left."""

from __future__ import annotations

from datetime import datetime
from itertools import groupby
from typing import Any

from sqlalchemy import Row, insert, select, update

from timebank import errors
from timebank.bank._ctx import Act, account_code, programme_row
from timebank.bank._org import actor, policy_at
from timebank.bank.limits import SERVICES_PER_SWEEP_MAX
from timebank.bank.schema import lot_uses, lots, members, regions, sites

#: Lots one ``expire`` call may expire.
LOTS_PER_SWEEP_MAX = SERVICES_PER_SWEEP_MAX * 10


def expire(act: Act, programme_code: str, as_of: datetime, operator: str) -> int:
    """Expire the lots due by ``as_of`` of members under the operator's region (an
    administrator's). Frozen and deceased members' lots wait. Returns how many lots."""
    if as_of > act.now:
        raise errors.InvalidInputError("expire looks back, not ahead: as_of is in the future")
    programme = programme_row(act.conn, programme_code)
    who = actor(act.conn, programme.id, operator)
    if "auditor" in who.roles or "administrator" not in who.roles or who.region_path is None:
        raise errors.PermissionDeniedError(
            f"operator {operator!r} may not expire lots: region administrators only"
        )
    _, policy = policy_at(act.conn, programme.id, as_of)
    due: list[Row[Any]] = act.conn.execute(
        select(
            lots.c.id,
            lots.c.member_id,
            lots.c.remaining_minutes,
            members.c.account_id,
            regions.c.pool_account_id,
        )
        .join(members, members.c.id == lots.c.member_id)
        .join(sites, sites.c.id == members.c.home_site_id)
        .join(regions, regions.c.id == sites.c.region_id)
        .where(
            members.c.programme_id == programme.id,
            members.c.status == "active",
            regions.c.path.startswith(who.region_path),
            lots.c.remaining_minutes > 0,
            lots.c.expires_on <= policy.local_date(as_of),
        )
        .order_by(lots.c.member_id, lots.c.earned_on, lots.c.id)
        .limit(LOTS_PER_SWEEP_MAX)
    ).all()  # type: ignore[assignment]
    for _member_id, member_lots in groupby(due, key=lambda row: row.member_id):
        _expire_member(
            act, list(member_lots), policy.expired_to, programme.expired_account_id, operator, as_of
        )
    return len(due)


def _expire_member(  # noqa: PLR0917 - the lots, where they go, and who says so
    act: Act,
    due: list[Row[Any]],
    expired_to: str,
    expired_account_id: int,
    operator: str,
    as_of: datetime,
) -> None:
    first = due[0]
    destination = expired_account_id if expired_to == "programme" else first.pool_account_id
    entry = act.tx.transfer(
        f"expiry-m{first.member_id}-l{first.id}-{due[-1].id}",
        debit=account_code(act.conn, first.account_id),
        credit=account_code(act.conn, destination),
        amount_minutes=sum(row.remaining_minutes for row in due),
        code="expiry",
        operator=operator,
        occurred_at=as_of,
        memo=f"{len(due)} lot(s) past their expiry day",
    )
    act.conn.execute(
        insert(lot_uses),
        [{"entry_id": entry.id, "lot_id": row.id, "minutes": row.remaining_minutes} for row in due],
    )
    act.conn.execute(
        update(lots).where(lots.c.id.in_([row.id for row in due])).values(remaining_minutes=0)
    )
