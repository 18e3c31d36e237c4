"""A sample province ledger for analysis: four months of a made-up Hebei time bank.

Hebei province > Langfang and Baoding cities > four districts (counties) > six streets and
towns (townships), each with a station, and a care home in each city. Young-old volunteers
(55 to 75) serve old-old neighbours (75 to 95) day by day at their stations; services are
confirmed at the desk by the recipient or, two days later, by the daily sweep; a few are
rejected. Volunteers of 60 and over spend minutes on their own care, a few volunteers give
minutes to their parents, who spend them at the care homes, some donate to their street's
pool, and once a month each pool grants minutes to the elders the policy favours (80 and
living alone, then 85 and over). Lots expire 60 days after they were earned; the weekly
sweep moves what is left of them to the programme's expired account.

Everything goes through the public API with a clock the script moves, and every random
choice comes from one seeded generator, so a seed always builds the same ledger (the same
ids, minutes and times). It is the data source of ``examples/analysis.ipynb`` and
``examples/plots.py``::

    from sample_ledger import build
    bank = build("sqlite:///sample.db", seed=7, members=80, days=120)

Run: python examples/sample_ledger.py [sqlite:///path.db]
"""

from __future__ import annotations

import random
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import timebank
from timebank.bank import GrantRule
from timebank.bank.models import ActsAs, RegionLevel, Role, Sex, SiteKind, age_on

PROGRAMME = "hebei"
# A real deployment loads this from its secret store: it never goes into the database.
SECRET = b"example-secret-not-for-production"
ZONE = ZoneInfo("Asia/Shanghai")
#: The first day of the sample (a Monday); the ledger's clock starts on it.
START = date(2026, 3, 2)
ADMIN = "hebei-admin"

POLICY = timebank.Policy(
    service_types={
        "body_care": timebank.ServiceType(name="Body care", weight_permille=2000),
        "chat": timebank.ServiceType(name="Keeping company", weight_permille=1500),
        "shopping": timebank.ServiceType(name="Shopping", weight_permille=1000),
        "cleaning": timebank.ServiceType(name="Cleaning", weight_permille=1000),
    },
    confirmations_required=1,
    auto_confirm_after_minutes=48 * 60,  # unanswered services confirm after two days
    timezone="Asia/Shanghai",
    lot_expiry_days=60,
    expired_to="programme",
    gift_yearly_limit_minutes=3_000,
    grant_rules=(
        GrantRule(min_age=80, attributes=frozenset({"living_alone"})),
        GrantRule(min_age=85),
    ),
)

# (code, name, level, parent), below the root region Hebei.
REGIONS: list[tuple[str, str, RegionLevel, str]] = [
    ("langfang", "Langfang city", "city", "hebei"),
    ("guangyang", "Guangyang district", "county", "langfang"),
    ("xinyuan", "Xinyuan street", "township", "guangyang"),
    ("yinhe", "Yinhe street", "township", "guangyang"),
    ("anci", "Anci district", "county", "langfang"),
    ("yangshuiwu", "Yangshuiwu town", "township", "anci"),
    ("baoding", "Baoding city", "city", "hebei"),
    ("lianchi", "Lianchi district", "county", "baoding"),
    ("dongguan", "Dongguan street", "township", "lianchi"),
    ("nanguan", "Nanguan street", "township", "lianchi"),
    ("jingxiu", "Jingxiu district", "county", "baoding"),
    ("xiyuan", "Xiyuan street", "township", "jingxiu"),
]


@dataclass(frozen=True)
class Site:
    code: str
    name: str
    kind: SiteKind
    region: str
    city: str


SITES = [
    Site("xinyuan-sw", "Xinyuan social-work station", "social_work_station", "xinyuan",
         "langfang"),
    Site("yinhe-vol", "Yinhe volunteer station", "volunteer_station", "yinhe", "langfang"),
    Site("yangshuiwu-cs", "Yangshuiwu community station", "community_station", "yangshuiwu",
         "langfang"),
    Site("dongguan-sw", "Dongguan social-work station", "social_work_station", "dongguan",
         "baoding"),
    Site("nanguan-vol", "Nanguan volunteer station", "volunteer_station", "nanguan", "baoding"),
    Site("xiyuan-cs", "Xiyuan community station", "community_station", "xiyuan", "baoding"),
    Site("sunrise-home", "Sunrise care home", "institution", "guangyang", "langfang"),
    Site("lianchi-home", "Lianchi care home", "institution", "lianchi", "baoding"),
]
STATIONS = [site for site in SITES if site.kind != "institution"]
HOMES = {site.city: site for site in SITES if site.kind == "institution"}

