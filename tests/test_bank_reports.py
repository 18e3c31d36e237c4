"""Statements and reports (the time bank, part 3): every total of a member's statement, a
station's and a region's report checked against the ledger's own sums on a seeded random
ledger; coverage, inactive members, people by age and sex, exposure by region, refusals and
rendering. On SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta

import pytest

from tests._databases import UrlFactory
from tests.bankworld import POLICY, PROGRAMME, World, fresh, refused
from tests.clocks import T0, Clock
from tests.simledger import LedgerFacts, Simulation, local_day, midnight, simulate
from timebank import BankObjectNotFoundError, InvalidInputError
from timebank.bank import ActivityReport, MemberView

_JUST_BEFORE = timedelta(microseconds=1)
REGIONS = ("hebei", "langfang-city", "guangyang", "xinyuan", "anci")
SITES = ("xinyuan-sw", "xinyuan-vol", "anci-sw", "sunrise")


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    w = fresh(db_url, Clock())
    try:
        yield w
    finally:
        w.bank.dispose()


def serve(world: World, key: str, volunteer: str, recipient: str, *, minutes: int = 60,
          site: str = "xinyuan-sw") -> int:
    """A service that ended ten minutes ago, recorded and confirmed at ``site`` now; then
    the clock moves on two hours (services of one volunteer never overlap)."""
    recorder, confirmer = {"xinyuan-sw": ("rec-sw", "conf-sw"),
                           "xinyuan-vol": ("rec-vol", "rec-vol"),
                           "anci-sw": ("rec-anci", "rec-anci")}[site]
    service = world.serve(key, volunteer, recipient, minutes=minutes, site=site,
                          operator=recorder, ago=timedelta(minutes=minutes + 10))
    world.bank.confirm_service(service, operator=confirmer)
    world.clock.advance(hours=2)
    return service


def utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


# --- 1. the reports against the ledger on a simulated ledger ------------------------------------

# Three seeds on SQLite; one on each server, with fewer operations (each a round trip).
SIMULATIONS = [
    pytest.param("sqlite", 1, 250, id="sqlite-seed1"),
    pytest.param("sqlite", 2, 250, id="sqlite-seed2"),
    pytest.param("sqlite", 3, 250, id="sqlite-seed3"),
    pytest.param("postgres", 4, 200, id="postgres-seed4", marks=pytest.mark.postgres),
    pytest.param("mariadb", 5, 200, id="mariadb-seed5", marks=pytest.mark.mariadb),
]


@pytest.mark.parametrize(("backend", "seed", "operations"), SIMULATIONS)
def test_each_reports_totals_equal_the_ledgers_sums_on_a_simulated_ledger(
    fresh_db_url_factory: UrlFactory, backend: str, seed: int, operations: int
) -> None:
    world = fresh(fresh_db_url_factory(backend), Clock())
    try:
        sim = simulate(world, seed, operations)
        # The run did a bit of everything, refusals included.
        for kind in ("confirm", "redeem", "give", "donate", "grant", "book", "complete",
                     "expire", "reverse", "register", "estate"):
            assert sim.outcomes[kind] > 0, (kind, sim.outcomes)
        assert any("refused" in kind for kind in sim.outcomes), sim.outcomes
        facts = LedgerFacts(world.engine)
        assert {p.code for p in facts.postings} >= {
            "deposit", "redemption", "gift", "donation", "grant", "expiry", "reversal", "booking",
            "estate"}
        pools = {r.pool_account_id for r in facts.regions.values()}
        assert any(p.code == "deposit" and p.account_id in pools for p in facts.postings), (
            "some excess over the storage cap went to a pool")
        first, last = local_day(sim.started_at), local_day(world.clock.now)
        periods = [
            (first, last + timedelta(days=1)),  # the whole span
            (date(2026, 12, 1), date(2027, 1, 1)),  # a month
            (date(2026, 11, 16), date(2026, 11, 23)),  # a week
        ]
        views = {m: world.bank.member(m) for m in world.members.values()}
        for member_id, view in views.items():
            assert world.bank.lots_total(member_id) == view.balance_minutes
        assert any(view.held_minutes for view in views.values()), "a booking holds minutes"
        for start, end in periods:
            check_period(sim, facts, views, start, end)
    finally:
        world.bank.dispose()


def check_period(sim: Simulation, facts: LedgerFacts, views: dict[int, MemberView],
                 start: date, end: date) -> None:
    bank = sim.world.bank
    start_at, end_at = midnight(start), midnight(end)
    by_site = {}
    for site in SITES:
        report = bank.station_report(PROGRAMME, site, start=start, end=end)
        check_activity(facts, report, start_at, end_at)
        # A station's liability: the balances of the members whose home it is.
        accounts = [v.account for v in views.values() if v.home_site == site]
        for moment, figure in ((start_at, report.opening_liability_minutes),
                               (end_at, report.closing_liability_minutes)):
            assert figure == sum(bank.ledger.balance_as_of(code, moment - _JUST_BEFORE)
                                 .posted_minutes for code in accounts), (site, start, end)
        by_site[site] = report
    regions = {}
    for region in REGIONS:
        report = bank.region_report(PROGRAMME, region, start=start, end=end)
        check_activity(facts, report, start_at, end_at)
        for moment, figure in ((start_at, report.opening_liability_minutes),
                               (end_at, report.closing_liability_minutes)):
            exposure = bank.guarantee_exposure(PROGRAMME, region=region,
                                               at=moment - _JUST_BEFORE)
            assert figure == exposure.total_minutes, (region, start, end)
        regions[region] = report
    # A day's exposure by region is the liability at the end of a period ending that day.
    last_day = end - timedelta(days=1)
    for level, codes in (("county", ("anci", "guangyang")), ("township", ("xinyuan",))):
        table = bank.exposure_by_region(PROGRAMME, level=level,  # type: ignore[arg-type]
                                        days=[last_day])
        assert [row.region for row in table] == list(codes)
        for row in table:
            assert row.at == end_at - _JUST_BEFORE
            assert row.total_minutes == regions[row.region].closing_liability_minutes
    root = regions["hebei"]
    # The programme is the sum of its sites.
    for name in ("deposited_minutes", "redeemed_minutes", "services_recorded",
                 "services_confirmed"):
        assert getattr(root, name) == sum(getattr(r, name) for r in by_site.values()), name
    assert root.closing_liability_minutes == bank.guarantee_exposure(
        PROGRAMME, at=end_at - _JUST_BEFORE).total_minutes
    # Sibling regions add up to their parent, for what happens at sites.
    for parent, children in (("langfang-city", ("guangyang", "anci")),
                             ("guangyang", ("xinyuan", "sunrise"))):
        for name in ("deposited_minutes", "redeemed_minutes"):
            parts = [getattr(regions[c] if c in regions else by_site[c], name)
                     for c in children]
            assert getattr(regions[parent], name) == sum(parts), (parent, name)
    # Volunteers by age and sex are the report's distinct volunteers.
    people = bank.demographics(PROGRAMME, start=start, end=end)
    assert sum(r.people for r in people.rows if r.role == "volunteer") == root.volunteers
    for view in views.values():
        check_statement(sim, facts, view, start, end)


def check_activity(facts: LedgerFacts, report: ActivityReport, start_at: datetime,
                   end_at: datetime) -> None:
    where = (report.scope, report.code, report.start, report.end)
    sites = facts.sites_of(report.scope, report.code)
    members = facts.member_accounts(sites)
    liability = members | (facts.pool_accounts(report.code) if report.scope == "region"
                           else set())
    # Activity at the sites in scope.
    deposits = facts.deposits_of(sites, start_at, end_at)
    assert report.deposited_minutes == facts.deposited(sites, start_at, end_at), where
    assert report.deposited_minutes == sum(s.credited for s in deposits), where
    assert report.services_confirmed == len(deposits), where
    assert report.volunteers == len({s.volunteer_id for s in deposits}), where
    assert report.people_served == len(set().union(*(s.recipients for s in deposits))), where
    assert report.services_recorded == facts.recorded(sites, start_at, end_at), where
    assert report.redeemed_minutes == facts.redeemed(sites, start_at, end_at), where
    assert report.redeemed_minutes == sum(
        minutes for site, minutes, at in facts.redemptions
        if site in sites and start_at <= at < end_at), where
    # What the members living there did.
    given_in, given_out = facts.flows(members, start_at, end_at, "gift")
    assert (report.given_minutes, report.received_as_gifts_minutes) == (given_out, given_in), where
    assert report.donated_minutes == facts.flows(members, start_at, end_at, "donation")[1], where
    assert report.granted_minutes == facts.flows(members, start_at, end_at, "grant")[0], where
    assert report.expired_minutes == facts.flows(members, start_at, end_at, "expiry")[1], where
    # The liability, and how it moved.
    assert report.opening_liability_minutes == facts.balance(liability, start_at), where
    assert report.closing_liability_minutes == facts.balance(liability, end_at), where
    assert report.movements.by_code == facts.net_by_code(liability, start_at, end_at), where
    assert report.closing_liability_minutes == (
        report.opening_liability_minutes + report.movements.total_minutes), where
    # Coverage.
    stations = {s for s in sites if facts.sites[s].kind != "institution"}
    assert report.stations_total == len(stations), where
    assert report.stations_active == len({s.site_id for s in deposits} & stations), where


def check_statement(sim: Simulation, facts: LedgerFacts, member: MemberView, start: date,
                    end: date) -> None:
    bank = sim.world.bank
    start_at, end_at = midnight(start), midnight(end)
    member_id = member.id
    statement = bank.member_statement(member_id, start=start, end=end)
    account = facts.members[member_id][0]
    where = (member_id, start, end)
    assert (statement.member_id, statement.account, statement.start, statement.end) == (
        member_id, member.account, start, end)
    assert statement.opening_balance_minutes == facts.balance([account], start_at), where
    assert statement.closing_balance_minutes == bank.ledger.balance_as_of(
        member.account, end_at - _JUST_BEFORE).posted_minutes, where
    ledger = facts.account_postings(account, start_at, end_at)
    assert [(e.entry_id, e.code, e.amount_minutes) for e in statement.entries] == [
        (p.entry_id, p.code, p.amount) for p in ledger], where
    running = statement.opening_balance_minutes
    for line in statement.entries:
        assert line.balance_after_minutes == running + line.amount_minutes, (where, line)
        assert start_at <= line.recorded_at < end_at, (where, line)
        assert line.occurred_at <= line.recorded_at, (where, line)
        running = line.balance_after_minutes
    assert running == statement.closing_balance_minutes, where
    amounts = [line.amount_minutes for line in statement.entries]
    assert statement.credited_minutes == sum(a for a in amounts if a > 0), where
    assert statement.debited_minutes == -sum(a for a in amounts if a < 0), where
    # As they stand now: the open lots hold the balance, and the schedule spreads it.
    lots = sum(lot.remaining_minutes for lot in statement.open_lots)
    assert lots == member.balance_minutes, where
    assert all(lot.remaining_minutes > 0 for lot in statement.open_lots), where
    assert sum(line.minutes for line in statement.expiry_schedule) == lots, where
    days = [line.expires_on for line in statement.expiry_schedule]
    dated = [d for d in days if d is not None]
    assert dated == sorted(set(dated)), where
    assert days[len(dated):] == [None] * (len(days) - len(dated)), where
    assert statement.held_minutes == member.held_minutes == sum(
        h.minutes for h in statement.holds), where


# --- 2. coverage ---------------------------------------------------------------------------------


def test_coverage_is_the_share_of_stations_that_confirmed_a_service(world: World) -> None:
    world.bank.add_site(PROGRAMME, "xinyuan-east", "Xinyuan east station",
                        kind="volunteer_station", region="xinyuan", operator="admin")
    serve(world, "s1", "wang", "grandma")
    world.serve("s2", "li", "grandma", site="xinyuan-vol", operator="rec-vol")  # pending
    today = T0.date()
    start, end = today, today + timedelta(days=1)
    xinyuan = world.bank.region_report(PROGRAMME, "xinyuan", start=start, end=end)
    assert (xinyuan.stations_total, xinyuan.stations_active) == (3, 1)
    assert xinyuan.coverage == pytest.approx(1 / 3)
    assert (xinyuan.services_recorded, xinyuan.services_confirmed) == (2, 1)
    guangyang = world.bank.region_report(PROGRAMME, "guangyang", start=start, end=end)
    assert (guangyang.stations_total, guangyang.stations_active) == (3, 1)  # not sunrise
    hebei = world.bank.region_report(PROGRAMME, "hebei", start=start, end=end)
    assert (hebei.stations_total, hebei.stations_active, hebei.coverage) == (4, 1, 0.25)
    station = world.bank.station_report(PROGRAMME, "xinyuan-sw", start=start, end=end)
    assert (station.stations_total, station.stations_active, station.coverage) == (1, 1, 1.0)
    idle = world.bank.station_report(PROGRAMME, "xinyuan-vol", start=start, end=end)
    assert (idle.stations_total, idle.stations_active, idle.coverage) == (1, 0, 0.0)
    institution = world.bank.station_report(PROGRAMME, "sunrise", start=start, end=end)
    assert (institution.stations_total, institution.coverage) == (0, 0.0)
    later = world.bank.region_report(PROGRAMME, "xinyuan", start=today + timedelta(days=1),
                                     end=today + timedelta(days=8))
    assert (later.stations_total, later.stations_active, later.coverage) == (3, 0, 0.0)


# --- 3. inactive members -------------------------------------------------------------------------


def test_inactive_members_by_calendar_months(world: World) -> None:
    """Three months before 28 February is 28 November (the month's day, clamped): activity
    exactly then is not inactive, a day before it is."""
    m = world.members
    anci1 = world.register("anci1", home_site="anci-sw", operator="rec-anci")
    anci2 = world.register("anci2", home_site="anci-sw", operator="rec-anci")
    frozen = world.register("frozen")
    world.bank.set_member_status(frozen, "frozen", reason="audit", operator="gy-admin")
    world.clock.now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    serve(world, "s1", "wang", "grandma")  # wang: a day more than three months
    world.clock.now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    serve(world, "s2", "li", "grandma")  # li: exactly three months
    world.clock.now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    newbie = world.register("newbie")  # registration is activity
    world.clock.now = datetime(2026, 12, 15, 9, 0, tzinfo=UTC)
    world.serve("s3", "anci2", "grandma", site="anci-sw", operator="rec-anci")  # pending
    as_of = datetime(2027, 2, 28, 12, 0, tzinfo=UTC)
    world.clock.now = as_of
    found = world.bank.inactive_members(PROGRAMME, months=3, as_of=as_of)
    # Longest inactive first; registered together, by id. Frozen members are not listed.
    assert [i.member_id for i in found] == [m["zhao"], m["grandma"], anci1, m["wang"]]
    assert [i.last_activity_at for i in found] == [T0, T0, T0, datetime(2026, 11, 27, 12, 0,
                                                                        tzinfo=UTC)]
    assert all(i.status == "active" for i in found)
    assert {i.member_id for i in found}.isdisjoint({m["li"], newbie, anci2, frozen})
    wang = found[-1]
    assert (wang.home_site, wang.balance_minutes) == ("xinyuan-sw", world.balance("wang")) == (
        "xinyuan-sw", 60)
    assert world.bank.inactive_members(PROGRAMME, months=3) == found  # as_of: now
    assert world.bank.inactive_members(PROGRAMME, months=3, limit=2) == found[:2]
    anci = world.bank.inactive_members(PROGRAMME, months=3, as_of=as_of, region="anci")
    assert [(i.member_id, i.home_site) for i in anci] == [(anci1, "anci-sw")]
    xinyuan = world.bank.inactive_members(PROGRAMME, months=3, as_of=as_of, region="xinyuan")
    assert [i.member_id for i in xinyuan] == [m["zhao"], m["grandma"], m["wang"]]
    # Unfreezing (no activity) brings the frozen member back; a day later li, and the member
    # registered on 1 December at 09:00, are inactive too.
    world.bank.set_member_status(frozen, "active", reason="cleared", operator="gy-admin")
    later = as_of + timedelta(days=1)  # 1 March: the cutoff is 1 December, 12:00
    assert [i.member_id for i in world.bank.inactive_members(
        PROGRAMME, months=3, as_of=later)] == [m["zhao"], m["grandma"], anci1, frozen,
                                               m["wang"], m["li"], newbie]
    # Twelve months: nobody.
    assert world.bank.inactive_members(PROGRAMME, months=12, as_of=as_of) == []


def test_inactive_members_one_month_before_the_end_of_a_longer_month(world: World) -> None:
    """One month before 28, 29, 30 and 31 March is 28 February (2027 is no leap year)."""
    wang = world.members["wang"]
    world.clock.now = datetime(2027, 2, 28, 8, 0, tzinfo=UTC)
    serve(world, "s1", "wang", "grandma")  # wang's last activity: 28 February, 08:00

    def inactive(as_of: datetime) -> list[int]:
        return [i.member_id for i in world.bank.inactive_members(
            PROGRAMME, months=1, as_of=as_of)]

    for day in (28, 29, 30, 31):
        found = inactive(datetime(2027, 3, day, 8, 0, tzinfo=UTC))
        assert wang not in found, day
        assert world.members["li"] in found
    assert wang in inactive(datetime(2027, 3, 31, 8, 0, 0, 1, tzinfo=UTC))
    assert wang in inactive(datetime(2027, 4, 1, 8, 0, tzinfo=UTC))
    assert wang not in inactive(datetime(2027, 3, 27, 8, 0, tzinfo=UTC))


# --- 4. demographics ----------------------------------------------------------------------------


def test_demographics_by_age_on_the_last_day_and_sex(world: World) -> None:
    bank, m = world.bank, world.members
    spouses = POLICY.model_copy(update={"spouse_redeems": True})
    bank.set_policy(PROGRAMME, spouses, effective_from=world.clock.now, operator="admin")
    world.clock.advance(minutes=1)
    world.register("ana", born=date(1996, 11, 30), sex="female")  # 30 on 30 November
    world.register("bao", born=date(1996, 12, 1), sex="male")  # still 29
    cai = world.register("cai", born=date(1950, 1, 1), home_site="anci-sw", operator="rec-anci")
    dan = world.register("dan", born=date(1944, 6, 6), sex="female", home_site="anci-sw",
                         operator="rec-anci")
    bank.relate(cai, dan, "spouse", operator="rec-anci")
    world.clock.advance(hours=3)
    serve(world, "s1", "ana", "grandma")
    serve(world, "s2", "ana", "wang", minutes=30)  # one volunteer, however often
    serve(world, "s3", "bao", "wang")
    serve(world, "s4", "cai", "zhao", site="anci-sw")
    serve(world, "s5", "li", "wang", site="xinyuan-vol")
    world.serve("s6", "zhao", "grandma")  # pending: zhao is no volunteer
    world.clock.advance(hours=2)
    bank.redeem("r1", programme=PROGRAMME, member_id=m["li"], site="sunrise",
                service_type="body_care", minutes=30, operator="sunrise-op")  # for herself
    bank.redeem("r2", programme=PROGRAMME, member_id=cai, recipient_id=dan, site="sunrise",
                service_type="body_care", minutes=30, operator="sunrise-op")  # for his wife
    world.clock.now = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    serve(world, "s7", "ana", "cai")  # after the period
    start, end = date(2026, 11, 2), date(2026, 12, 1)
    report = bank.demographics(PROGRAMME, start=start, end=end)
    assert (report.programme, report.region, report.start, report.end) == (
        PROGRAMME, "hebei", start, end)
    rows = [(r.role, r.band_start, r.band_end, r.sex, r.people) for r in report.rows]
    assert rows == [
        ("volunteer", 20, 29, "male", 1),  # bao
        ("volunteer", 30, 39, "female", 1),  # ana
        ("volunteer", 60, 69, "unknown", 1),  # li
        ("volunteer", 70, 79, "unknown", 1),  # cai
        ("recipient", 60, 69, "unknown", 3),  # wang, zhao, li (her own redemption)
        ("recipient", 80, 89, "female", 1),  # dan (her husband's redemption)
        ("recipient", 80, 89, "unknown", 1),  # grandma
    ]
    anci = bank.demographics(PROGRAMME, start=start, end=end, region="anci")
    assert anci.region == "anci"
    assert [(r.role, r.band_start, r.sex, r.people) for r in anci.rows] == [
        ("volunteer", 70, "unknown", 1), ("recipient", 80, "female", 1)]
    fives = bank.demographics(PROGRAMME, start=start, end=end, band_years=5)
    volunteers = [(r.band_start, r.band_end, r.sex) for r in fives.rows if r.role == "volunteer"]
    assert volunteers == [(25, 29, "male"), (30, 34, "female"), (65, 69, "unknown"),
                          (75, 79, "unknown")]
    # A period ending a day later: bao is 30 on its last day, and the late service counts.
    december = bank.demographics(PROGRAMME, start=start, end=date(2026, 12, 3))
    assert [(r.role, r.band_start, r.sex, r.people) for r in december.rows] == [
        ("volunteer", 30, "female", 1),
        ("volunteer", 30, "male", 1),
        ("volunteer", 60, "unknown", 1),
        ("volunteer", 70, "unknown", 1),
        ("recipient", 60, "unknown", 3),
        ("recipient", 70, "unknown", 1),  # cai, served on 2 December
        ("recipient", 80, "female", 1),
        ("recipient", 80, "unknown", 1),
    ]
    assert bank.demographics(PROGRAMME, start=date(2026, 12, 3), end=date(2027, 1, 1)).rows == ()


# --- 5. exposure by region ----------------------------------------------------------------------


def test_exposure_by_region_is_the_guarantee_exposure_of_each_region_and_day(
    world: World,
) -> None:
    bank = world.bank
    world.register("sun", home_site="anci-sw", operator="rec-anci")
    days = [T0.date() + timedelta(days=n) for n in range(3)]
    serve(world, "s1", "wang", "grandma", minutes=90)
    world.clock.advance(days=1)
    serve(world, "s2", "sun", "zhao", minutes=40, site="anci-sw")
    bank.donate("d1", programme=PROGRAMME, member_id=world.members["wang"], minutes=30,
                operator="rec-sw", region="anci")
    world.clock.advance(days=1)
    bank.redeem("r1", programme=PROGRAMME, member_id=world.members["wang"], site="sunrise",
                service_type="shopping", minutes=20, operator="sunrise-op")
    for level, codes in (("county", ["anci", "guangyang"]), ("township", ["xinyuan"]),
                         ("city", ["langfang-city"]), ("province", ["hebei"])):
        rows = bank.exposure_by_region(PROGRAMME, level=level, days=days)  # type: ignore[arg-type]
        assert [(r.region, r.level) for r in rows] == [(c, level) for c in codes for _ in days]
        for row, (code, day) in zip(rows, [(c, d) for c in codes for d in days], strict=True):
            view = bank.guarantee_exposure(PROGRAMME, region=code, at=day)
            assert row.at == view.at == utc_midnight(day + timedelta(days=1)) - _JUST_BEFORE
            assert (row.member_minutes, row.pool_minutes, row.total_minutes) == (
                view.member_minutes, view.pool_minutes, view.total_minutes)
    county = bank.exposure_by_region(PROGRAMME, level="county", days=days)
    assert [(r.region, r.member_minutes, r.pool_minutes) for r in county] == [
        ("anci", 0, 0), ("anci", 40, 30), ("anci", 40, 30),
        ("guangyang", 90, 0), ("guangyang", 60, 0), ("guangyang", 40, 0),
    ]


# --- 6. refusals --------------------------------------------------------------------------------


def test_reports_refuse_unknown_objects_and_bad_periods(world: World) -> None:
    bank, wang = world.bank, world.members["wang"]
    day = T0.date()
    start, end = day, day + timedelta(days=1)
    not_found: list[Callable[[], object]] = [
        lambda: bank.member_statement(10_000, start=start, end=end),
        lambda: bank.station_report(PROGRAMME, "nowhere", start=start, end=end),
        # A region is no site, and a site no region.
        lambda: bank.station_report(PROGRAMME, "xinyuan", start=start, end=end),
        lambda: bank.station_report("atlantis", "xinyuan-sw", start=start, end=end),
        lambda: bank.region_report(PROGRAMME, "atlantis", start=start, end=end),
        lambda: bank.region_report(PROGRAMME, "sunrise", start=start, end=end),
        lambda: bank.inactive_members(PROGRAMME, months=1, region="atlantis"),
        lambda: bank.inactive_members("atlantis", months=1),
        lambda: bank.demographics(PROGRAMME, region="atlantis", start=start, end=end),
        lambda: bank.exposure_by_region("atlantis", level="county", days=[day]),
    ]
    for act in not_found:
        refused(world, BankObjectNotFoundError, act)
    for first, last in ((day, day), (day, day - timedelta(days=1))):
        for act in (
            lambda s=first, e=last: bank.member_statement(wang, start=s, end=e),
            lambda s=first, e=last: bank.station_report(PROGRAMME, "xinyuan-sw", start=s, end=e),
            lambda s=first, e=last: bank.region_report(PROGRAMME, "hebei", start=s, end=e),
            lambda s=first, e=last: bank.demographics(PROGRAMME, start=s, end=e),
        ):
            refused(world, InvalidInputError, act, match="period")
    now = world.clock.now
    invalid: list[Callable[[], object]] = [
        lambda: bank.member_statement(wang, start=now, end=now + timedelta(days=1)),
        lambda: bank.member_statement(str(wang), start=start, end=end),  # type: ignore[arg-type]
        lambda: bank.inactive_members(PROGRAMME, months=0),
        lambda: bank.inactive_members(PROGRAMME, months=-1),
        lambda: bank.inactive_members(PROGRAMME, months=1, limit=0),
        lambda: bank.inactive_members(PROGRAMME, months=1, as_of=now.replace(tzinfo=None)),
        lambda: bank.demographics(PROGRAMME, band_years=0, start=start, end=end),
        lambda: bank.exposure_by_region(PROGRAMME, level="county", days=[]),
        lambda: bank.exposure_by_region(PROGRAMME, level="county", days=[now]),
    ]
    for act in invalid:
        refused(world, InvalidInputError, act)


def test_exposure_by_region_refuses_an_unknown_level(sqlite_url: str) -> None:
    """(Backend-independent: SQLite only.)"""
    world = fresh(sqlite_url, Clock())
    try:
        with pytest.raises(InvalidInputError):
            world.bank.exposure_by_region(PROGRAMME, level="galaxy",  # type: ignore[arg-type]
                                          days=[T0.date()])
    finally:
        world.bank.dispose()


@pytest.mark.parametrize("day", [date.max, date(1969, 12, 30)], ids=["date.max", "1969"])
def test_exposure_by_region_refuses_days_outside_the_calendar(sqlite_url: str,
                                                              day: date) -> None:
    world = fresh(sqlite_url, Clock())
    try:
        with pytest.raises(InvalidInputError):
            world.bank.exposure_by_region(PROGRAMME, level="county", days=[day])
    finally:
        world.bank.dispose()


def test_inactive_members_refuses_a_cutoff_before_year_one(sqlite_url: str) -> None:
    world = fresh(sqlite_url, Clock())
    try:
        with pytest.raises(InvalidInputError):
            world.bank.inactive_members(PROGRAMME, months=1,
                                        as_of=datetime(1, 1, 15, tzinfo=UTC))
    finally:
        world.bank.dispose()


# --- 7. rendering --------------------------------------------------------------------------------


def test_each_report_renders_its_key_figures(world: World) -> None:
    bank, m = world.bank, world.members
    world.bank.add_site(PROGRAMME, "xinyuan-east", "Xinyuan east station",
                        kind="volunteer_station", region="xinyuan", operator="admin")
    world.register("mei", born=date(1952, 4, 9), sex="female")
    bank.set_policy(PROGRAMME, POLICY.model_copy(update={"lot_expiry_days": 30}),
                    effective_from=world.clock.now, operator="admin")
    world.clock.advance(hours=3)  # the services start under the expiring policy
    serve(world, "s1", "wang", "mei", minutes=125)
    serve(world, "s2", "mei", "zhao", minutes=47)
    bank.redeem("r1", programme=PROGRAMME, member_id=m["wang"], site="sunrise",
                service_type="shopping", minutes=33, operator="sunrise-op")
    bank.book("b1", programme=PROGRAMME, member_id=m["wang"], site="sunrise",
              service_type="shopping", minutes=17,
              scheduled_at=world.clock.now + timedelta(days=1), operator="sunrise-op")
    day = T0.date()
    start, end = day, day + timedelta(days=1)

    statement = bank.member_statement(m["wang"], start=start, end=end)
    text = statement.render()
    assert (statement.closing_balance_minutes, statement.held_minutes) == (92, 17)
    for needle in (f"Statement of member {m['wang']}", "Opening balance: 0 min",
                   "Closing balance: 92 min (+125 / -33)", "deposit", "redemption", "125",
                   "-33", str(day + timedelta(days=30)), "Held by bookings: 17 min",
                   f"{day} to {day + timedelta(days=1)}"):
        assert needle in text, (needle, text)

    station = bank.station_report(PROGRAMME, "xinyuan-sw", start=start, end=end)
    text = station.render()
    assert text.startswith(f"Station xinyuan-sw ({PROGRAMME}), {day}")
    lines = dict(_rows(text))
    assert lines["services confirmed"] == "2"
    assert lines["minutes deposited"] == "172"
    assert lines["liability at the end"] == str(station.closing_liability_minutes) == "139"
    assert lines["stations active"] == "1 of 1"
    assert lines["coverage"] == "100%"

    region = bank.region_report(PROGRAMME, "xinyuan", start=start, end=end)
    lines = dict(_rows(region.render()))
    assert region.render().startswith("Region xinyuan")
    assert (lines["stations active"], lines["coverage"]) == ("1 of 3", "33%")
    assert lines["minutes deposited"] == "172"

    sunrise = dict(_rows(bank.station_report(PROGRAMME, "sunrise", start=start, end=end).render()))
    assert (sunrise["minutes redeemed here"], sunrise["coverage"]) == ("33", "0%")

    people = bank.demographics(PROGRAMME, start=start, end=end).render()
    assert people.splitlines()[0].startswith("Volunteers and recipients by age and sex, hebei")
    table = [line.split() for line in people.splitlines()[2:]]
    assert ["volunteer", "60-69", "unknown", "1"] in table  # wang
    assert ["volunteer", "70-79", "female", "1"] in table  # mei
    assert ["recipient", "70-79", "female", "1"] in table
    assert ["recipient", "60-69", "unknown", "2"] in table  # zhao; wang redeemed for himself


def _rows(text: str) -> list[tuple[str, str]]:
    """The label and value of each line of an activity report's table."""
    found = []
    for line in text.splitlines()[2:]:
        label, _, value = line.rpartition("  ")
        found.append((label.strip(), value.strip()))
    return found


# --- 8. clearing figures in the reports ----------------------------------------------------------


def test_reports_carry_the_clearing_position_of_their_scope(world: World) -> None:
    """Minutes earned at xinyuan-sw and redeemed at sunrise: the station owes them and the
    institution is owed them (site level); at county level guangyang holds both, so its
    region report nets to zero, and the figures are those of ``clearing``."""
    bank, m = world.bank, world.members
    service = world.serve("c1", "wang", "grandma", minutes=120)
    bank.confirm_service(service, operator="conf-sw")
    world.clock.advance(hours=1)
    bank.redeem("c-r1", programme=PROGRAMME, member_id=m["wang"], site="sunrise",
                service_type="shopping", minutes=50, operator="sunrise-op")
    period = {"start": date(2026, 11, 1), "end": date(2026, 12, 1)}
    station = bank.station_report(PROGRAMME, "xinyuan-sw", **period)
    home = bank.station_report(PROGRAMME, "sunrise", **period)
    county = bank.region_report(PROGRAMME, "guangyang", **period)
    assert (station.clearing_net_minutes, home.clearing_net_minutes) == (-50, 50)
    assert county.clearing_net_minutes == 0
    by_site = bank.clearing(PROGRAMME, level="site", **period)
    assert station.clearing_net_minutes == by_site.net_of("xinyuan-sw")
    assert "owes (-)" in station.render()
