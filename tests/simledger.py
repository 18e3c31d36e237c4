"""A seeded random time bank for the report tests, and the ledger's own sums to check the
reports against.

:func:`simulate` drives the world of :mod:`tests.bankworld` for a few hundred operations
over about two months of its clock: services recorded and confirmed at every station,
redemptions at the institution and at stations, gifts between relatives, donations,
grants, bookings (completed, cancelled or left to lapse), expiry sweeps, a reversed
service and deliberate refusals (caught and counted).

:class:`LedgerFacts` reads the tables with plain SQL (no code of the reports) and sums
postings in Python, so the reports are checked against an independent computation.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy import Engine

from tests.bankworld import POLICY, PROGRAMME, World
from timebank import TimebankError
from timebank.bank import Policy, TimeBank
from timebank.schema import UTCDateTime

ZONE = "Asia/Shanghai"

#: The policy of the simulation: lots expire, a storage cap diverts its excess to the
#: pool, spouses redeem, and the calendar is Langfang's (UTC+8), not UTC.
SIM_POLICY: Policy = POLICY.model_copy(
    update={
        "lot_expiry_days": 21,
        "timezone": ZONE,
        "storage_cap_minutes": 900,
        "cap_excess": "pool",
        "spouse_redeems": True,
    }
)

#: Station -> (recorder, confirmer).
STATIONS: dict[str, tuple[str, str]] = {
    "xinyuan-sw": ("rec-sw", "conf-sw"),
    "xinyuan-vol": ("rec-vol", "rec-vol"),
    "anci-sw": ("rec-anci", "rec-anci"),
}

#: Who redeems at a site, and who administers a region's pool.
REDEEMERS: dict[str, str] = {"sunrise": "sunrise-op", "xinyuan-sw": "gy-admin", "anci-sw": "admin"}
POOL_ADMINS: dict[str, str] = {
    "xinyuan": "gy-admin",
    "guangyang": "gy-admin",
    "anci": "admin",
    "langfang-city": "admin",
    "hebei": "admin",
}


@dataclass(frozen=True)
class Person:
    name: str
    born: date
    sex: str | None
    home: str
    acts_as: str = "both"


#: Members registered at the start of the simulation (the world's four come with it).
FIRST: tuple[Person, ...] = (
    Person("mei", date(1952, 4, 9), "female", "xinyuan-sw"),
    Person("gang", date(1985, 8, 30), "male", "xinyuan-sw"),
    Person("hua", date(1970, 1, 17), None, "xinyuan-vol"),
    Person("ling", date(1948, 12, 24), "female", "xinyuan-vol"),
    Person("sun", date(1975, 6, 1), "female", "anci-sw"),
    Person("qiang", date(1962, 11, 20), "male", "anci-sw"),
    Person("nainai", date(1941, 2, 2), "female", "anci-sw", "recipient"),
)
#: Members who join while it runs.
LATER: tuple[Person, ...] = (
    Person("jun", date(1999, 3, 3), "male", "xinyuan-vol"),
    Person("fang", date(1958, 7, 7), "female", "anci-sw"),
    Person("bo", date(1966, 10, 10), "male", "xinyuan-sw"),
)
#: (member, other, what member is to other): gifts go both ways along these.
RELATIONS: tuple[tuple[str, str, str], ...] = (
    ("wang", "grandma", "child"),
    ("li", "zhao", "spouse"),
    ("gang", "mei", "child"),
    ("hua", "ling", "child"),
    ("sun", "qiang", "spouse"),
    ("sun", "nainai", "child"),
)
SPOUSES = {
    **{a: b for a, b, kind in RELATIONS if kind == "spouse"},
    **{b: a for a, b, kind in RELATIONS if kind == "spouse"},
}
SERVICE_TYPES = ("body_care", "shopping", "chat")


def midnight(day: date) -> datetime:
    """The instant the day begins in the simulation's calendar (UTC+8), computed here."""
    return datetime.combine(day, time(), ZoneInfo(ZONE)).astimezone(UTC)


def local_day(moment: datetime) -> date:
    return moment.astimezone(ZoneInfo(ZONE)).date()


