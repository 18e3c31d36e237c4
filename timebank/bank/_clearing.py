"""Clearing between the stations and regions of one programme (通存通兑: deposit anywhere,
redeem anywhere).

Every redemption recorded which lots it used, and every lot where its minutes were earned,
so the minutes earned at unit X and redeemed at unit Y in a period are a sum over lot uses;
each redemption keeps that sum by origin site beside it (``tb_redemption_origins``), which
is what clearing reads.
Units are the sites, or the regions of one level of the tree: a site belongs to the deepest
region on its path whose level is the one asked for or coarser (a site directly under a
county is its county's at township level).

A settlement clears, at one level, every redemption dated before the period's end that no
earlier settlement at that level cleared, and lists each in ``tb_clearing_items``; a
redemption is cleared once per level. One recorded after its period was settled falls into
the next settlement, as late minutes. The net position of each pair of units is posted
between their clearing accounts, so the ledger holds every settled position.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Row, distinct, func, insert, literal, select, update

from timebank import errors
from timebank.bank._ctx import Act, code_of, one, programme_row
from timebank.bank._org import authorize, policy_at
from timebank.bank.models import (
    ClearingFlow,
    ClearingLevel,
    ClearingPosition,
    ClearingReport,
    SettlementView,
)
from timebank.bank.schema import (
    CLEARING_LEVELS,
    clearing_items,
    programmes,
    redemption_origins,
    redemptions,
    regions,
    settlement_lines,
    settlements,
    sites,
)
from timebank.models import AccountSpec

#: The calendar a period may span: policies apply from 1970 (``_org.BEGINNING``).
FIRST_DAY = date(1970, 1, 1)
LAST_DAY = date(9999, 1, 1)
#: (origin site id, redeeming site id) -> minutes.
SiteFlows = dict[tuple[int, int], int]


def units(conn: Connection, programme_id: int, level: str) -> dict[int, str]:
    """Site id -> the code of its unit at ``level``."""
    site_rows = conn.execute(
        select(sites.c.id, sites.c.code, sites.c.region_id).where(
            sites.c.programme_id == programme_id
        )
    ).all()
    if level == "site":
        return {row.id: row.code for row in site_rows}
    region_rows = {
        row.id: row
        for row in conn.execute(
            select(regions.c.id, regions.c.code, regions.c.level, regions.c.path).where(
                regions.c.programme_id == programme_id
            )
        )
    }
    # Levels run province (0) to township (3): "coarser or equal" is a smaller index.
    rank = CLEARING_LEVELS[:0:-1]  # province, city, county, township
    wanted = rank.index(level)
    mapping: dict[int, str] = {}
    for site in site_rows:
        path = [int(part) for part in region_rows[site.region_id].path.strip("/").split("/")]
        coarser = [r for r in path if rank.index(region_rows[r].level) <= wanted]
        # A tree whose root is finer than the level clears the whole programme as one unit.
        chosen = (coarser or path[:1])[-1]
        mapping[site.id] = region_rows[chosen].code
    return mapping


def period_bounds(
    conn: Connection, programme_id: int, start: date, end: date
) -> tuple[datetime, datetime]:
    """The instants that begin ``start`` and ``end`` in the programme's calendar."""
    if type(start) is not date or type(end) is not date:
        raise errors.InvalidInputError("a period's start and end are dates")
    if end <= start:
        raise errors.InvalidInputError(f"the period ends ({end}) after it starts ({start})")
    if start < FIRST_DAY or end > LAST_DAY:
        raise errors.InvalidInputError(
            f"a period lies between {FIRST_DAY} and {LAST_DAY}, the programme's calendar"
        )
    return _midnight(conn, programme_id, start), _midnight(conn, programme_id, end)


def _midnight(conn: Connection, programme_id: int, day: date) -> datetime:
    _, policy = policy_at(conn, programme_id, datetime.combine(day, time(12), UTC))
    local = datetime.combine(day, time(0), ZoneInfo(policy.timezone))
    return local.astimezone(UTC)


