"""Statements and reports, read from the ledger.

The period of a report is [start, end), days of the programme's calendar, and an entry
belongs to it when it was *recorded* in it: the basis of the guarantee exposure, so a
report's liability at the end is its liability at the start plus its movements, exactly.
Services count where they were done (the site), redemptions where they were redeemed; the
members of a station or region are those whose home station is in it.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, case, distinct, func, select, union

from timebank._db import in_listed
from timebank._reads import posted_minutes_at
from timebank.bank import _bookings, _clearing, _exposure
from timebank.bank._ctx import account_code, code_of, programme_row
from timebank.bank._org import region_row, site_row
from timebank.bank._people import member_row
from timebank.bank.models import LotView, age_on
from timebank.bank.report_models import (
    ActivityReport,
    DemographicRow,
    Demographics,
    ExpiryLine,
    ExposureRow,
    HoldLine,
    InactiveMember,
    MemberStatement,
    Movements,
    StatementEntry,
)
from timebank.bank.schema import (
    is_open,
    lots,
    members,
    personal,
    programmes,
    redemptions,
    regions,
    service_recipients,
    services,
    sites,
)
from timebank.schema import accounts, entries, holds, postings

_JUST_BEFORE = timedelta(microseconds=1)


# --- a member's statement ------------------------------------------------------------------------


def member_statement(
    conn: Connection, member_id: int, start: date, end: date, now: datetime
) -> MemberStatement:
    member = member_row(conn, member_id)
    start_at, end_at = _clearing.period_bounds(conn, member.programme_id, start, end)
    account = member.account_id
    opening = posted_minutes_at(conn, account, start_at - _JUST_BEFORE)
    rows = conn.execute(
        select(
            entries.c.id,
            entries.c.code,
            entries.c.occurred_at,
            entries.c.memo,
            postings.c.recorded_at,
            postings.c.amount_minutes,
            postings.c.balance_after_minutes,
        )
        .join(entries, entries.c.id == postings.c.entry_id)
        .where(
            postings.c.account_id == account,
            postings.c.recorded_at >= start_at,
            postings.c.recorded_at < end_at,
        )
        .order_by(postings.c.entry_id)
    ).all()
    lines = tuple(
        StatementEntry(
            entry_id=row.id,
            code=row.code,
            occurred_at=row.occurred_at,
            recorded_at=row.recorded_at,
            memo=row.memo,
            amount_minutes=row.amount_minutes,
            balance_after_minutes=row.balance_after_minutes,
        )
        for row in rows
    )
    credited = sum(line.amount_minutes for line in lines if line.amount_minutes > 0)
    debited = -sum(line.amount_minutes for line in lines if line.amount_minutes < 0)
    open_lots = _open_lots(conn, member_id)
    hold_lines = _holds(conn, account, now)
    return MemberStatement(
        member_id=member_id,
        programme=code_of(conn, programmes, member.programme_id),
        account=account_code(conn, account),
        start=start,
        end=end,
        opening_balance_minutes=opening,
        closing_balance_minutes=opening + credited - debited,
        credited_minutes=credited,
        debited_minutes=debited,
        entries=lines,
        open_lots=open_lots,
        expiry_schedule=_schedule(open_lots),
        holds=hold_lines,
        held_minutes=_bookings.held_minutes(conn, account, now),
    )


def _open_lots(conn: Connection, member_id: int) -> tuple[LotView, ...]:
    rows = conn.execute(
        select(lots, sites.c.code.label("site_code"))
        .join(sites, sites.c.id == lots.c.origin_site_id)
        .where(lots.c.member_id == member_id, is_open(lots))
        .order_by(lots.c.earned_on, lots.c.id)
    ).all()
    return tuple(
        LotView(
            id=row.id,
            member_id=row.member_id,
            minutes=row.minutes,
            remaining_minutes=row.remaining_minutes,
            origin_site=row.site_code,
            earned_on=row.earned_on,
            expires_on=row.expires_on,
            source_entry_id=row.source_entry_id,
        )
        for row in rows
    )


def _schedule(open_lots: tuple[LotView, ...]) -> tuple[ExpiryLine, ...]:
    by_day: dict[date | None, int] = defaultdict(int)
    for lot in open_lots:
        by_day[lot.expires_on] += lot.remaining_minutes
    # Days in order; minutes that never expire last.
    ordered = sorted(by_day, key=lambda day: (day is None, day or date.min))
    return tuple(ExpiryLine(expires_on=day, minutes=by_day[day]) for day in ordered)


def _holds(conn: Connection, account_id: int, now: datetime) -> tuple[HoldLine, ...]:
    rows = conn.execute(
        select(holds.c.id, holds.c.amount_minutes, holds.c.expires_at, holds.c.memo)
        .where(
            holds.c.debit_account_id == account_id,
            holds.c.status == "pending",
            holds.c.expires_at > now,
        )
        .order_by(holds.c.id)
    ).all()
    return tuple(
        HoldLine(hold_id=r.id, minutes=r.amount_minutes, expires_at=r.expires_at, memo=r.memo)
        for r in rows
    )


# --- station and region reports ------------------------------------------------------------------


class _Scope:
    """The sites, the members' accounts and (for a region) the pools a report covers."""

    def __init__(self, conn: Connection, programme_id: int, kind: str, code: str) -> None:
        self.kind = kind
        if kind == "site":
            site = site_row(conn, programme_id, code)
            self.code = site.code
            self.sites: Any = select(sites.c.id).where(sites.c.id == site.id)
            self.pools: Any = None
        else:
            region = region_row(conn, programme_id, code)
            self.code = region.code
            under = (
                select(regions.c.id)
                .where(
                    regions.c.programme_id == programme_id,
                    regions.c.path.startswith(region.path),
                )
                .scalar_subquery()
            )
            self.sites = select(sites.c.id).where(sites.c.region_id.in_(under))
            self.pools = select(regions.c.pool_account_id).where(regions.c.id.in_(under))
        self.member_accounts: Any = select(members.c.account_id).where(
            members.c.home_site_id.in_(self.sites)
        )
        # Every deposit at a site posts to its issued account, every redemption there to its
        # redeemed account: the index on (account, recorded_at) finds a period's entries.
        self.issued_accounts: Any = select(sites.c.issued_account_id).where(
            sites.c.id.in_(self.sites)
        )
        self.redeemed_accounts: Any = select(sites.c.redeemed_account_id).where(
            sites.c.id.in_(self.sites)
        )

    @property
    def liability_accounts(self) -> Any:
        if self.pools is None:
            return self.member_accounts
        return union(self.member_accounts, self.pools)