@dataclass
class Simulation:
    world: World
    rng: random.Random
    started_at: datetime
    outcomes: Counter[str] = field(default_factory=Counter)
    homes: dict[str, str] = field(default_factory=dict)
    acts_as: dict[str, str] = field(default_factory=dict)
    confirmed: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    bookings: list[int] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    waiting: list[Person] = field(default_factory=lambda: list(LATER))
    accounts: dict[str, str] = field(default_factory=dict)
    serial: int = 0

    @property
    def bank(self) -> TimeBank:
        return self.world.bank

    @property
    def now(self) -> datetime:
        return self.world.clock.now

    def key(self, kind: str) -> str:
        self.serial += 1
        return f"{kind}-{self.serial}"

    def attempt(self, kind: str, act: Callable[[], object]) -> object | None:
        """Run one operation; a refusal of the library is counted and the run goes on."""
        try:
            done = act()
        except TimebankError as exc:
            self.outcomes[f"{kind} refused ({type(exc).__name__})"] += 1
            return None
        self.outcomes[kind] += 1
        return done

    def member(self, name: str) -> int:
        return self.world.members[name]

    def names(self, *, volunteers: bool = False) -> list[str]:
        return [
            n for n in self.world.members
            if not volunteers or self.acts_as.get(n, "both") != "recipient"
        ]

    def balance(self, name: str) -> int:
        """The minutes the member may spend (roughly: a lapsed booking may still count)."""
        if name not in self.accounts:
            self.accounts[name] = self.bank.member(self.member(name)).account
        return self.bank.ledger.balance(self.accounts[name]).available_minutes

    # --- the operations -------------------------------------------------------------------

    def register(self, person: Person) -> None:
        recorder = STATIONS[person.home][0]
        self.world.register(person.name, born=person.born, sex=person.sex,
                            home_site=person.home, operator=recorder, acts_as=person.acts_as)
        self.homes[person.name] = person.home
        self.acts_as[person.name] = person.acts_as
        self.outcomes["register"] += 1

    def serve(self) -> None:
        rng = self.rng
        site = rng.choice(list(STATIONS))
        recorder, confirmer = STATIONS[site]
        volunteer = rng.choice(self.names(volunteers=True))
        recipient = rng.choice([n for n in self.names() if n != volunteer])
        minutes = rng.randrange(15, 241, 5)
        # Mostly done just now; sometimes days before it is recorded (the period of a
        # deposit is the day it was recorded, not the day of the service).
        late = rng.choice([0, 0, 0, 0, 1, 3]) * 24 * 60
        ago = timedelta(minutes=minutes + late + rng.randrange(10, 120))
        start = self.now - ago
        view = self.attempt("record", lambda: self.bank.record_service(
            self.key("s"), programme=PROGRAMME, volunteer_id=self.member(volunteer),
            recipient_ids=[self.member(recipient)], site=site,
            service_type=rng.choice(SERVICE_TYPES), started_at=start,
            ended_at=start + timedelta(minutes=minutes), operator=recorder))
        if view is None:
            return
        service_id: int = view.id  # type: ignore[attr-defined]
        if rng.random() < 0.2:
            self.pending.append(service_id)  # left for confirm_due, or never confirmed
            return
        done = self.attempt("confirm", lambda: self.bank.confirm_service(
            service_id, operator=confirmer))
        if done is not None and done.status == "confirmed":  # type: ignore[attr-defined]
            self.confirmed.append(service_id)

    def confirm_due(self) -> None:
        for _recorder, confirmer in STATIONS.values():
            self.attempt("confirm_due", lambda c=confirmer: self.bank.confirm_due(  # type: ignore[misc]
                PROGRAMME, as_of=self.now, operator=c))

    def redeem(self) -> None:
        rng = self.rng
        name = rng.choice(self.names())
        free = self.balance(name)
        minutes = rng.randint(1, max(1, free)) if rng.random() < 0.85 else free + rng.randint(1, 60)
        site = rng.choices(list(REDEEMERS), weights=(7, 2, 1))[0]
        recipient = None
        if name in SPOUSES and rng.random() < 0.5:
            recipient = self.member(SPOUSES[name])
        occurred = self.now - timedelta(hours=rng.choice([0, 0, 0, 20, 50]))  # entered late
        self.attempt("redeem", lambda: self.bank.redeem(
            self.key("r"), programme=PROGRAMME, member_id=self.member(name), site=site,
            service_type=rng.choice(SERVICE_TYPES), minutes=minutes,
            operator=REDEEMERS[site], recipient_id=recipient, occurred_at=occurred))

    def give(self) -> None:
        rng = self.rng
        if rng.random() < 0.15:  # to a stranger: refused
            giver, receiver = rng.sample(self.names(), 2)
        else:
            giver, receiver = rng.choice(self.pairs)
        minutes = rng.randint(1, max(1, self.balance(giver)))
        self.attempt("give", lambda: self.bank.give(
            self.key("g"), programme=PROGRAMME, giver_id=self.member(giver),
            receiver_id=self.member(receiver), minutes=minutes,
            operator=STATIONS[self.homes[giver]][0]))

    def donate(self) -> None:
        rng = self.rng
        name = rng.choice(self.names())
        minutes = rng.randint(1, max(1, self.balance(name) // 2))
        region = rng.choice([None, None, "anci", "guangyang", "langfang-city"])
        self.attempt("donate", lambda: self.bank.donate(
            self.key("d"), programme=PROGRAMME, member_id=self.member(name), minutes=minutes,
            operator=STATIONS[self.homes[name]][0], region=region))

    def grant(self) -> None:
        rng = self.rng
        # Mostly the pools donations go to (the members' home regions).
        region = rng.choice(["xinyuan", "xinyuan", "anci", "anci", *POOL_ADMINS])
        # An elder of 80 living under the region; sometimes mei (72: no grant rule matches)
        # or an elder of another county (a pool grants to its own): refusals.
        elders = {"xinyuan": ["grandma"], "guangyang": ["grandma"], "anci": ["nainai"]}.get(
            region, ["grandma", "nainai"])
        elder = rng.choice(elders) if rng.random() < 0.85 else rng.choice(["mei", "nainai"])
        available = self.bank.pool_lots_total(PROGRAMME, region)
        minutes = rng.randint(1, max(1, available))
        self.attempt("grant", lambda: self.bank.grant(
            self.key("gr"), programme=PROGRAMME, region=region, member_id=self.member(elder),
            minutes=minutes, operator=POOL_ADMINS[region]))

    def book(self) -> None:
        rng = self.rng
        name = rng.choice(self.names())
        free = self.balance(name)
        if free <= 0:
            return
        scheduled = self.now + timedelta(hours=rng.randint(1, 30))
        done = self.attempt("book", lambda: self.bank.book(
            self.key("b"), programme=PROGRAMME, member_id=self.member(name), site="sunrise",
            service_type="body_care", minutes=rng.randint(1, free), scheduled_at=scheduled,
            operator="sunrise-op"))
        if done is not None:
            self.bookings.append(done.id)  # type: ignore[attr-defined]
            if rng.random() < 0.4:  # the care is given the same day
                self.world.clock.advance(minutes=rng.randint(10, 300))
                self.settle_booking()

    def settle_booking(self) -> None:
        """Complete (for at most the held minutes) or cancel the latest booking; older ones
        may have lapsed (a refusal)."""
        rng = self.rng
        if not self.bookings:
            return
        booking_id = self.bookings.pop(-1 if rng.random() < 0.8 else 0)
        held = self.bank.booking(booking_id).minutes
        if rng.random() < 0.75:
            minutes = rng.randint(1, held)
            self.attempt("complete", lambda: self.bank.complete_booking(
                booking_id, operator="sunrise-op", minutes=minutes))
        else:
            self.attempt("cancel", lambda: self.bank.cancel_booking(
                booking_id, reason="not needed", operator="sunrise-op"))

    def expire(self) -> None:
        self.attempt("expire", lambda: self.bank.expire(
            PROGRAMME, as_of=self.now, operator="admin"))

    def reverse(self) -> None:
        """An administrator reverses a confirmed service: the latest ones first, as the
        earlier may have been spent (a refusal)."""
        for _ in range(5):
            if not self.confirmed:
                return
            service_id = self.confirmed.pop()
            if self.attempt("reverse", lambda s=service_id: self.bank.reverse_service(  # type: ignore[misc]
                    s, reason="entered by mistake", operator="admin")) is not None:
                return

    def die(self, name: str) -> None:
        """The member dies: bookings released, minutes to the pool (nobody designated)."""
        admin = "admin" if self.homes[name] == "anci-sw" else "gy-admin"
        self.attempt("estate", lambda: self.bank.set_member_status(
            self.member(name), "deceased", reason="passed away", operator=admin))

    def join(self) -> None:
        if self.waiting:
            self.register(self.waiting.pop(0))


def simulate(world: World, seed: int, operations: int = 250) -> Simulation:
    """Run ``operations`` random operations on ``world``, moving its clock on by ten
    minutes to eleven hours before each (about two months for 250 of them)."""
    sim = Simulation(world, random.Random(seed), world.clock.now)
    bank = world.bank
    bank.set_policy(PROGRAMME, SIM_POLICY, effective_from=world.clock.now, operator="admin")
    for name in ("wang", "li", "zhao", "grandma"):
        sim.homes[name] = "xinyuan-sw"
    sim.acts_as["grandma"] = "recipient"
    world.clock.advance(minutes=30)
    for person in FIRST:
        sim.register(person)
    for a, b, kind in RELATIONS:
        bank.relate(world.members[a], world.members[b], kind,  # type: ignore[arg-type]
                    operator=STATIONS[sim.homes[a]][0])
        sim.pairs += [(a, b), (b, a)]
    choices: list[tuple[Callable[[], None], int]] = [
        (sim.serve, 40), (sim.redeem, 14), (sim.give, 8), (sim.donate, 6), (sim.grant, 5),
        (sim.book, 6), (sim.settle_booking, 6), (sim.expire, 3), (sim.confirm_due, 2),
        (sim.join, 1),
    ]
    acts, weights = zip(*choices, strict=True)
    reverse_at = {operations // 3, 2 * operations // 3}
    for step in range(operations):
        world.clock.advance(minutes=sim.rng.randint(10, 660))
        if step in reverse_at:
            sim.reverse()
        if step == 4 * operations // 5:
            sim.die(sim.rng.choice(["qiang", "hua", "zhao"]))
        sim.rng.choices(acts, weights=weights)[0]()
    world.clock.advance(hours=1)
    # A booking still live at the end (the richest member who may redeem), so statements
    # show minutes held.
    for name in sorted(sim.names(), key=sim.balance, reverse=True):
        free = sim.balance(name)
        if free > 0 and sim.attempt("book", lambda n=name, m=free: bank.book(  # type: ignore[misc]
            sim.key("b"), programme=PROGRAMME, member_id=world.members[n], site="sunrise",
            service_type="shopping", minutes=m,
            scheduled_at=world.clock.now + timedelta(days=2), operator="sunrise-op")):
            break
    return sim


# --- the ledger's sums, read with plain SQL -------------------------------------------------


@dataclass(frozen=True)
class Posting:
    entry_id: int
    account_id: int
    amount: int
    recorded_at: datetime
    code: str


@dataclass(frozen=True)
class Region:
    id: int
    code: str
    level: str
    parent_id: int | None
    pool_account_id: int


@dataclass(frozen=True)
class Site:
    id: int
    code: str
    kind: str
    region_id: int
    issued_account_id: int | None
    redeemed_account_id: int


@dataclass(frozen=True)
class Service:
    id: int
    site_id: int
    volunteer_id: int
    recorded_at: datetime
    credited: int
    deposited_at: datetime | None
    recipients: frozenset[int]


class LedgerFacts:
    """Everything the report checks need, read once with plain SQL; sums in Python."""

    def __init__(self, engine: Engine) -> None:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT p.entry_id, p.account_id, p.amount_minutes, p.recorded_at, e.code"
                    " FROM tb_postings p JOIN tb_entries e ON e.id = p.entry_id"
                    " ORDER BY p.recorded_at, p.entry_id"
                ).columns(recorded_at=UTCDateTime())
            ).all()
            self.postings = [Posting(int(r[0]), int(r[1]), int(r[2]), r[3], r[4]) for r in rows]
            self.regions = {
                int(r[0]): Region(int(r[0]), r[1], r[2], r[3], int(r[4]))
                for r in conn.execute(sa.text(
                    "SELECT id, code, level, parent_id, pool_account_id FROM tb_regions"))
            }
            self.sites = {
                int(r[0]): Site(int(r[0]), r[1], r[2], int(r[3]), r[4], int(r[5]))
                for r in conn.execute(sa.text(
                    "SELECT id, code, kind, region_id, issued_account_id, redeemed_account_id"
                    " FROM tb_sites"))
            }
            self.members = {
                int(r[0]): (int(r[1]), int(r[2]), r[3])  # account, home site, status
                for r in conn.execute(sa.text(
                    "SELECT id, account_id, home_site_id, status FROM tb_members"))
            }
            recipients: defaultdict[int, set[int]] = defaultdict(set)
            for service_id, member_id in conn.execute(sa.text(
                    "SELECT service_id, member_id FROM tb_service_recipients")):
                recipients[int(service_id)].add(int(member_id))
            self.services = [
                Service(int(r[0]), int(r[1]), int(r[2]), r[3], int(r[4]), r[5],
                        frozenset(recipients[int(r[0])]))
                for r in conn.execute(
                    sa.text(
                        "SELECT s.id, s.site_id, s.volunteer_id, s.recorded_at,"
                        " s.credited_minutes, e.recorded_at AS deposited_at"
                        " FROM tb_services s LEFT JOIN tb_entries e"
                        " ON e.id = s.deposit_entry_id"
                    ).columns(recorded_at=UTCDateTime(), deposited_at=UTCDateTime())
                )
            ]
            self.redemptions = [
                (int(r[0]), int(r[1]), r[2])  # site, minutes, recorded
                for r in conn.execute(
                    sa.text(
                        "SELECT r.site_id, r.minutes, e.recorded_at FROM tb_redemptions r"
                        " JOIN tb_entries e ON e.id = r.entry_id"
                    ).columns(recorded_at=UTCDateTime())
                )
            ]
        self.site_by_code = {s.code: s for s in self.sites.values()}
        self.region_by_code = {r.code: r for r in self.regions.values()}

    # --- scopes -----------------------------------------------------------------------------

    def regions_under(self, code: str) -> set[int]:
        top = self.region_by_code[code].id
        found = {top}
        grew = True
        while grew:
            more = {r.id for r in self.regions.values() if r.parent_id in found} - found
            found |= more
            grew = bool(more)
        return found

    def sites_of(self, kind: str, code: str) -> set[int]:
        if kind == "site":
            return {self.site_by_code[code].id}
        under = self.regions_under(code)
        return {s.id for s in self.sites.values() if s.region_id in under}

    def member_accounts(self, site_ids: Iterable[int]) -> set[int]:
        chosen = set(site_ids)
        return {account for account, home, _ in self.members.values() if home in chosen}

    def pool_accounts(self, region_code: str) -> set[int]:
        return {self.regions[r].pool_account_id for r in self.regions_under(region_code)}

    # --- sums -------------------------------------------------------------------------------

    def in_period(self, start_at: datetime, end_at: datetime) -> list[Posting]:
        return [p for p in self.postings if start_at <= p.recorded_at < end_at]

    def balance(self, accounts: Iterable[int], before: datetime) -> int:
        chosen = set(accounts)
        return sum(p.amount for p in self.postings
                   if p.account_id in chosen and p.recorded_at < before)

    def flows(self, accounts: Iterable[int], start_at: datetime, end_at: datetime,
              code: str) -> tuple[int, int]:
        """Minutes that entered and (as a positive number) left ``accounts`` in the period,
        by entries of ``code``."""
        chosen = set(accounts)
        moved = [p.amount for p in self.in_period(start_at, end_at)
                 if p.account_id in chosen and p.code == code]
        return sum(a for a in moved if a > 0), -sum(a for a in moved if a < 0)

    def net_by_code(self, accounts: Iterable[int], start_at: datetime,
                    end_at: datetime) -> dict[str, int]:
        chosen = set(accounts)
        net: defaultdict[str, int] = defaultdict(int)
        for p in self.in_period(start_at, end_at):
            if p.account_id in chosen:
                net[p.code] += p.amount
        return {code: minutes for code, minutes in sorted(net.items()) if minutes}

    def deposited(self, site_ids: Iterable[int], start_at: datetime, end_at: datetime) -> int:
        issued = {self.sites[s].issued_account_id for s in site_ids} - {None}
        return -sum(p.amount for p in self.in_period(start_at, end_at)
                    if p.account_id in issued and p.code == "deposit")

    def redeemed(self, site_ids: Iterable[int], start_at: datetime, end_at: datetime) -> int:
        accounts = {self.sites[s].redeemed_account_id for s in site_ids}
        return sum(p.amount for p in self.in_period(start_at, end_at)
                   if p.account_id in accounts)

    def deposits_of(self, site_ids: Iterable[int], start_at: datetime,
                    end_at: datetime) -> list[Service]:
        chosen = set(site_ids)
        return [s for s in self.services if s.site_id in chosen and s.deposited_at is not None
                and start_at <= s.deposited_at < end_at]

    def recorded(self, site_ids: Iterable[int], start_at: datetime, end_at: datetime) -> int:
        chosen = set(site_ids)
        return sum(1 for s in self.services
                   if s.site_id in chosen and start_at <= s.recorded_at < end_at)

    def account_postings(self, account: int, start_at: datetime,
                         end_at: datetime) -> list[Posting]:
        return sorted((p for p in self.in_period(start_at, end_at) if p.account_id == account),
                      key=lambda p: p.entry_id)