def site_flows(conn: Connection, *conditions: Any) -> tuple[SiteFlows, int]:
    """Minutes of the redemptions matching ``conditions`` (on ``redemption_origins``) by
    (origin site, redeeming site), and how many redemptions."""
    o = redemption_origins
    query = (
        select(o.c.origin_site_id, o.c.site_id, func.sum(o.c.minutes))
        .where(*conditions)
        .group_by(o.c.origin_site_id, o.c.site_id)
    )
    flows = {(origin, site): int(minutes) for origin, site, minutes in conn.execute(query)}
    count = conn.execute(select(func.count(distinct(o.c.entry_id))).where(*conditions))
    return flows, int(count.scalar_one())


def net_of_sites(
    conn: Connection, programme_id: int, site_ids: list[int], start_at: datetime, end_at: datetime
) -> int:
    """What the unit made of ``site_ids`` is owed (positive) or owes over the period, as the
    clearing report's ``net_of`` would say: minutes earned elsewhere and redeemed at its
    sites, less minutes earned at its sites and redeemed elsewhere. Reads only the flows
    into and out of those sites, not the programme's."""
    o = redemption_origins
    period = (o.c.programme_id == programme_id, *_in_period(start_at, end_at))
    owed = select(func.coalesce(func.sum(o.c.minutes), 0)).where(
        o.c.site_id.in_(site_ids), o.c.origin_site_id.not_in(site_ids), *period
    )
    owes = select(func.coalesce(func.sum(o.c.minutes), 0)).where(
        o.c.origin_site_id.in_(site_ids), o.c.site_id.not_in(site_ids), *period
    )
    return int(conn.execute(owed).scalar_one()) - int(conn.execute(owes).scalar_one())


def by_unit(flows: SiteFlows, unit_of: dict[int, str]) -> dict[tuple[str, str], int]:
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for (origin, site), minutes in flows.items():
        totals[unit_of[origin], unit_of[site]] += minutes
    return dict(totals)


def positions(gross: dict[tuple[str, str], int]) -> list[ClearingPosition]:
    """Net positions per pair of distinct units, largest first (then by name)."""
    pairs = {tuple(sorted(pair)) for pair in gross if pair[0] != pair[1]}
    net: list[ClearingPosition] = []
    for a, b in pairs:
        a_owes_b = gross.get((a, b), 0) - gross.get((b, a), 0)
        if a_owes_b:
            debtor, creditor = (a, b) if a_owes_b > 0 else (b, a)
            net.append(ClearingPosition(debtor=debtor, creditor=creditor, minutes=abs(a_owes_b)))
    return sorted(net, key=lambda p: (-p.minutes, p.debtor, p.creditor))


def _flow_views(gross: dict[tuple[str, str], int]) -> tuple[ClearingFlow, ...]:
    return tuple(
        ClearingFlow(origin=origin, redeemed_at=at, minutes=minutes)
        for (origin, at), minutes in sorted(gross.items())
    )


def _summary(gross: dict[tuple[str, str], int]) -> dict[str, Any]:
    return {
        "flows": _flow_views(gross),
        "positions": tuple(positions(gross)),
        "redeemed_minutes": sum(gross.values()),
        "local_minutes": sum(m for (origin, at), m in gross.items() if origin == at),
    }


def _in_period(start_at: datetime, end_at: datetime) -> tuple[Any, ...]:
    o = redemption_origins
    return (o.c.occurred_at >= start_at, o.c.occurred_at < end_at)


def _programme_period(programme_id: int, start_at: datetime, end_at: datetime) -> tuple[Any, ...]:
    return (redemption_origins.c.programme_id == programme_id, *_in_period(start_at, end_at))


def _cleared_by(settlement_id: int) -> Any:
    return redemption_origins.c.entry_id.in_(
        select(clearing_items.c.entry_id).where(clearing_items.c.settlement_id == settlement_id)
    )


# --- the report ------------------------------------------------------------------------------


def report(
    conn: Connection, programme_code: str, start: date, end: date, level: ClearingLevel
) -> ClearingReport:
    programme = programme_row(conn, programme_code)
    _check_level(level)
    start_at, end_at = period_bounds(conn, programme.id, start, end)
    unit_of = units(conn, programme.id, level)
    flows, count = site_flows(conn, *_programme_period(programme.id, start_at, end_at))
    gross = by_unit(flows, unit_of)
    settled = conn.execute(
        select(settlements.c.id).where(
            settlements.c.programme_id == programme.id,
            settlements.c.level == level,
            settlements.c.period_start == start,
            settlements.c.period_end == end,
        )
    ).scalar()
    carried = 0
    if settled is not None:
        cleared, _ = site_flows(
            conn, *_programme_period(programme.id, start_at, end_at), _cleared_by(settled)
        )
        carried = sum(flows.values()) - sum(cleared.values())
    return ClearingReport(
        programme=programme_code,
        level=level,
        start=start,
        end=end,
        redemptions=count,
        settlement_id=settled,
        carried_minutes=carried,
        **_summary(gross),
    )