def activity(
    conn: Connection, programme_code: str, *, kind: str, code: str, start: date, end: date
) -> ActivityReport:
    programme = programme_row(conn, programme_code)
    start_at, end_at = _clearing.period_bounds(conn, programme.id, start, end)
    scope = _Scope(conn, programme.id, kind, code)
    recorded = conn.execute(
        select(func.count()).where(
            services.c.site_id.in_(scope.sites),
            services.c.recorded_at >= start_at,
            services.c.recorded_at < end_at,
        )
    ).scalar_one()
    confirmed = _confirmed(scope, start_at, end_at)
    done = conn.execute(
        select(
            func.count(),
            func.count(distinct(confirmed.c.volunteer_id)),
            func.coalesce(func.sum(confirmed.c.credited_minutes), 0),
        )
    ).one()
    served = conn.execute(
        select(func.count(distinct(service_recipients.c.member_id))).where(
            service_recipients.c.service_id.in_(select(confirmed.c.id))
        )
    ).scalar_one()
    redeemed = conn.execute(
        select(func.coalesce(func.sum(redemptions.c.minutes), 0))
        .join(postings, postings.c.entry_id == redemptions.c.entry_id)
        .where(
            *_posted_in(postings.c.account_id.in_(scope.redeemed_accounts), start_at, end_at)
        )
    ).scalar_one()
    stations = select(sites.c.id).where(sites.c.id.in_(scope.sites), sites.c.kind != "institution")
    stations_total = conn.execute(select(func.count()).select_from(stations.subquery()))
    active = conn.execute(
        select(func.count(distinct(confirmed.c.site_id))).where(confirmed.c.site_id.in_(stations))
    )
    flows = _flows(conn, scope.member_accounts, start_at, end_at)
    movements = _net(flows)
    if scope.pools is not None:
        for code_, minutes in _net(_flows(conn, scope.pools, start_at, end_at)).items():
            movements[code_] = movements.get(code_, 0) + minutes
    site_ids = list(conn.execute(scope.sites).scalars())
    cleared = _clearing.net_of_sites(conn, programme.id, site_ids, start_at, end_at)
    opening, _ = _exposure.account_sums(conn, scope.liability_accounts, start_at - _JUST_BEFORE)
    closing, _ = _exposure.account_sums(conn, scope.liability_accounts, end_at - _JUST_BEFORE)
    return ActivityReport(
        programme=programme_code,
        scope=kind,
        code=scope.code,
        start=start,
        end=end,
        services_recorded=int(recorded),
        services_confirmed=int(done[0]),
        volunteers=int(done[1]),
        people_served=int(served),
        deposited_minutes=int(done[2]),
        redeemed_minutes=int(redeemed),
        given_minutes=-flows["gift"][1],
        received_as_gifts_minutes=flows["gift"][0],
        donated_minutes=-flows["donation"][1],
        granted_minutes=flows["grant"][0],
        expired_minutes=-flows["expiry"][1],
        opening_liability_minutes=opening,
        closing_liability_minutes=closing,
        clearing_net_minutes=cleared,
        movements=Movements(by_code={k: v for k, v in sorted(movements.items()) if v}),
        stations_total=int(stations_total.scalar_one()),
        stations_active=int(active.scalar_one()),
    )


