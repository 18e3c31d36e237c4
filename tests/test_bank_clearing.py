"""Clearing inside a programme (the time bank, part 3): the gross matrix and net positions of
the minutes earned at one unit and redeemed at another, at every level of the region tree;
the report reconciled with the ledger; settlements posted once, in order, after their period
ends, by the programme's administrators; late redemptions carried into the next settlement;
concurrent settlements clearing once. Every refusal checked to change nothing. On SQLite,
PostgreSQL and MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial

import pytest

from tests.bankworld import POLICY, PROGRAMME, World, fresh, race, refused
from tests.clocks import Clock
from tests.dbdump import dump
from timebank import (
    AlreadySettledError,
    BankObjectNotFoundError,
    ConcurrencyError,
    IdempotencyConflictError,
    InvalidInputError,
    PermissionDeniedError,
    PolicyViolationError,
)
from timebank.bank.models import ClearingPosition, ClearingReport, SettlementView

NOV, DEC, JAN = date(2026, 11, 1), date(2026, 12, 1), date(2027, 1, 1)
NOV_START = datetime(2026, 11, 1, tzinfo=UTC)
NOV_END = datetime(2026, 12, 1, tzinfo=UTC)  # the instant November ends (UTC programme)
DEC_END = datetime(2027, 1, 1, tzinfo=UTC)
SITES = ("xinyuan-sw", "xinyuan-vol", "anci-sw", "sunrise")

# The November redemptions of the ``scenario`` fixture (see there), by level:
# the gross matrix, the net positions (largest first, then by name) and the local minutes.
NOVEMBER: dict[str, tuple[dict[str, dict[str, int]], list[tuple[str, str, int]], int]] = {
    "site": (
        {
            "xinyuan-sw": {"sunrise": 60},
            "anci-sw": {"sunrise": 40, "anci-sw": 130, "xinyuan-sw": 20},
            "xinyuan-vol": {"anci-sw": 20, "xinyuan-sw": 50, "xinyuan-vol": 30},
        },
        [
            ("xinyuan-sw", "sunrise", 60),
            ("xinyuan-vol", "xinyuan-sw", 50),
            ("anci-sw", "sunrise", 40),
            ("anci-sw", "xinyuan-sw", 20),
            ("xinyuan-vol", "anci-sw", 20),
        ],
        160,
    ),
    # sunrise lies directly in guangyang county: at township level it is guangyang's.
    # xinyuan -> anci (20) and anci -> xinyuan (20) cancel out: no position.
    "township": (
        {
            "xinyuan": {"guangyang": 60, "anci": 20, "xinyuan": 80},
            "anci": {"guangyang": 40, "anci": 130, "xinyuan": 20},
        },
        [("xinyuan", "guangyang", 60), ("anci", "guangyang", 40)],
        210,
    ),
    # anci -> guangyang 60, guangyang -> anci 20: net 40.
    "county": (
        {"guangyang": {"guangyang": 140, "anci": 20}, "anci": {"guangyang": 60, "anci": 130}},
        [("anci", "guangyang", 40)],
        270,
    ),
    "city": ({"langfang-city": {"langfang-city": 350}}, [], 350),
    "province": ({"hebei": {"hebei": 350}}, [], 350),
}
NET_OF_SITES = {"sunrise": 100, "xinyuan-sw": 10, "anci-sw": -40, "xinyuan-vol": -70}


@dataclass
class Scenario:
    world: World
    redemptions: list[int]


def earn(world: World, key: str, name: str, minutes: int, *, site: str, hours_ago: int) -> None:
    recorder, confirmer = {
        "xinyuan-sw": ("rec-sw", "conf-sw"),
        "xinyuan-vol": ("rec-vol", "rec-vol"),
        "anci-sw": ("rec-anci", "rec-anci"),
    }[site]
    service = world.serve(key, name, "grandma", minutes=minutes, site=site, operator=recorder,
                          ago=timedelta(hours=hours_ago))
    world.bank.confirm_service(service, operator=confirmer)


def redeem(world: World, key: str, name: str, minutes: int, site: str, *,
           occurred_at: datetime | None = None) -> int:
    operator = {"sunrise": "sunrise-op", "anci-sw": "anci-red"}.get(site, "gy-admin")
    return world.bank.redeem(key, programme=PROGRAMME, member_id=world.members[name], site=site,
                             service_type="shopping", minutes=minutes, operator=operator,
                             occurred_at=occurred_at).id


def settle(world: World, key: str, start: date = NOV, end: date = DEC, *, level: str = "site",
           operator: str = "admin") -> SettlementView:
    return world.bank.settle(key, programme=PROGRAMME, start=start, end=end,
                             level=level, operator=operator)  # type: ignore[arg-type]


def report(world: World, start: date = NOV, end: date = DEC,
           level: str = "site") -> ClearingReport:
    return world.bank.clearing(PROGRAMME, start=start, end=end, level=level)  # type: ignore[arg-type]


def cleared(world: World, unit: str, level: str = "site") -> int:
    return world.bank.ledger.balance(f"{PROGRAMME}:{unit}:clr:{level}").posted_minutes


def redeemed_between(world: World, site: str, start: datetime, end: datetime) -> int:
    """The ledger's postings of redemptions to ``site``'s redeemed account dated in
    [start, end)."""
    account = world.bank.site(PROGRAMME, site).redeemed_account
    return sum(line.amount_minutes for line in world.bank.ledger.iter_statement(account)
               if line.code == "redemption" and start <= line.occurred_at < end)


def positions(view: ClearingReport | SettlementView) -> list[tuple[str, str, int]]:
    return [(p.debtor, p.creditor, p.minutes) for p in view.positions]


@pytest.fixture
def scenario(db_url: str) -> Iterator[Scenario]:
    """Four lots: wang's 60 at xinyuan-sw (the oldest) and 90 at anci-sw, li's 160 at
    xinyuan-vol, zhao's 100 at anci-sw; li (zhao's parent) gives zhao 50 of his xinyuan-vol
    lot. Six redemptions in November: wang 100 at sunrise (60 xinyuan-sw + 40 anci-sw, two
    lots), wang 30 at anci-sw, zhao 120 at anci-sw (100 anci-sw + 20 of the gift, from
    xinyuan-vol), li 50 at xinyuan-sw, zhao 30 (the gift's rest) at xinyuan-vol, wang 20
    (anci-sw) at xinyuan-sw."""
    w = fresh(db_url, Clock())
    try:
        bank, m = w.bank, w.members
        bank.add_operator(PROGRAMME, "anci-red", "Redeemer", roles=["redeemer"], site="anci-sw",
                          by="admin")
        earn(w, "s1", "wang", 60, site="xinyuan-sw", hours_ago=30)
        earn(w, "s2", "wang", 90, site="anci-sw", hours_ago=4)
        earn(w, "s3", "li", 160, site="xinyuan-vol", hours_ago=30)
        earn(w, "s4", "zhao", 100, site="anci-sw", hours_ago=30)
        bank.relate(m["li"], m["zhao"], "parent", operator="rec-sw")
        gift = bank.give("g1", programme=PROGRAMME, giver_id=m["li"], receiver_id=m["zhao"],
                         minutes=50, operator="rec-sw")
        assert [lot.origin_site for lot in bank.lots(m["zhao"])] == ["anci-sw", "xinyuan-vol"]
        assert gift.minutes == 50
        w.clock.advance(days=1)
        done = [
            redeem(w, "r1", "wang", 100, "sunrise"),
            redeem(w, "r2", "wang", 30, "anci-sw"),
            redeem(w, "r3", "zhao", 120, "anci-sw"),
            redeem(w, "r4", "li", 50, "xinyuan-sw"),
            redeem(w, "r5", "zhao", 30, "xinyuan-vol"),
            redeem(w, "r6", "wang", 20, "xinyuan-sw"),
        ]
        assert len(bank.redemption(done[0]).lots) == 2  # one redemption, two origins
        yield Scenario(w, done)
    finally:
        w.bank.dispose()


def test_matrix_and_net_positions_at_every_level(scenario: Scenario) -> None:
    """Minutes go from the lots' origin to the redeeming site, grouped by the units of the
    level; a gift keeps its origin; a site coarser than the level is its region's unit; the
    positions net each pair's two directions; nothing is settled yet."""
    w = scenario.world
    for level, (matrix, net, local) in NOVEMBER.items():
        seen = report(w, level=level)
        assert (seen.level, seen.start, seen.end) == (level, NOV, DEC)
        assert seen.matrix() == matrix, level
        assert positions(seen) == net, level
        assert (seen.redemptions, seen.redeemed_minutes, seen.local_minutes) == (6, 350, local)
        assert (seen.settlement_id, seen.carried_minutes) == (None, 0)
        units = {u for row in matrix.values() for u in row} | set(matrix)
        assert sum(seen.net_of(u) for u in units) == 0
    site = report(w)
    assert {u: site.net_of(u) for u in SITES} == NET_OF_SITES
    assert site.positions[0] == ClearingPosition(debtor="xinyuan-sw", creditor="sunrise",
                                                 minutes=60)
    assert report(w, level="county").net_of("anci") == -40
    assert report(w, level="township").net_of("guangyang") == 100


def test_the_report_reconciles_with_the_ledger(scenario: Scenario) -> None:
    """Each site's column of the matrix is what the ledger posted to its redeemed account;
    the report's total is the sum of the redemptions; October and December are empty."""
    w = scenario.world
    bank = w.bank
    seen = report(w)
    matrix = seen.matrix()
    for site in SITES:
        account = bank.site(PROGRAMME, site).redeemed_account
        column = sum(row.get(site, 0) for row in matrix.values())
        assert bank.ledger.balance(account).posted_minutes == column, site
        assert redeemed_between(w, site, NOV_START, NOV_END) == column, site
    assert seen.redeemed_minutes == sum(bank.redemption(r).minutes for r in scenario.redemptions)
    for level in NOVEMBER:
        assert report(w, level=level).redeemed_minutes == seen.redeemed_minutes
    for start, end in ((date(2026, 10, 1), NOV), (DEC, JAN)):
        empty = report(w, start, end)
        assert (empty.flows, empty.positions, empty.redemptions) == ((), (), 0)


def test_a_settlement_posts_the_net_positions_once(scenario: Scenario) -> None:
    """Settling November posts one entry per net position between clearing accounts, whose
    balances are the units' net positions and sum to zero; the same key again returns the
    same settlement and writes nothing; the report then names it, with nothing carried."""
    w = scenario.world
    w.clock.now = NOV_END  # the very instant November ends
    done = settle(w, "nov-site")
    assert (done.level, done.start, done.end, done.idempotency_key) == ("site", NOV, DEC,
                                                                         "nov-site")
    assert (done.settled_by, done.settled_at) == ("admin", NOV_END)
    assert positions(done) == NOVEMBER["site"][1]
    assert done.matrix() == NOVEMBER["site"][0]
    assert (done.redemptions, done.redeemed_minutes, done.local_minutes) == (6, 350, 160)
    assert (done.late_minutes, done.late_flows) == (0, ())
    assert len(done.entry_ids) == len(done.positions)
    for entry_id, position in zip(done.entry_ids, done.positions, strict=True):
        entry = w.bank.ledger.entry(entry_id)
        assert (entry.code, entry.operator, entry.occurred_at) == ("settlement", "admin",
                                                                  NOV_END)
        assert entry.memo == f"site clearing: {position.debtor} owes {position.creditor}"
    assert {u: cleared(w, u) for u in SITES} == {u: done.net_of(u) for u in SITES}
    assert {u: done.net_of(u) for u in SITES} == NET_OF_SITES
    assert sum(cleared(w, u) for u in SITES) == 0
    before = dump(w.engine)
    w.clock.advance(days=3)
    assert settle(w, "nov-site") == done
    assert dump(w.engine) == before
    seen = report(w)
    assert (seen.settlement_id, seen.carried_minutes) == (done.id, 0)
    assert report(w, level="county").settlement_id is None  # settled at site level only


def test_settlement_refusals(scenario: Scenario) -> None:
    """Refused, changing nothing: before the period ends, by anyone but an administrator of
    the programme's root, a period already settled (another key), the same key for another
    period, a period not following the last settled one, an empty or reversed period, an
    unknown level."""
    w = scenario.world
    w.clock.now = NOV_END - timedelta(seconds=1)
    refused(w, PolicyViolationError, lambda: settle(w, "nov"), match="settled once it has ended")
    w.clock.now = NOV_END + timedelta(hours=1)
    for operator in ("gy-admin", "rec-sw", "sunrise-op", "audit"):
        refused(w, PermissionDeniedError, lambda o=operator: settle(w, "nov", operator=o))  # type: ignore[misc]
    refused(w, InvalidInputError, lambda: settle(w, "nov", level="district"))
    refused(w, InvalidInputError, lambda: settle(w, "nov", start=DEC, end=DEC))
    refused(w, InvalidInputError, lambda: settle(w, "nov", start=DEC, end=NOV))
    refused(w, InvalidInputError, lambda: settle(w, "nov", start=NOV_START))  # not a date
    refused(w, InvalidInputError, lambda: report(w, level="district"))
    refused(w, InvalidInputError, lambda: report(w, DEC, NOV))
    done = settle(w, "nov")
    err = refused(w, IdempotencyConflictError, lambda: settle(w, "nov", start=DEC, end=JAN))
    assert err.fields == ("start", "end")
    refused(w, IdempotencyConflictError, lambda: settle(w, "nov", level="county"))
    again = refused(w, AlreadySettledError, lambda: settle(w, "nov-again"))
    assert (again.level, again.key) == ("site", "nov")
    refused(w, AlreadySettledError, lambda: settle(w, "nov-half", end=date(2026, 11, 15)))
    w.clock.now = DEC_END + timedelta(days=40)
    refused(w, PolicyViolationError, lambda: settle(w, "gap", start=date(2026, 12, 2), end=JAN),
            match="settled up to 2026-12-01")
    refused(w, PolicyViolationError, lambda: settle(w, "oct", start=date(2026, 10, 1), end=NOV))
    refused(w, PolicyViolationError, lambda: settle(w, "overlap", start=date(2026, 11, 15),
                                                    end=date(2026, 12, 15)))
    assert settle(w, "dec", start=DEC, end=JAN).id != done.id  # the next period follows


def test_levels_are_settled_independently(scenario: Scenario) -> None:
    """November settles at site, township, county and city level: each settlement clears
    every redemption once at its level and posts its own positions to its own clearing
    accounts."""
    w = scenario.world
    w.clock.now = NOV_END + timedelta(hours=1)
    by_site = settle(w, "nov-site")
    by_county = settle(w, "nov-county", level="county")
    by_township = settle(w, "nov-township", level="township")
    by_city = settle(w, "nov-city", level="city")
    assert len({by_site.id, by_county.id, by_township.id, by_city.id}) == 4
    for done in (by_site, by_county, by_township, by_city):
        matrix, net, local = NOVEMBER[done.level]
        assert (done.matrix(), positions(done), done.local_minutes) == (matrix, net, local)
        assert (done.redemptions, done.redeemed_minutes) == (6, 350)
    assert (cleared(w, "anci", "county"), cleared(w, "guangyang", "county")) == (-40, 40)
    assert {u: cleared(w, u, "township") for u in ("xinyuan", "anci", "guangyang")} == {
        "xinyuan": -60, "anci": -40, "guangyang": 100}
    assert {u: cleared(w, u) for u in SITES} == NET_OF_SITES
    assert by_city.entry_ids == ()  # everything local: nothing posted
    assert report(w, level="county").settlement_id == by_county.id
    assert report(w, level="province").settlement_id is None


def test_a_late_redemption_falls_into_the_next_settlement(scenario: Scenario) -> None:
    """A redemption dated in November but recorded after November's settlement is not in it:
    November's report carries it; December's report (dated in December) leaves it out, but
    December's settlement clears it as late minutes; the clearing accounts hold the sum of
    both settlements and the redeemed accounts agree with the reports. The first settlement
    at a level clears every earlier redemption, as late minutes."""
    w = scenario.world
    w.clock.now = NOV_END + timedelta(hours=1)
    november = settle(w, "nov")
    w.clock.advance(hours=1)
    late = redeem(w, "r7", "li", 25, "sunrise",
                  occurred_at=datetime(2026, 11, 20, 10, tzinfo=UTC))
    december = redeem(w, "r8", "li", 15, "sunrise")
    assert w.bank.find_settlement(PROGRAMME, start=NOV) == november  # unchanged
    seen = report(w)
    assert (seen.settlement_id, seen.carried_minutes) == (november.id, 25)
    assert (seen.redemptions, seen.redeemed_minutes) == (7, 375)
    assert seen.matrix()["xinyuan-vol"]["sunrise"] == 25
    in_december = report(w, DEC, JAN)
    assert in_december.matrix() == {"xinyuan-vol": {"sunrise": 15}}
    assert (in_december.redemptions, in_december.settlement_id) == (1, None)
    w.clock.now = DEC_END
    settled = settle(w, "dec", start=DEC, end=JAN)
    assert settled.matrix() == {"xinyuan-vol": {"sunrise": 40}}
    assert settled.redeemed_minutes == sum(w.bank.redemption(r).minutes for r in (late, december))
    assert (settled.redemptions, settled.redeemed_minutes, settled.late_minutes) == (2, 40, 25)
    assert [(f.origin, f.redeemed_at, f.minutes) for f in settled.late_flows] == [
        ("xinyuan-vol", "sunrise", 25)]
    assert positions(settled) == [("xinyuan-vol", "sunrise", 40)]
    assert report(w, DEC, JAN).carried_minutes == 0
    assert report(w).carried_minutes == 25  # still not cleared by November's settlement
    for unit in SITES:
        assert cleared(w, unit) == november.net_of(unit) + settled.net_of(unit), unit
    assert sum(cleared(w, u) for u in SITES) == 0
    first = settle(w, "dec-county", start=DEC, end=JAN, level="county")  # none before it
    assert (first.redemptions, first.redeemed_minutes, first.late_minutes) == (8, 390, 375)
    assert positions(first) == [("anci", "guangyang", 40)]
    for start, end, month in ((NOV_START, NOV_END, report(w)), (NOV_END, DEC_END, in_december)):
        for site in SITES:
            column = sum(row.get(site, 0) for row in month.matrix().values())
            assert redeemed_between(w, site, start, end) == column, (site, start)


def test_periods_are_days_of_the_programmes_calendar(scenario: Scenario) -> None:
    """With the programme on Beijing time, December starts at 16:00 UTC on 30 November: a
    redemption a second earlier is November's, one at that instant December's, and November
    is settled from that instant on."""
    w = scenario.world
    beijing = POLICY.model_copy(update={"timezone": "Asia/Shanghai"})
    w.bank.set_policy(PROGRAMME, beijing, effective_from=w.clock.now, operator="admin")
    turn = datetime(2026, 11, 30, 16, tzinfo=UTC)
    w.clock.now = turn - timedelta(seconds=1)
    redeem(w, "r7", "li", 10, "sunrise")
    refused(w, PolicyViolationError, lambda: settle(w, "nov"))
    w.clock.now = turn
    redeem(w, "r8", "li", 5, "sunrise")
    assert (report(w).redemptions, report(w).redeemed_minutes) == (7, 360)
    assert report(w, DEC, JAN).matrix() == {"xinyuan-vol": {"sunrise": 5}}
    done = settle(w, "nov")
    assert (done.redeemed_minutes, done.settled_at) == (360, turn)
    assert all(w.bank.ledger.entry(e).occurred_at == turn for e in done.entry_ids)


def test_find_settlement_and_settlement_agree(scenario: Scenario) -> None:
    """A settlement is found by its level and start, or read by id: the same view; an unknown
    one is not found."""
    w = scenario.world
    w.clock.now = NOV_END
    done = settle(w, "nov", level="township")
    assert w.bank.find_settlement(PROGRAMME, start=NOV, level="township") == done
    assert w.bank.settlement(done.id) == done
    with pytest.raises(BankObjectNotFoundError):
        w.bank.find_settlement(PROGRAMME, start=NOV)  # not settled at site level
    with pytest.raises(BankObjectNotFoundError):
        w.bank.find_settlement(PROGRAMME, start=DEC, level="township")
    with pytest.raises(BankObjectNotFoundError):
        w.bank.settlement(done.id + 1000)
    with pytest.raises(BankObjectNotFoundError):
        w.bank.find_settlement("atlantis", start=NOV)


def test_concurrent_settlements_clear_once(scenario: Scenario, db_backend: str) -> None:
    """Threads settle November at once with different keys (and two with the same key): one
    settlement exists, every other attempt is refused as already settled or replays it, and
    the clearing accounts hold the positions once."""
    if db_backend == "sqlite":
        pytest.skip("SQLite serialises writers: no race to run")
    w = scenario.world
    w.clock.now = NOV_END + timedelta(hours=1)
    keys = ["nov-0", "nov-1", "nov-2", "nov-3", "nov-0"]
    outcomes = race(len(keys), lambda n: settle(w, keys[n]),
                    (AlreadySettledError, ConcurrencyError))
    views = [o for o in outcomes if isinstance(o, SettlementView)]
    assert views, outcomes
    assert all(v == views[0] for v in views)
    assert len(views) == keys.count(views[0].idempotency_key), outcomes  # the winner's key
    assert all(isinstance(o, (SettlementView, AlreadySettledError)) for o in outcomes), outcomes
    assert w.bank.find_settlement(PROGRAMME, start=NOV) == views[0]
    assert {u: cleared(w, u) for u in SITES} == NET_OF_SITES


def test_a_level_coarser_than_the_programmes_root(db_url: str) -> None:
    """A programme rooted at a city has no province: at province level the whole programme
    is one unit, so its report and its settlement work and post nothing."""
    w = fresh(db_url, Clock())
    try:
        w.bank.create_programme("nanjing", "Nanjing time bank", policy=POLICY,
                                root_region="nanjing-city", root_region_name="Nanjing",
                                root_level="city", administrator="nj-admin",
                                administrator_name="Nanjing administrator")
        w.bank.add_site("nanjing", "gulou-sw", "Gulou station", kind="social_work_station",
                        region="nanjing-city", operator="nj-admin")
        seen = w.bank.clearing("nanjing", start=NOV, end=DEC, level="province")
        assert (seen.flows, seen.positions, seen.redeemed_minutes) == ((), (), 0)
        w.clock.now = NOV_END
        done = w.bank.settle("nj-nov", programme="nanjing", start=NOV, end=DEC,
                             level="province", operator="nj-admin")
        assert (done.redemptions, done.entry_ids) == (0, ())
        assert w.bank.clearing("nanjing", start=NOV, end=DEC, level="province").settlement_id == (
            done.id)
    finally:
        w.bank.dispose()


# --- the calendar a period may span -----------------------------------------------------------


def test_a_period_outside_the_calendar_is_refused(sqlite_url: str) -> None:
    """Policies apply from 1970-01-01: a period starting before it, or ending past 9999-01-01,
    is refused with InvalidInputError (never a raw database or overflow error), changing
    nothing."""
    w = fresh(sqlite_url, Clock())
    try:
        for start, end in ((date(1969, 12, 1), DEC), (date.min, DEC), (NOV, date.max)):
            with pytest.raises(InvalidInputError, match="between 1970-01-01"):
                w.bank.clearing(PROGRAMME, start=start, end=end)
            refused(w, InvalidInputError, partial(
                w.bank.settle, "k-calendar", programme=PROGRAMME, start=start, end=end,
                operator="admin"))
    finally:
        w.bank.dispose()