def _check_level(level: str) -> None:
    if level not in CLEARING_LEVELS:
        raise errors.InvalidInputError(f"level {level!r}: one of {', '.join(CLEARING_LEVELS)}")


# --- settlement ------------------------------------------------------------------------------


def settle(  # noqa: PLR0917 - the settlement's own fields
    act: Act,
    programme_code: str,
    key: str,
    level: ClearingLevel,
    start: date,
    end: date,
    operator: str,
) -> int:
    """Settle the period at ``level``; returns the settlement id. The programme's row lock
    serialises settlements, so two never clear the same redemption."""
    programme = programme_row(act.conn, programme_code, lock=True)
    _check_level(level)
    authorize(act.conn, programme.id, operator, "administrator", region_admin=True)
    start_at, end_at = period_bounds(act.conn, programme.id, start, end)
    replay = act.conn.execute(
        select(settlements).where(settlements.c.idempotency_key == key)
    ).first()
    if replay is not None:
        _same(replay, key, {"programme": programme.id, "level": level, "start": start, "end": end})
        return int(replay.id)
    _check_order(act.conn, programme.id, level, start, end)
    if end_at > act.now:
        raise errors.PolicyViolationError(
            f"the period ends on {end}: it is settled once it has ended"
        )
    settlement_id: int = act.conn.execute(
        insert(settlements)
        .values(
            programme_id=programme.id,
            idempotency_key=key,
            level=level,
            period_start=start,
            period_end=end,
            cleared_minutes=0,
            late_minutes=0,
            settled_at=act.now,
            settled_by=operator,
        )
        .returning(settlements.c.id)
    ).scalar_one()
    _claim(act.conn, programme.id, level, settlement_id, end_at)
    # Sums are read from the claimed items, so a redemption committed meanwhile is either
    # claimed and counted, or neither.
    unit_of = units(act.conn, programme.id, level)
    flows, _ = site_flows(act.conn, _cleared_by(settlement_id))
    late, _ = site_flows(
        act.conn, _cleared_by(settlement_id), redemption_origins.c.occurred_at < start_at
    )
    gross = by_unit(flows, unit_of)
    posting = (settlement_id, level, operator, end_at)
    _post_positions(act, programme_code, posting, positions(gross))
    act.conn.execute(
        update(settlements)
        .where(settlements.c.id == settlement_id)
        .values(cleared_minutes=sum(flows.values()), late_minutes=sum(late.values()))
    )
    return settlement_id


def _same(row: Row[Any], key: str, wanted: dict[str, Any]) -> None:
    stored = {
        "programme": row.programme_id,
        "level": row.level,
        "start": row.period_start,
        "end": row.period_end,
    }
    fields = [name for name, value in wanted.items() if stored[name] != value]
    if fields:
        raise errors.IdempotencyConflictError(key, fields)


def _check_order(conn: Connection, programme_id: int, level: str, start: date, end: date) -> None:
    """Periods of one level are settled once each, in order, without gaps or overlaps."""
    same = conn.execute(
        select(settlements.c.idempotency_key).where(
            settlements.c.programme_id == programme_id,
            settlements.c.level == level,
            settlements.c.period_start == start,
        )
    ).scalar()
    if same is not None:
        raise errors.AlreadySettledError(level, f"the period from {start}", same)
    last = conn.execute(
        select(settlements.c.period_start, settlements.c.period_end)
        .where(settlements.c.programme_id == programme_id, settlements.c.level == level)
        .order_by(settlements.c.period_start.desc())
        .limit(1)
    ).first()
    if last is not None and start != last.period_end:
        raise errors.PolicyViolationError(
            f"the {level} clearing is settled up to {last.period_end}: the next period "
            f"starts on that day, not on {start}"
        )