def _confirmed(scope: _Scope, start_at: datetime, end_at: datetime) -> Any:
    """Services at the sites in scope whose deposit was recorded in the period."""
    return (
        select(
            services.c.id, services.c.volunteer_id, services.c.site_id, services.c.credited_minutes
        )
        .join(postings, postings.c.entry_id == services.c.deposit_entry_id)
        .where(*_posted_in(postings.c.account_id.in_(scope.issued_accounts), start_at, end_at))
        .subquery()
    )


def _posted_in(accounts: Any, start_at: datetime, end_at: datetime) -> tuple[Any, ...]:
    """Postings recorded in the period to ``accounts`` (a condition on the account): a
    range of the index on (account, recorded_at) per account. Joined on their entry, they
    find its row once (an entry posts to an account once)."""
    return (accounts, postings.c.recorded_at >= start_at, postings.c.recorded_at < end_at)


def _flows(
    conn: Connection, accounts: Any, start_at: datetime, end_at: datetime
) -> defaultdict[str, tuple[int, int]]:
    """Per entry code, the minutes that entered and (negative) left ``accounts`` in the
    period. The accounts are listed first (where a list goes as one parameter): seeing how
    many, the planner can weigh a probe of the index per account against a read of the
    period's postings, where a subquery leaves it guessing."""
    listed = in_listed(conn, postings.c.account_id, accounts)
    # Each posting's entry code by the entry's key, a probe per posting of the period: a
    # join would let the planner hash the whole journal when it misjudges how many postings
    # the listed accounts have (PostgreSQL did at 10 million postings).
    code = select(entries.c.code).where(entries.c.id == postings.c.entry_id).scalar_subquery()
    moved = (
        select(code.label("code"), postings.c.amount_minutes.label("minutes"))
        .where(*_posted_in(listed, start_at, end_at))
        .subquery()
    )
    minutes = moved.c.minutes
    rows = conn.execute(
        select(
            moved.c.code,
            func.coalesce(func.sum(case((minutes > 0, minutes))), 0),
            func.coalesce(func.sum(case((minutes < 0, minutes))), 0),
        ).group_by(moved.c.code)
    ).all()
    flows: defaultdict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))
    for code, inflow, outflow in rows:
        flows[code] = (int(inflow), int(outflow))
    return flows


def _net(flows: dict[str, tuple[int, int]]) -> dict[str, int]:
    return {code: inflow + outflow for code, (inflow, outflow) in flows.items()}


# --- people --------------------------------------------------------------------------------------


def inactive_members(
    conn: Connection,
    programme_code: str,
    *,
    region_code: str | None,
    as_of: datetime,
    months: int,
    limit: int,
) -> list[InactiveMember]:
    """Active members whose last activity (registration, a posting on their account, a
    service they recorded as volunteer) is more than ``months`` calendar months before
    ``as_of``, longest inactive first."""
    programme = programme_row(conn, programme_code)
    region = _region_or_root(conn, programme.id, region_code)
    cutoff = _months_before(as_of, months)
    last_service = (
        select(services.c.volunteer_id, func.max(services.c.recorded_at).label("at"))
        .group_by(services.c.volunteer_id)
        .subquery()
    )
    rows = conn.execute(
        select(
            members.c.id,
            members.c.status,
            members.c.registered_at,
            sites.c.code,
            # The account keeps its latest recording time: no read of its postings.
            accounts.c.last_recorded_at.label("posted_at"),
            last_service.c.at.label("served_at"),
        )
        .join(sites, sites.c.id == members.c.home_site_id)
        .join(regions, regions.c.id == sites.c.region_id)
        .join(accounts, accounts.c.id == members.c.account_id)
        .outerjoin(last_service, last_service.c.volunteer_id == members.c.id)
        .where(
            members.c.programme_id == programme.id,
            members.c.status == "active",
            regions.c.path.startswith(region.path),
        )
    ).all()
    found = []
    for row in rows:
        last = max(at for at in (row.registered_at, row.posted_at, row.served_at) if at)
        if last < cutoff:
            found.append((last, row))
    found.sort(key=lambda pair: (pair[0], pair[1].id))
    balances = _balances(conn, [row.id for _, row in found[:limit]])
    return [
        InactiveMember(
            member_id=row.id,
            home_site=row.code,
            status=row.status,
            last_activity_at=last,
            balance_minutes=balances[row.id],
        )
        for last, row in found[:limit]
    ]


