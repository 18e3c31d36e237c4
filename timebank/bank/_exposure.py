"""Guarantee exposure: the minutes a programme owes, member and pool balances, as the ledger
recorded them at a moment. The guarantor (a city, a province) stands behind this figure."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, case, func, select

from timebank.bank._ctx import programme_row
from timebank.bank._org import policy_at, region_row
from timebank.bank.models import ExposureView
from timebank.bank.schema import members, regions, sites
from timebank.schema import postings


def exposure(
    conn: Connection, programme_code: str, region_code: str | None, at: datetime | date
) -> ExposureView:
    """Member and pool balances of the programme (or of the members living under a region,
    and that region's pools and its descendants') as recorded at ``at``; a date means the
    end of that day in the programme's calendar."""
    programme = programme_row(conn, programme_code)
    if region_code is None:
        region = conn.execute(
            select(regions).where(
                regions.c.programme_id == programme.id, regions.c.parent_id.is_(None)
            )
        ).one()
    else:
        region = region_row(conn, programme.id, region_code)
    moment = _moment(conn, programme.id, at)
    under = regions.c.path.startswith(region.path)
    member_accounts = (
        select(members.c.account_id)
        .join(sites, sites.c.id == members.c.home_site_id)
        .join(regions, regions.c.id == sites.c.region_id)
        .where(members.c.programme_id == programme.id, under)
    )
    pool_accounts = select(regions.c.pool_account_id).where(
        regions.c.programme_id == programme.id, under
    )
    member_minutes, holders = account_sums(conn, member_accounts, moment)
    pool_minutes, _ = account_sums(conn, pool_accounts, moment)
    return ExposureView(
        programme=programme_code,
        region=region.code,
        at=moment,
        member_minutes=member_minutes,
        pool_minutes=pool_minutes,
        total_minutes=member_minutes + pool_minutes,
        members_with_balance=holders,
    )


def _moment(conn: Connection, programme_id: int, at: datetime | date) -> datetime:
    """``at`` itself, or the last microsecond of the day ``at`` in the time zone of the
    policy in force then (found again if that policy's zone moves the day's end)."""
    if isinstance(at, datetime):
        return at
    moment = datetime.combine(at + timedelta(days=1), time(), ZoneInfo("UTC"))
    for _ in range(3):  # a zone, then the zone in force at that zone's end of day
        _, policy = policy_at(conn, programme_id, moment)
        next_day = datetime.combine(at + timedelta(days=1), time(), ZoneInfo(policy.timezone))
        end = next_day - timedelta(microseconds=1)
        if end == moment:
            break
        moment = end
    return moment


def account_sums(conn: Connection, account_ids: Any, moment: datetime) -> tuple[int, int]:
    """Total posted minutes of the accounts at ``moment``, and how many hold any.

    Each account's balance then is the running balance of its last posting recorded by
    ``moment``: one probe of the index (account, recorded_at, entry) per account, whatever
    the length of its history (per account, recording order is entry order, so that running
    balance is the sum of every posting up to it).
    """
    listed = account_ids.subquery()
    ids = select(next(iter(listed.c)).label("id")).distinct().subquery()  # each account once
    account_id = ids.c.id
    balance = (
        select(postings.c.balance_after_minutes)
        .where(postings.c.account_id == account_id, postings.c.recorded_at <= moment)
        .order_by(postings.c.recorded_at.desc(), postings.c.entry_id.desc())
        .limit(1)
        .scalar_subquery()
    )
    per_account = select(balance.label("minutes")).select_from(ids).subquery()
    total, holders = conn.execute(
        select(
            func.coalesce(func.sum(per_account.c.minutes), 0),
            func.coalesce(func.sum(case((per_account.c.minutes > 0, 1), else_=0)), 0),
        )
    ).one()
    return int(total), int(holders)