def _claim(
    conn: Connection, programme_id: int, level: str, settlement_id: int, end_at: datetime
) -> None:
    """List as this settlement's every redemption dated before the period's end that no
    settlement at this level has cleared."""
    earlier = select(clearing_items.c.entry_id).where(clearing_items.c.level == level)
    uncleared = select(
        literal(level, clearing_items.c.level.type),
        redemptions.c.entry_id,
        literal(settlement_id, clearing_items.c.settlement_id.type),
    ).where(
        redemptions.c.programme_id == programme_id,
        redemptions.c.occurred_at < end_at,
        redemptions.c.entry_id.not_in(earlier),
    )
    conn.execute(
        insert(clearing_items).from_select(["level", "entry_id", "settlement_id"], uncleared)
    )


def clearing_account(programme_code: str, unit: str, level: str) -> str:
    return f"{programme_code}:{unit}:clr:{level}"


def _post_positions(
    act: Act,
    programme_code: str,
    posting: tuple[int, str, str, datetime],
    net: list[ClearingPosition],
) -> None:
    """One entry per net position, dated at the period's end, between clearing accounts
    (opened when first needed)."""
    settlement_id, level, operator, end_at = posting
    wanted = sorted({u for p in net for u in (p.debtor, p.creditor)})
    act.tx.open_accounts(
        [
            AccountSpec(
                code=clearing_account(programme_code, unit, level),
                type="clearing",
                floor_minutes=None,
            )
            for unit in wanted
        ]
    )
    for line, position in enumerate(net, start=1):
        entry = act.tx.transfer(
            f"settlement:{settlement_id}:{line}",
            debit=clearing_account(programme_code, position.debtor, level),
            credit=clearing_account(programme_code, position.creditor, level),
            amount_minutes=position.minutes,
            code="settlement",
            operator=operator,
            occurred_at=end_at,
            memo=f"{level} clearing: {position.debtor} owes {position.creditor}",
        )
        act.conn.execute(
            insert(settlement_lines).values(
                settlement_id=settlement_id,
                line=line,
                debtor=position.debtor,
                creditor=position.creditor,
                minutes=position.minutes,
                entry_id=entry.id,
            )
        )


def view(conn: Connection, settlement_id: int) -> SettlementView:
    row = one(
        conn,
        select(settlements).where(settlements.c.id == settlement_id),
        "settlement",
        settlement_id,
    )
    programme_code = code_of(conn, programmes, row.programme_id)
    start_at, _ = period_bounds(conn, row.programme_id, row.period_start, row.period_end)
    unit_of = units(conn, row.programme_id, row.level)
    flows, count = site_flows(conn, _cleared_by(row.id))
    late, _ = site_flows(conn, _cleared_by(row.id), redemption_origins.c.occurred_at < start_at)
    lines = conn.execute(
        select(settlement_lines)
        .where(settlement_lines.c.settlement_id == row.id)
        .order_by(settlement_lines.c.line)
    ).all()
    gross = by_unit(flows, unit_of)
    return SettlementView(
        id=row.id,
        programme=programme_code,
        level=row.level,
        start=row.period_start,
        end=row.period_end,
        idempotency_key=row.idempotency_key,
        flows=_flow_views(gross),
        positions=tuple(
            ClearingPosition(debtor=line.debtor, creditor=line.creditor, minutes=line.minutes)
            for line in lines
        ),
        redemptions=count,
        redeemed_minutes=row.cleared_minutes,
        local_minutes=sum(m for (origin, at), m in gross.items() if origin == at),
        late_minutes=row.late_minutes,
        late_flows=_flow_views(by_unit(late, unit_of)),
        settled_at=row.settled_at,
        settled_by=row.settled_by,
        entry_ids=tuple(line.entry_id for line in lines),
    )


def find(conn: Connection, programme_code: str, level: str, start: date) -> int:
    programme = programme_row(conn, programme_code)
    found = conn.execute(
        select(settlements.c.id).where(
            settlements.c.programme_id == programme.id,
            settlements.c.level == level,
            settlements.c.period_start == start,
        )
    ).scalar()
    if found is None:
        raise errors.BankObjectNotFoundError("settlement", f"{level} from {start}")
    return int(found)
