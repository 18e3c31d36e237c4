"""Building the simulated programme, and the little the simulation remembers of it."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import partial
from typing import TypeVar
from zoneinfo import ZoneInfo

from timebank.bank.api import TimeBank
from timebank.bank.models import ActsAs, Role, Sex, SiteKind, age_on
from timebank.errors import TimebankError
from timebank.simulation.progress import Progress
from timebank.simulation.scenario import Scenario

T = TypeVar("T")

#: The identity secret of simulated programmes (the simulation's identities are made up).
SIMULATION_SECRET = b"timebank-simulation: made-up identities, not a production secret"
ADMIN = "admin"
STATION_KINDS: tuple[SiteKind, ...] = (
    "social_work_station",
    "volunteer_station",
    "community_station",
)
SURNAMES = ("Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu")
GIVEN = ("Fang", "Jun", "Min", "Lan", "Wei", "Hua", "Ying", "Qiang", "Xia", "Ping")


@dataclass(slots=True)
class Member:
    """What the simulation keeps of a member: about a hundred bytes."""

    index: int
    id: int
    account: str
    acts_as: ActsAs
    station: int
    #: Age on the first day (programme calendar).
    age: int
    spouse: int = -1
    parent: int = -1


@dataclass
class Station:
    index: int
    code: str
    township: str
    desk: str
    #: (site code, desk operator) of the care homes of the station's county.
    institutions: tuple[tuple[str, str], ...]
    members: list[int] = field(default_factory=list)
    volunteers: list[int] = field(default_factory=list)
    receivers: list[int] = field(default_factory=list)
    #: Members of 60 and over: they may redeem and book for themselves.
    elders: list[int] = field(default_factory=list)
    #: Members with a parent or spouse to give to.
    givers: list[int] = field(default_factory=list)
    #: Bookings still open: (booking id, held minutes, desk of the care home).
    bookings: list[tuple[int, int, str]] = field(default_factory=list)


@dataclass
class Tally:
    """Counts of one stretch of work (a station's day, or the evening's sweeps)."""

    counts: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def merge(self, other: Tally) -> None:
        self.counts.update(other.counts)
        self.refusals.update(other.refusals)
        self.problems.extend(other.problems[: max(0, 50 - len(self.problems))])

    def attempt(self, kind: str, act: Callable[[], T]) -> T | None:
        """Run one command; a refusal of the library is counted by its class and the run
        goes on. Anything else (an untyped error) propagates: that is a bug."""
        self.counts["operations"] += 1
        try:
            done = act()
        except TimebankError as exc:
            self.refusals[type(exc).__name__] += 1
            return None
        self.counts[kind] += 1
        return done

    def succeeds(self, kind: str, act: Callable[[], object]) -> bool:
        """:meth:`attempt` for commands that answer ``None``: whether it was accepted."""
        before = self.counts[kind]
        self.attempt(kind, act)
        return self.counts[kind] > before

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)


@dataclass
class World:
    """The programme as the simulation knows it: codes, stations, members."""

    scenario: Scenario
    zone: ZoneInfo
    members: list[Member] = field(default_factory=list)
    stations: list[Station] = field(default_factory=list)
    townships: list[str] = field(default_factory=list)
    institutions: list[str] = field(default_factory=list)
    by_id: dict[int, int] = field(default_factory=dict)

    @property
    def code(self) -> str:
        return self.scenario.programme

    def moment(self, day: date, hour: int, minute: int = 0) -> datetime:
        return datetime.combine(day, time(hour, minute), self.zone)


def build(
    bank: TimeBank,
    scenario: Scenario,
    rng: random.Random,
    tally: Tally,
    progress: Progress | None = None,
) -> World:
    """Create the programme, its regions, sites, desks and members, and relate them;
    ``progress`` counts the members registered (a province's take minutes)."""
    world = World(scenario, ZoneInfo(scenario.policy.timezone))
    _organise(bank, world)
    _register(bank, world, rng, progress)
    _relate(bank, world, rng, tally)
    return world


def _organise(bank: TimeBank, world: World) -> None:
    code, shape = world.code, world.scenario.regions
    bank.create_programme(
        code,
        f"Simulated time bank {code}",
        policy=world.scenario.policy,
        root_region=f"{code}-p1",
        root_region_name="Simulated province",
        administrator=ADMIN,
        administrator_name="Simulation administrator",
    )
    for c in range(1, shape.cities + 1):
        city = f"{code}-c{c:02d}"
        bank.add_region(code, city, f"City {c}", level="city", parent=f"{code}-p1", operator=ADMIN)
        for k in range(1, shape.counties_per_city + 1):
            county = f"{city}-k{k:02d}"
            bank.add_region(
                code, county, f"County {c}.{k}", level="county", parent=city, operator=ADMIN
            )
            homes = tuple(
                (f"{county}-i{i:02d}", f"{county}-i{i:02d}-desk")
                for i in range(1, shape.institutions_per_county + 1)
            )
            for site, desk in homes:
                _site(
                    bank,
                    code,
                    site,
                    kind="institution",
                    region=county,
                    desk=desk,
                    roles=["redeemer"],
                )
                world.institutions.append(site)
            for t in range(1, shape.townships_per_county + 1):
                township = f"{county}-t{t:02d}"
                bank.add_region(
                    code,
                    township,
                    f"Township {c}.{k}.{t}",
                    level="township",
                    parent=county,
                    operator=ADMIN,
                )
                world.townships.append(township)
                for s in range(1, shape.stations_per_township + 1):
                    station = Station(
                        len(world.stations),
                        f"{township}-s{s:02d}",
                        township,
                        f"{township}-s{s:02d}-desk",
                        homes,
                    )
                    kind = STATION_KINDS[station.index % len(STATION_KINDS)]
                    _site(
                        bank,
                        code,
                        station.code,
                        kind=kind,
                        region=township,
                        desk=station.desk,
                        roles=["confirmer", "recorder", "redeemer"],
                    )
                    world.stations.append(station)


def _site(
    bank: TimeBank,
    programme: str,
    code: str,
    *,
    kind: SiteKind,
    region: str,
    desk: str,
    roles: list[Role],
) -> None:
    bank.add_site(programme, code, f"Site {code}", kind=kind, region=region, operator=ADMIN)
    bank.add_operator(programme, desk, f"Desk of {code}", roles=roles, site=code, by=ADMIN)


def _register(
    bank: TimeBank, world: World, rng: random.Random, progress: Progress | None
) -> None:
    people, start = world.scenario.population, world.scenario.start
    step = max(1, world.scenario.members // 1_000)  # redraw the bar a thousand times at most
    volunteers = max(1, round(world.scenario.members * people.volunteer_share))
    for number in range(world.scenario.members):
        volunteer = number < volunteers
        low, high = people.volunteer_ages if volunteer else people.recipient_ages
        born = start - timedelta(days=rng.randint(low, high) * 365 + rng.randint(1, 360))
        acts_as: ActsAs = (
            ("both" if rng.random() < people.both_share else "volunteer")
            if volunteer
            else "recipient"
        )
        female = people.female_share_volunteers if volunteer else people.female_share_recipients
        roll, declared = rng.random(), 1 - people.undeclared_sex_share
        sex: Sex | None = (
            "female" if roll < female * declared else "male" if roll < declared else None
        )
        station = world.stations[rng.randrange(len(world.stations))]
        view = bank.register_member(
            world.code,
            identity=f"SIM-{world.code}-{number:08d}",
            display_name=f"{rng.choice(SURNAMES)} {rng.choice(GIVEN)}",
            birth_date=born,
            home_site=station.code,
            operator=station.desk,
            acts_as=acts_as,
            sex=sex,
        )
        member = Member(number, view.id, view.account, acts_as, station.index, age_on(born, start))
        world.members.append(member)
        world.by_id[view.id] = number
        station.members.append(number)
        if acts_as != "recipient":
            station.volunteers.append(number)
        if acts_as != "volunteer":
            station.receivers.append(number)
        if member.age >= 60:
            station.elders.append(number)
        done = number + 1
        if progress is not None and (done % step == 0 or done == world.scenario.members):
            progress.update(done, operations=done)  # one registration, one operation
    if progress is not None:
        progress.close()


def _relate(bank: TimeBank, world: World, rng: random.Random, tally: Tally) -> None:
    """Spouses among the under-80s of a station, children (65 or under) of its elders of 80
    and over, and elders of 80 and over living alone."""
    people, members = world.scenario.population, world.members
    for station in world.stations:
        younger = [i for i in station.members if members[i].age < 80]
        rng.shuffle(younger)
        pairs = round(len(younger) * people.spouse_share / 2)
        for n in range(pairs):
            a, b = members[younger[2 * n]], members[younger[2 * n + 1]]
            relate = partial(bank.relate, a.id, b.id, "spouse", operator=station.desk)
            if tally.succeeds("relation", relate):
                a.spouse, b.spouse = b.index, a.index
        oldest = [i for i in station.members if members[i].age >= 80]
        for i in oldest:
            if rng.random() < people.living_alone_share:
                tally.attempt(
                    "attributes",
                    partial(
                        bank.set_member_attributes, members[i].id, {"living_alone"}, operator=ADMIN
                    ),
                )
        for i in station.volunteers:
            child = members[i]
            if child.age > 65 or not oldest or rng.random() >= people.child_share:
                continue
            parent = members[rng.choice(oldest)]
            relate = partial(bank.relate, child.id, parent.id, "child", operator=station.desk)
            if parent.age - child.age >= 18 and tally.succeeds("relation", relate):
                child.parent = parent.index
        station.givers = [
            i for i in station.members if members[i].parent >= 0 or members[i].spouse >= 0
        ]
