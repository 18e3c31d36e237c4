"""How the reports reach history (issue 10): every statement a station's or a region's
report, a clearing report, a member's statement or an exposure runs is planned as index
searches, never a read of a whole history table. On SQLite, whose plans depend on the schema
and the query alone (the library never runs ANALYZE there), so the test is deterministic; the
scale run (`benchmarks/bank_scale.py`) reports the same for PostgreSQL at 10 million postings.

Not covered, because they read whole tables by design: ``inactive_members`` (every active
member's latest service) and ``demographics`` (the people of a period, then their ages).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from tests.bankworld import PROGRAMME, World, fresh
from tests.clocks import Clock
from tests.simledger import REDEEMERS, local_day, simulate
from timebank.bank.models import ClearingLevel
from timebank.bank.schema import is_open, lots, regions, services
from timebank.schema import postings
from timebank.testing.plans import query_plans

#: The tables that grow with history (and the members, with the programme).
HISTORY = ("tb_entries", "tb_postings", "tb_services", "tb_service_recipients",
           "tb_redemptions", "tb_lots", "tb_lot_uses", "tb_redemption_origins", "tb_members")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    path = tmp_path_factory.mktemp("plans") / "plans.db"
    w = fresh(f"sqlite:///{path}", Clock())
    try:
        simulate(w, 11, 120)
        yield w
    finally:
        w.bank.dispose()


def plans(world: World, action: Callable[[], object]) -> list[tuple[str, str]]:
    """Run ``action``; return each SELECT it ran with its plan (SQLite's EXPLAIN QUERY PLAN)."""
    found = query_plans(world.engine, action)
    assert found, "the action ran no SELECT: nothing was checked"
    return [(p.statement, p.plan) for p in found]


def whole_reads(world: World, action: Callable[[], object]) -> dict[str, list[str]]:
    """Run ``action``; return, per history table some statement of it reads whole or
    unbounded, the plans that do (SQLite: ``SCAN t``, with or without an index, reads every
    row of t; ``SEARCH t`` reads a range, which must be bounded: :func:`_unbounded`)."""
    found: dict[str, list[str]] = {}
    for statement, plan in plans(world, action):
        for table in HISTORY:
            if re.search(rf"\bSCAN {table}\b", plan) or _unbounded(table, plan):
                found.setdefault(table, []).append(f"{statement[:200]}\n{plan}")
    return found


#: Keys that find one row, or the few rows of one entry, service or lot.
ROW_KEYS = ("rowid", "id", "entry_id", "deposit_entry_id", "service_id", "lot_id")

#: Partial indexes of what is open now (migration 0013): their rows are a member's or a
#: pool's lots with minutes left, not its history.
OPEN_INDEXES = ("ix_tb_lots_open_member_id_earned_on", "ix_tb_pool_lots_open_region_id_earned_on")


def _unbounded(table: str, plan: str) -> bool:
    """Whether some ``SEARCH table`` of the plan is bounded neither by a range (of time,
    say) nor by a key of a few rows: ``(site_id=?)`` alone reads all of a site's history.
    (A station's members are what its report is about: tb_members is only checked for
    whole reads. A range open at one end passes: the running-balance probe is one, and
    reads a single row from its end, but a plan does not show the LIMIT. A partial index
    of open lots holds what is open now, not history.)"""
    if table == "tb_members":
        return False
    for index, conditions in re.findall(rf"\bSEARCH {table} USING (.*?) \((.*)\)", plan):
        if index.split()[-1] in OPEN_INDEXES:
            continue
        if "<" in conditions or ">" in conditions:
            continue
        if any(re.search(rf"\b{key}=\?", conditions) for key in ROW_KEYS):
            continue
        return True
    return False


def period(world: World) -> tuple[date, date]:
    """From the first of the clock's month to the end of its day (never empty)."""
    today = local_day(world.clock.now)
    return date(today.year, today.month, 1), today + timedelta(days=1)


REPORTS: dict[str, Callable[[World, date, date], object]] = {
    "station": lambda w, s, e: w.bank.station_report(PROGRAMME, "xinyuan-sw", start=s, end=e),
    "institution": lambda w, s, e: w.bank.station_report(PROGRAMME, "sunrise", start=s, end=e),
    "county": lambda w, s, e: w.bank.region_report(PROGRAMME, "anci", start=s, end=e),
    "city": lambda w, s, e: w.bank.region_report(PROGRAMME, "langfang-city", start=s, end=e),
    "clearing by site": lambda w, s, e: w.bank.clearing(PROGRAMME, start=s, end=e, level="site"),
    "clearing by county": lambda w, s, e: w.bank.clearing(PROGRAMME, start=s, end=e,
                                                          level="county"),
    "member statement": lambda w, s, e: w.bank.member_statement(
        w.members["wang"], start=s, end=e),
    "exposure of a county": lambda w, s, e: w.bank.guarantee_exposure(
        PROGRAMME, region="anci", at=e),
}


@pytest.mark.parametrize("report", sorted(REPORTS))
def test_reports_reach_history_through_index_searches(world: World, report: str) -> None:
    start, end = period(world)
    assert whole_reads(world, lambda: REPORTS[report](world, start, end)) == {}


@pytest.mark.parametrize("level", ["site", "county"])
def test_the_clearing_reads_its_rows_from_indexes_alone(world: World, level: ClearingLevel
                                                        ) -> None:
    """The clearing's flows and its count of redemptions are covering-index ranges of the
    clearing rows: no row of the table is visited (the count once visited each row of the
    period for its entry id, until migration 0015 put the id in the index)."""
    start, end = period(world)
    reads = [plan for _, plan in plans(
        world, lambda: world.bank.clearing(PROGRAMME, start=start, end=end, level=level))
        if "tb_redemption_origins" in plan]
    assert len(reads) == 2, reads  # the flows and the count
    for plan in reads:
        for line in plan.splitlines():
            if "tb_redemption_origins" in line:
                assert "SEARCH tb_redemption_origins USING COVERING INDEX" in line, plan


def test_the_check_sees_whole_and_unbounded_reads(world: World) -> None:
    """The check is not blind: a sum of every posting, and the services of a site with no
    bound of time, are both caught."""

    def read_all() -> None:
        with world.engine.connect() as conn:
            conn.execute(select(func.sum(postings.c.amount_minutes)))
            conn.execute(select(func.count()).where(services.c.site_id == 1))

    assert set(whole_reads(world, read_all)) == {"tb_postings", "tb_services"}


def test_the_check_tells_open_lots_from_all_of_a_members_lots(world: World) -> None:
    """A member's lots through the full index (every lot they ever had) are caught; their
    open lots through the partial index of open lots are not."""
    member = world.members["wang"]
    with world.engine.connect() as conn:
        every = select(lots.c.id).where(lots.c.member_id == member)
        assert set(whole_reads(world, lambda: conn.execute(every).all())) == {"tb_lots"}
        still_open = every.where(is_open(lots)).order_by(lots.c.earned_on, lots.c.id)
        assert whole_reads(world, lambda: conn.execute(still_open).all()) == {}


def test_first_in_first_out_reads_only_open_lots(world: World) -> None:
    """A redemption takes minutes from the member's open lots, found through the partial
    index of open lots: however many lots the member has spent, none is read."""
    def free(name: str) -> int:
        view = world.bank.member(world.members[name])
        return view.balance_minutes - view.held_minutes

    name = max(world.members, key=free)
    assert free(name) > 0, "the simulation left no member with minutes to spend"

    def redeem() -> object:
        return world.bank.redeem(
            "plans-fifo", programme=PROGRAMME, member_id=world.members[name], site="sunrise",
            service_type="shopping", minutes=1, operator=REDEEMERS["sunrise"])

    reads = whole_reads(world, redeem)
    assert "tb_lots" not in reads, reads["tb_lots"]


def test_a_scopes_clearing_position_is_the_clearings_net_of_it(world: World) -> None:
    """A station's or a region's report reads only the flows into and out of its own sites;
    its position is still what the programme's clearing at its level nets for it, for every
    site and every region, in a month and over the whole simulated history."""
    today = local_day(world.clock.now)
    periods = [period(world), (today - timedelta(days=400), today + timedelta(days=1))]
    with world.engine.connect() as conn:
        rows = conn.execute(select(regions.c.code, regions.c.level)).all()
    levels: dict[str, ClearingLevel] = {row.code: row.level for row in rows}
    checked = 0
    for start, end in periods:
        by_site = world.bank.clearing(PROGRAMME, start=start, end=end, level="site")
        for site in world.bank.sites(PROGRAMME):
            report = world.bank.station_report(PROGRAMME, site.code, start=start, end=end)
            assert report.clearing_net_minutes == by_site.net_of(site.code), site.code
            checked += report.clearing_net_minutes != 0
        for code, level in levels.items():
            cleared = world.bank.clearing(PROGRAMME, start=start, end=end, level=level)
            report = world.bank.region_report(PROGRAMME, code, start=start, end=end)
            assert report.clearing_net_minutes == cleared.net_of(code), code
            checked += report.clearing_net_minutes != 0
    assert checked >= 4, "the simulation cleared too little between units to compare"
