"""A street station's week in Langfang: the time bank from registration to confirm_due, and
on the next Monday, the minutes spent: a gift, care at a care home, a donation.

Hebei province > Langfang city > Guangyang county > Xinyuan street, with a social-work station
and a volunteer service station on the street and a care home in the county. Volunteers serve
elderly neighbours from Monday to Sunday; on the following Monday a volunteer gives minutes to
his mother, who spends them on body care at the care home, another volunteer donates to the
street's pool, and the province reads its guarantee exposure. A clock the script moves stands
in for the calendar, so the output is the same on every run.

Run: python examples/langfang_week.py [sqlite:///path.db]
"""

from __future__ import annotations

import sys
import tempfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import timebank
from timebank.bank import ServiceView
from timebank.bank.models import ActsAs, RegionLevel, Role, SiteKind, age_on

CST = timezone(timedelta(hours=8), "CST")  # Langfang local time, no daylight saving
MONDAY = datetime(2026, 11, 2, 8, 0, tzinfo=CST)

PROGRAMME = "hebei"
# A real deployment loads this from its secret store: it never goes into the database.
SECRET = b"example-secret-not-for-production"

POLICY = timebank.Policy(
    service_types={
        "body_care": timebank.ServiceType(name="Body care", weight_permille=2000),
        "chat": timebank.ServiceType(name="Keeping company", weight_permille=1500),
        "shopping": timebank.ServiceType(name="Shopping", weight_permille=1000),
    },
    confirmations_required=1,
    auto_confirm_after_minutes=48 * 60,  # unanswered services confirm themselves after 2 days
    timezone="Asia/Shanghai",  # the calendar of lots' earned days and of exposure by date
    # The defaults of part 2 apply: care is redeemed from 60 (or with an assessed need) by the
    # depositor only, and gifts go to a spouse, parent or child.
)

SW = "xinyuan-sw"  # the social-work station
VOL = "xinyuan-vol"  # the volunteer service station

# (code, name, level, parent), below the root region Hebei.
REGIONS: list[tuple[str, str, RegionLevel, str]] = [
    ("langfang", "Langfang city", "city", "hebei"),
    ("guangyang", "Guangyang county", "county", "langfang"),
    ("xinyuan", "Xinyuan street", "township", "guangyang"),
]
# (code, name, kind, region)
SITES: list[tuple[str, str, SiteKind, str]] = [
    (SW, "Xinyuan street social-work station", "social_work_station", "xinyuan"),
    (VOL, "Xinyuan street volunteer service station", "volunteer_station", "xinyuan"),
    ("sunrise", "Sunrise elderly-care home", "institution", "guangyang"),
]
# (code, name, roles, site); the county administrator adds them.
OPERATORS: list[tuple[str, str, list[Role], str]] = [
    ("sw-rec", "Social-work station recorder", ["recorder"], SW),
    ("sw-conf", "Social-work station confirmer", ["confirmer"], SW),
    ("vol-desk", "Volunteer station desk", ["recorder", "confirmer"], VOL),
    ("sunrise-desk", "Sunrise front desk", ["redeemer"], "sunrise"),
]
# name -> (made-up identity number, birth date, acts as, home station). Never printed.
PEOPLE: dict[str, tuple[str, date, ActsAs, str]] = {
    "Wang Fang": ("131003196503150026", date(1965, 3, 15), "volunteer", SW),
    "Li Jun": ("131003197911020014", date(1979, 11, 2), "volunteer", VOL),
    "Zhao Min": ("131003196208080047", date(1962, 8, 8), "both", SW),
    "Grandma Chen": ("131003193604010028", date(1936, 4, 1), "recipient", SW),
    "Grandpa Liu": ("131003194012120011", date(1940, 12, 12), "recipient", SW),
}
# Li Jun's mother registers the next Monday, at her son's volunteer station.
MOTHER = ("Sun Guilan", "131003194905200021", date(1949, 5, 20))