def _balances(conn: Connection, member_ids: list[int]) -> dict[int, int]:
    rows = conn.execute(
        select(members.c.id, accounts.c.posted_minutes)
        .join(accounts, accounts.c.id == members.c.account_id)
        .where(members.c.id.in_(member_ids))
    )
    return {member_id: int(minutes) for member_id, minutes in rows}


def _months_before(moment: datetime, months: int) -> datetime:
    """The same day and time ``months`` calendar months earlier (the month's last day when
    it is shorter)."""
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    following = date(year + month // 12, month % 12 + 1, 1)
    last_day = (following - timedelta(days=1)).day
    return moment.replace(year=year, month=month, day=min(moment.day, last_day))


def _region_or_root(conn: Connection, programme_id: int, code: str | None) -> Row[Any]:
    if code is not None:
        return region_row(conn, programme_id, code)
    return conn.execute(
        select(regions).where(regions.c.programme_id == programme_id, regions.c.parent_id.is_(None))
    ).one()


def demographics(  # noqa: PLR0917 - the report's own parameters
    conn: Connection,
    programme_code: str,
    region_code: str | None,
    start: date,
    end: date,
    band_years: int,
) -> Demographics:
    programme = programme_row(conn, programme_code)
    region = _region_or_root(conn, programme.id, region_code)
    start_at, end_at = _clearing.period_bounds(conn, programme.id, start, end)
    in_period = (entries.c.recorded_at >= start_at, entries.c.recorded_at < end_at)
    served = (
        select(services.c.id)
        .join(entries, entries.c.id == services.c.deposit_entry_id)
        .where(services.c.programme_id == programme.id, *in_period)
    )
    volunteers = select(services.c.volunteer_id).where(services.c.id.in_(served))
    recipients = union(
        select(service_recipients.c.member_id).where(service_recipients.c.service_id.in_(served)),
        select(redemptions.c.recipient_id)
        .join(entries, entries.c.id == redemptions.c.entry_id)
        .where(redemptions.c.programme_id == programme.id, *in_period),
    )
    last_day = end - timedelta(days=1)
    rows: list[DemographicRow] = []
    for role, ids in (("volunteer", volunteers), ("recipient", recipients)):
        people = conn.execute(
            select(personal.c.birth_date, personal.c.sex)
            .join(members, members.c.id == personal.c.member_id)
            .join(sites, sites.c.id == members.c.home_site_id)
            .join(regions, regions.c.id == sites.c.region_id)
            .where(members.c.id.in_(ids), regions.c.path.startswith(region.path))
        ).all()
        counts: dict[tuple[int, str], int] = defaultdict(int)
        for person in people:
            band = age_on(person.birth_date, last_day) // band_years * band_years
            counts[band, person.sex or "unknown"] += 1
        rows.extend(
            DemographicRow(
                role=role,
                band_start=band,
                band_end=band + band_years - 1,
                sex=sex,
                people=n,
            )
            for (band, sex), n in sorted(counts.items())
        )
    return Demographics(
        programme=programme_code, region=region.code, start=start, end=end, rows=tuple(rows)
    )


def exposure_by_region(
    conn: Connection, programme_code: str, level: str, days: list[date]
) -> list[ExposureRow]:
    """The guarantee exposure of every region of ``level`` at the end of each day."""
    programme = programme_row(conn, programme_code)
    codes = conn.execute(
        select(regions.c.code)
        .where(regions.c.programme_id == programme.id, regions.c.level == level)
        .order_by(regions.c.code)
    ).scalars()
    table = []
    for code in codes:
        for day in days:
            view = _exposure.exposure(conn, programme_code, code, day)
            table.append(
                ExposureRow(
                    region=code,
                    level=level,
                    at=view.at,
                    member_minutes=view.member_minutes,
                    pool_minutes=view.pool_minutes,
                    total_minutes=view.total_minutes,
                )
            )
    return table