# Service types with their (shortest, longest) minutes and how often they are asked for.
DURATIONS = {"chat": (30, 120), "shopping": (30, 90), "body_care": (45, 150), "cleaning": (60, 150)}
TYPE_WEIGHTS = {"chat": 4, "shopping": 3, "body_care": 2, "cleaning": 2}
SURNAMES = ["Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu", "Xu",
            "Sun", "Ma", "Zhu", "Hu", "Guo", "He", "Gao", "Lin", "Luo"]
GIVEN = ["Fang", "Jun", "Min", "Lan", "Wei", "Hua", "Ying", "Qiang", "Xia", "Ping", "Gang",
         "Yan", "Li", "Jie", "Hong", "Ming", "Guilan", "Shufen", "Jianguo", "Xiuying"]


def desk(site: str) -> str:
    """The operator code of a site's desk."""
    return f"{site}-desk"


class SampleClock:
    """The injected clock: time stands still until the script moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def at(self, day: date, hour: int, minute: int = 0) -> datetime:
        """Move to ``hour``:``minute`` of ``day``, local time (never backwards)."""
        moment = datetime.combine(day, time(hour, minute), ZONE)
        assert moment >= self.now, (moment, self.now)
        self.now = moment
        return moment


@dataclass
class Person:
    id: int
    account: str
    born: date
    acts_as: ActsAs
    home: Site
    parents: list[int] = field(default_factory=list)


@dataclass
class Province:
    """The sample being built: the bank, its clock, the generator and who is who."""

    bank: timebank.TimeBank
    clock: SampleClock
    rng: random.Random
    people: dict[int, Person] = field(default_factory=dict)

    # --- setting up --------------------------------------------------------------------

    def organise(self) -> None:
        bank = self.bank
        bank.create_programme(
            PROGRAMME,
            "Hebei elderly-care time bank (sample)",
            policy=POLICY,
            root_region="hebei",
            root_region_name="Hebei province",
            administrator=ADMIN,
            administrator_name="Provincial civil-affairs administrator",
        )
        for code, name, level, parent in REGIONS:
            bank.add_region(PROGRAMME, code, name, level=level, parent=parent, operator=ADMIN)
        for site in SITES:
            bank.add_site(PROGRAMME, site.code, site.name, kind=site.kind, region=site.region,
                          operator=ADMIN)
            roles: list[Role] = (
                ["redeemer"] if site.kind == "institution"
                else ["recorder", "confirmer", "redeemer"]
            )
            bank.add_operator(PROGRAMME, desk(site.code), f"{site.name} desk", roles=roles,
                              site=site.code, by=ADMIN)

    def register(self, count: int) -> None:
        """``count`` members: a little over half of them volunteers (55 to 75), the others
        elders (75 to 95) who receive care; most declare their sex."""
        rng = self.rng
        volunteers = max(2, round(count * 0.55))
        for number in range(count):
            volunteer = number < volunteers
            age = rng.randint(55, 75) if volunteer else rng.randint(75, 95)
            born = START - timedelta(days=age * 365 + rng.randint(1, 360))
            acts_as: ActsAs = (
                ("both" if rng.random() < 0.3 else "volunteer") if volunteer else "recipient"
            )
            female = 0.62 if volunteer else 0.58  # more women volunteer, and live longer
            roll = rng.random()
            sex: Sex | None = "female" if roll < female * 0.9 else "male" if roll < 0.9 else None
            home = rng.choice(STATIONS)
            member = self.bank.register_member(
                PROGRAMME,
                identity=f"SAMPLE-{number:05d}",  # stored only as a keyed hash
                display_name=f"{rng.choice(SURNAMES)} {rng.choice(GIVEN)}",
                birth_date=born,
                home_site=home.code,
                operator=desk(home.code),
                acts_as=acts_as,
                sex=sex,
            )
            self.people[member.id] = Person(member.id, member.account, born, acts_as, home)

    def families(self) -> None:
        """Some volunteers of 55 to 65 are the children of elders of 80 and over in their
        city; a third of the elders of 80 and over live alone."""
        rng = self.rng
        elders = [p for p in self.people.values() if p.acts_as == "recipient"]
        for elder in elders:
            if self.age(elder) >= 80 and rng.random() < 0.35:
                self.bank.set_member_attributes(elder.id, {"living_alone"}, operator=ADMIN)
        children = [
            p for p in self.people.values() if p.acts_as != "recipient" and self.age(p) <= 65
        ]
        for child in children:
            parents = [
                e for e in elders if e.home.city == child.home.city and self.age(e) >= 80
                and self.age(e) - self.age(child) >= 20
            ]
            if parents and rng.random() < 0.4:
                parent = rng.choice(parents)
                self.bank.relate(child.id, parent.id, "child", operator=desk(child.home.code))
                child.parents.append(parent.id)

    # --- a day ---------------------------------------------------------------------------

    def age(self, person: Person, on: date | None = None) -> int:
        return age_on(person.born, on or START)

    def balance(self, person: Person) -> int:
        # One read of the ledger (bank.member() would read the whole member view).
        return self.bank.ledger.balance(person.account).posted_minutes

    def serve(self, day: date) -> None:
        """Each station records the day's services at 18:00; recipients confirm one in
        six at the desk, the desk rejects a few, and the daily sweep confirms the rest
        two days after they ended."""
        rng = self.rng
        self.clock.at(day, 18)
        weekend = day.weekday() >= 5
        busy: set[int] = set()
        volunteers = [p for p in self.people.values() if p.acts_as != "recipient"]
        receivers = [p for p in self.people.values() if p.acts_as != "volunteer"]
        types, weights = list(TYPE_WEIGHTS), list(TYPE_WEIGHTS.values())
        for station in STATIONS:
            count = rng.choice((0, 0, 1) if weekend else (0, 1, 1, 1, 2))
            local = [p for p in volunteers if p.home.city == station.city and p.id not in busy]
            near = [p for p in receivers if p.home.city == station.city]
            for number in range(count):
                own = [p for p in local if p.home is station and p.id not in busy]
                pool = own if own and rng.random() < 0.8 else local
                pool = [p for p in pool if p.id not in busy]
                if not pool:
                    break
                volunteer = rng.choice(pool)
                others = [p for p in near if p.id != volunteer.id]
                if not others:
                    break
                recipient = rng.choice(others)
                busy.add(volunteer.id)
                kind = rng.choices(types, weights)[0]
                low, high = DURATIONS[kind]
                start = datetime.combine(day, time(rng.randint(8, 15), rng.choice((0, 15, 30))),
                                         ZONE)
                service = self.bank.record_service(
                    f"{station.code}-{day:%Y%m%d}-{number + 1:02d}",
                    programme=PROGRAMME,
                    volunteer_id=volunteer.id,
                    recipient_ids=[recipient.id],
                    site=station.code,
                    service_type=kind,
                    started_at=start,
                    ended_at=start + timedelta(minutes=rng.randrange(low, high + 1, 5)),
                    operator=desk(station.code),
                    rating=rng.choice((4, 5, 5, None)),
                )
                roll = rng.random()
                if roll < 0.03:
                    self.bank.reject_service(service.id, reason="not confirmed by the family",
                                             operator=desk(station.code))
                elif roll < 0.2:
                    self.bank.confirm_service(service.id, operator=desk(station.code),
                                              recipient_id=recipient.id)
        self.clock.at(day, 18, 30)
        self.bank.confirm_due(PROGRAMME, as_of=self.clock.now, operator=ADMIN)

    def redeem(self, day: date, spenders: list[Person]) -> None:
        """At 19:00 a few members of 60 and over spend minutes on care: elders mostly at
        their city's care home, volunteers mostly at a station."""
        rng = self.rng
        self.clock.at(day, 19)
        for person in rng.sample(spenders, min(4, len(spenders))):
            if self.age(person, day) < 60:
                continue
            balance = self.balance(person)
            wanted = rng.choice((60, 90, 120, 180))
            if balance < 30:
                continue
            elder = person.acts_as == "recipient"
            if rng.random() < (0.75 if elder else 0.3):
                site = HOMES[person.home.city]
            else:
                city = [s for s in STATIONS if s.city == person.home.city]
                site = person.home if rng.random() < 0.6 else rng.choice(city)
            self.bank.redeem(
                f"{site.code}-{day:%Y%m%d}-m{person.id}",
                programme=PROGRAMME,
                member_id=person.id,
                site=site.code,
                service_type=rng.choice(("body_care", "chat", "cleaning")),
                minutes=min(balance, wanted),
                operator=desk(site.code),
            )

    def monthly(self, day: date) -> None:
        """On the 28th: children give minutes to their parents, a few volunteers donate to
        their street's pool, and each street's pool grants minutes to its elders."""
        rng = self.rng
        self.clock.at(day, 20)
        for person in self.people.values():
            for parent in person.parents:
                balance = self.balance(person)
                if balance >= 120 and rng.random() < 0.7:
                    self.bank.give(
                        f"gift-{day:%Y%m}-{person.id}-{parent}",
                        programme=PROGRAMME,
                        giver_id=person.id,
                        receiver_id=parent,
                        minutes=min(balance // 2, 300),
                        operator=desk(person.home.code),
                    )
            if person.acts_as != "recipient" and rng.random() < 0.15:
                balance = self.balance(person)
                if balance >= 200:
                    self.bank.donate(
                        f"donation-{day:%Y%m}-{person.id}",
                        programme=PROGRAMME,
                        member_id=person.id,
                        minutes=rng.choice((60, 90, 120)),
                        operator=desk(person.home.code),
                    )
        self.clock.at(day, 20, 30)
        for station in STATIONS:
            left = self.bank.pool_lots_total(PROGRAMME, station.region)
            for candidate in self.bank.grant_candidates(PROGRAMME, station.region, limit=3):
                minutes = min(left, 120)
                if minutes < 30:
                    break
                self.bank.grant(
                    f"grant-{day:%Y%m}-{station.region}-{candidate.member_id}",
                    programme=PROGRAMME,
                    region=station.region,
                    member_id=candidate.member_id,
                    minutes=minutes,
                    operator=ADMIN,
                )
                left -= minutes

    def weekly(self, day: date) -> None:
        """Sunday evening: lots past their expiry day leave their holders."""
        self.clock.at(day, 21)
        self.bank.expire(PROGRAMME, as_of=self.clock.now, operator=ADMIN)


def build(url: str, *, seed: int = 7, members: int = 80, days: int = 120) -> timebank.TimeBank:
    """Build the sample in the empty database at ``url`` and return the bank, open on it
    (its ledger's clock stands at the last evening; call ``dispose()`` when done). The same
    ``seed``, ``members`` and ``days`` always build the same ledger."""
    if members < 2 or days < 1:
        raise ValueError("the sample needs at least 2 members and 1 day")
    clock = SampleClock(datetime.combine(START, time(8), ZONE))
    bank = timebank.TimeBank(
        timebank.Ledger.open(url, clock=clock), identity_secrets={PROGRAMME: SECRET}
    )
    try:
        province = Province(bank, clock, random.Random(seed))
        province.organise()
        province.register(members)
        province.families()
        people = list(province.people.values())
        for offset in range(days):
            day = START + timedelta(days=offset)
            province.serve(day)
            spenders = [
                p for p in people
                if (p.acts_as != "recipient" and province.age(p, day) >= 60)
                or (p.acts_as == "recipient" and offset >= 28)
            ]
            province.redeem(day, spenders)
            if day.day == 28:
                province.monthly(day)
            if day.weekday() == 6:
                province.weekly(day)
    except BaseException:
        bank.dispose()
        raise
    return bank


def main(url: str) -> None:
    bank = build(url)
    try:
        ledger = bank.ledger
        trial = ledger.trial_balance()
        print(f"Sample ledger at {url}: {PROGRAMME}, {START} to {ledger.clock():%Y-%m-%d}")
        for account_type, minutes in sorted(trial.by_type_minutes.items()):
            print(f"  {account_type:<20} {minutes:>8} min")
        print(f"  {'total':<20} {trial.total_minutes:>8} min (always 0)")
        report = ledger.verify()
        print(f"  {report.entries} entries, {report.postings} postings; verified: {report.ok}")
        assert report.ok
        assert trial.total_minutes == 0
    finally:
        bank.dispose()


if __name__ == "__main__":
    default = f"sqlite:///{Path(tempfile.mkdtemp()) / 'sample_ledger.db'}"
    main(sys.argv[1] if len(sys.argv) > 1 else default)