class WeekClock:
    """The injected clock: time stands still until the script moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def day(self, number: int, hour: int) -> str:
        """Move to ``hour`` o'clock of day ``number`` (0 is Monday); returns the day's title."""
        self.now = MONDAY.replace(hour=hour) + timedelta(days=number)
        return self.now.strftime("%A %d %B")


def build(bank: timebank.TimeBank) -> None:
    """The programme, its regions, sites and operators."""
    bank.create_programme(
        PROGRAMME,
        "Hebei elderly-care time bank",
        policy=POLICY,
        root_region="hebei",
        root_region_name="Hebei province",
        administrator="hebei-admin",
        administrator_name="Provincial civil-affairs administrator",
    )
    for code, name, level, parent in REGIONS:
        bank.add_region(PROGRAMME, code, name, level=level, parent=parent, operator="hebei-admin")
    bank.add_operator(
        PROGRAMME,
        "gy-admin",
        "Guangyang county administrator",
        roles=["administrator"],
        region="guangyang",
        by="hebei-admin",
    )
    for code, name, kind, region in SITES:
        bank.add_site(PROGRAMME, code, name, kind=kind, region=region, operator="gy-admin")
    for code, name, roles, site in OPERATORS:
        bank.add_operator(PROGRAMME, code, name, roles=roles, site=site, by="gy-admin")


class StreetWeek:
    def __init__(self, bank: timebank.TimeBank, clock: WeekClock) -> None:
        self.bank = bank
        self.clock = clock
        self.ids: dict[str, int] = {}
        self.names: dict[int, str] = {}
        self.issued_total = 0  # minutes the stations issued by Sunday evening

    def serve(  # noqa: PLR0917 - one argument per column of the service sheet
        self,
        key: str,
        volunteer: str,
        recipient: str,
        service_type: str,
        start: str,
        minutes: int,
        *,
        site: str = SW,
        operator: str = "sw-rec",
    ) -> ServiceView:
        """Record a service that started at ``start`` (local time) today."""
        hour, minute = (int(part) for part in start.split(":"))
        started = self.clock.now.replace(hour=hour, minute=minute)
        return self.bank.record_service(
            key,
            programme=PROGRAMME,
            volunteer_id=self.ids[volunteer],
            recipient_ids=[self.ids[recipient]],
            site=site,
            service_type=service_type,
            started_at=started,
            ended_at=started + timedelta(minutes=minutes),
            operator=operator,
        )

    def show(self, service: ServiceView, what: str) -> None:
        served = f"{self.names[service.volunteer_id]} -> {self.names[service.recipient_ids[0]]}"
        print(
            f"  service {service.id} {service.service_type:<9} {served:<27} "
            f"{service.raw_minutes:>3} min x {service.weight_permille / 1000:.1f} = "
            f"{service.credited_minutes:>3}  {what}"
        )

    def monday(self) -> None:
        print(f"{self.clock.day(0, 8)}: the desks open; five members register")
        for name, (identity, born, acts_as, home) in PEOPLE.items():
            member = self.bank.register_member(
                PROGRAMME,
                identity=identity,  # stored only as a keyed hash
                display_name=name,
                birth_date=born,
                home_site=home,
                operator="sw-rec" if home == SW else "vol-desk",
                acts_as=acts_as,
            )
            self.ids[name], self.names[member.id] = member.id, name
            print(f"  member {member.id} {name:<13} {acts_as:<9} at {home}")
        self.clock.now = self.clock.now.replace(hour=12)
        s = self.serve("sw-2026-11-02-01", "Wang Fang", "Grandma Chen", "shopping", "10:00", 60)
        self.show(s, "recorded")
        # Grandma Chen confirms at the desk; the recorder enters her confirmation.
        s = self.bank.confirm_service(
            s.id, operator="sw-rec", recipient_id=self.ids["Grandma Chen"]
        )
        self.show(s, "confirmed by the recipient")

    def tuesday(self) -> None:
        print(f"{self.clock.day(1, 17)}: body care, and a retry over a flaky connection")
        sheet = ("vol-2026-11-03-01", "Li Jun", "Grandpa Liu", "body_care", "14:00", 90)
        s = self.serve(*sheet, site=VOL, operator="vol-desk")
        again = self.serve(*sheet, site=VOL, operator="vol-desk")  # same key, same content
        assert again.id == s.id
        self.show(s, "recorded (sent twice, stored once)")
        s = self.bank.confirm_service(s.id, operator="vol-desk")
        self.show(s, "confirmed by vol-desk")

    def wednesday(self) -> None:
        print(f"{self.clock.day(2, 16)}: keeping company; a desk outside its station is refused")
        s = self.serve("sw-2026-11-04-01", "Zhao Min", "Grandma Chen", "chat", "14:00", 45)
        self.show(s, "recorded (67.5 rounds down to 67)")
        try:
            self.bank.confirm_service(s.id, operator="vol-desk")
        except timebank.PermissionDeniedError as refusal:
            print(f"  refused: {refusal}")
        s = self.bank.confirm_service(s.id, operator="sw-conf")
        self.show(s, "confirmed by sw-conf")

    def thursday(self) -> None:
        print(f"{self.clock.day(3, 18)}: a record the station does not accept")
        s = self.serve("sw-2026-11-05-01", "Wang Fang", "Grandpa Liu", "body_care", "09:00", 180)
        self.show(s, "recorded")
        reason = "Grandpa Liu was at the clinic that morning"
        s = self.bank.reject_service(s.id, reason=reason, operator="sw-conf")
        self.show(s, f"rejected: {s.reason}")

    def friday(self) -> None:
        print(f"{self.clock.day(4, 17)}: two records for one afternoon")
        s = self.serve("sw-2026-11-06-01", "Wang Fang", "Grandpa Liu", "shopping", "14:00", 60)
        self.show(s, "recorded; nobody confirms it")
        try:
            self.serve("sw-2026-11-06-02", "Wang Fang", "Grandma Chen", "chat", "14:30", 60)
        except timebank.OverlappingServiceError as refusal:
            print(f"  refused: {refusal} (Wang Fang cannot be in two places)")

    def saturday(self) -> None:
        print(f"{self.clock.day(5, 12)}: a Saturday visit")
        s = self.serve("sw-2026-11-07-01", "Zhao Min", "Grandpa Liu", "chat", "10:00", 50)
        self.show(s, "recorded; nobody confirms it")

    def sunday(self) -> None:
        print(f"{self.clock.day(6, 20)}: the weekly sweep of unanswered services")
        swept = self.bank.confirm_due(PROGRAMME, as_of=self.clock.now, operator="sw-conf")
        print(f"  confirm_due: {swept} confirmed (ended over two days ago); Saturday's waits")

    def report(self) -> None:
        print("\nBalances on Sunday evening")
        members_total = 0
        for name, member_id in self.ids.items():
            member = self.bank.member(member_id)
            lots = self.bank.lots(member_id)
            assert sum(lot.remaining_minutes for lot in lots) == member.balance_minutes
            members_total += member.balance_minutes
            detail = ", ".join(
                f"{lot.remaining_minutes} from {lot.origin_site} ({lot.earned_on:%a})"
                for lot in lots
            )
            print(f"  {name:<13} {member.balance_minutes:>4} min  {detail or 'no lots'}")
        issued_total = 0
        for code in (SW, VOL):
            account = self.bank.site(PROGRAMME, code).issued_account
            assert account is not None  # stations issue minutes; institutions do not
            issued = self.bank.ledger.balance(account).posted_minutes
            issued_total += issued
            print(f"  {account:<26} {issued:>5} min")
        assert members_total == -issued_total, (members_total, issued_total)
        print(f"  members hold {members_total} min; the stations issued {issued_total}")
        self.issued_total = -issued_total

    def next_monday(self) -> None:
        print(f"\n{self.clock.day(7, 11)}: minutes spent: a gift, care at Sunrise, a donation")
        li, wang = self.ids["Li Jun"], self.ids["Wang Fang"]
        name, identity, born = MOTHER
        mother = self.bank.register_member(
            PROGRAMME,
            identity=identity,
            display_name=name,
            birth_date=born,
            home_site=VOL,
            operator="vol-desk",
            acts_as="recipient",
        )
        self.ids[name], self.names[mother.id] = mother.id, name
        self.bank.relate(li, mother.id, "child", operator="vol-desk")  # Li Jun is her child
        age = age_on(born, self.clock.now.date())
        print(f"  member {mother.id} {name} ({age}) registers; Li Jun is recorded as her child")
        # Minutes pay for the depositor's own care, from 60: Li Jun (47) cannot spend them on
        # his mother at the care home, nor yet on himself.
        for recipient in (mother.id, li):
            try:
                self.bank.redeem(
                    f"sunrise-2026-11-09-li-{recipient}",
                    programme=PROGRAMME,
                    member_id=li,
                    recipient_id=recipient,
                    site="sunrise",
                    service_type="body_care",
                    minutes=90,
                    operator="sunrise-desk",
                )
            except timebank.PolicyViolationError as refusal:
                print(f"  refused at Sunrise: {refusal}")
        # So he gives her minutes: a mother is a "parent", a direct relative.
        gift = self.bank.give(
            "vol-2026-11-09-gift-01",
            programme=PROGRAMME,
            giver_id=li,
            receiver_id=mother.id,
            minutes=120,
            operator="vol-desk",
        )
        assert self.bank.member(li).balance_minutes == 60
        print(f"  gift {gift.id}: Li Jun -> {name} {gift.minutes} min (Li Jun keeps 60)")
        # She spends 90 of them on body care at the care home, a county institution.
        redemption = self.bank.redeem(
            "sunrise-2026-11-09-01",
            programme=PROGRAMME,
            member_id=mother.id,
            site="sunrise",
            service_type="body_care",
            minutes=90,
            operator="sunrise-desk",
        )
        origins = {lot.id: lot for lot in self.bank.lots(mother.id, open_only=False)}
        paid = ", ".join(
            f"{minutes} of lot {lot_id} (earned at {origins[lot_id].origin_site}, "
            f"{origins[lot_id].earned_on:%a %d %b})"
            for lot_id, minutes in redemption.lots
        )
        assert self.bank.member(mother.id).balance_minutes == 30
        print(f"  redemption {redemption.id} at sunrise: {redemption.minutes} min of body care")
        print(f"    paid with {paid}; she keeps 30")
        # Wang Fang donates half an hour to the pool of her street (her home station's region).
        donation = self.bank.donate(
            "sw-2026-11-09-donation-01",
            programme=PROGRAMME,
            member_id=wang,
            minutes=30,
            operator="sw-rec",
        )
        pool = self.bank.pool_lots_total(PROGRAMME, "xinyuan")
        assert (donation.region, pool) == ("xinyuan", 30)
        print(f"  donation {donation.id}: Wang Fang -> the {donation.region} pool 30 min")
        print(f"    the pool holds {pool} min, granted later to elders the policy favours")

    def exposure(self) -> None:
        print("\nGuarantee exposure: the minutes the province stands behind")
        sunday = self.bank.guarantee_exposure(PROGRAMME, at=date(2026, 11, 8))
        now = self.bank.guarantee_exposure(PROGRAMME)
        for title, seen in (("Sunday, end of day", sunday), ("Monday, now", now)):
            print(
                f"  {title:<18} members {seen.member_minutes:>4} + pools {seen.pool_minutes:>3}"
                f" = {seen.total_minutes:>4} min ({seen.members_with_balance} members hold any)"
            )
        redeemed_account = self.bank.site(PROGRAMME, "sunrise").redeemed_account
        redeemed = self.bank.ledger.balance(redeemed_account).posted_minutes
        print(f"  {redeemed_account} {redeemed} min: minutes retired for care")
        assert (sunday.total_minutes, sunday.pool_minutes) == (self.issued_total, 0)
        assert (now.member_minutes, now.pool_minutes) == (self.issued_total - 90 - 30, 30)
        assert now.total_minutes == self.issued_total - redeemed
        print(f"  issued {self.issued_total} - redeemed {redeemed} = {now.total_minutes} owed")


def main(url: str) -> None:
    clock = WeekClock(MONDAY)
    ledger = timebank.Ledger.open(url, clock=clock)
    bank = timebank.TimeBank(ledger, identity_secrets={PROGRAMME: SECRET})
    try:
        build(bank)
        week = StreetWeek(bank, clock)
        week.monday()
        week.tuesday()
        week.wednesday()
        week.thursday()
        week.friday()
        week.saturday()
        week.sunday()
        week.report()
        week.next_monday()
        week.exposure()
    finally:
        bank.dispose()


if __name__ == "__main__":
    default = f"sqlite:///{Path(tempfile.mkdtemp()) / 'langfang_week.db'}"
    main(sys.argv[1] if len(sys.argv) > 1 else default)
