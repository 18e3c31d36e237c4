"""A Nanjing-style programme (examples/presets.py): the storage cap, groups that only donate,
and a grant from the street's pool to an elder living alone.

Nanjing city > Gulou district > Hunan Road street, with a social-work station on the street
and a care home in the district. Xu Ying has volunteered at the street's day-care centre for
years and is 240 minutes short of the 1,500-hour cap: her next service is confirmed, and what
does not fit goes to the street's pool. A youth volunteer team may not spend its minutes, only
donate them; the pool then grants minutes to an elder of 86 who lives alone. The clock stands
still at 1 September 2026, so the output is the same on every run.

Run: python examples/nanjing_cap.py [sqlite:///path.db]
"""

from __future__ import annotations

import sys
import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from presets import nanjing

import timebank
from timebank.bank import ServiceView
from timebank.bank.models import ActsAs, MemberKind, age_on

NANJING = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 9, 1, 16, 0, tzinfo=NANJING)
PROGRAMME = "nanjing"
SECRET = b"example-secret-not-for-production"  # from your secret store, never the database
STREET = "hunan-road"  # the region whose pool receives the excess, donations, and grants
STATION = "hunan-sw"
HOME = "gulou-home"
CAP = 90_000

# Xu Ying's history: 187 eight-hour shifts of day care, one a day from 1 February 2026.
SHIFTS = 187
SHIFT_MINUTES = 480


def build(bank: timebank.TimeBank) -> None:
    bank.create_programme(
        PROGRAMME,
        "Nanjing elderly-care time bank",
        policy=nanjing(),  # the default catalogue: a minute served is a minute deposited
        root_region="nanjing",
        root_region_name="Nanjing city",
        root_level="city",
        administrator="nj-admin",
        administrator_name="City civil-affairs administrator",
    )
    bank.add_region(
        PROGRAMME, "gulou", "Gulou district", level="county", parent="nanjing", operator="nj-admin"
    )
    bank.add_region(
        PROGRAMME,
        STREET,
        "Hunan Road street",
        level="township",
        parent="gulou",
        operator="nj-admin",
    )
    bank.add_operator(
        PROGRAMME,
        "gulou-admin",
        "Gulou district administrator",
        roles=["administrator"],
        region="gulou",
        by="nj-admin",
    )
    bank.add_site(
        PROGRAMME,
        STATION,
        "Hunan Road social-work station",
        kind="social_work_station",
        region=STREET,
        operator="gulou-admin",
    )
    bank.add_site(
        PROGRAMME,
        HOME,
        "Gulou elderly-care home",
        kind="institution",
        region="gulou",
        operator="gulou-admin",
    )
    bank.add_operator(
        PROGRAMME,
        "hunan-desk",
        "Station desk",
        roles=["recorder", "confirmer"],
        site=STATION,
        by="gulou-admin",
    )
    bank.add_operator(
        PROGRAMME,
        "home-desk",
        "Care home front desk",
        roles=["redeemer"],
        site=HOME,
        by="gulou-admin",
    )


class Street:
    def __init__(self, bank: timebank.TimeBank) -> None:
        self.bank = bank
        self.ids: dict[str, int] = {}

    def register(
        self, name: str, identity: str, born: date, *, kind: MemberKind = "person", acts_as: ActsAs
    ) -> int:
        member = self.bank.register_member(
            PROGRAMME,
            identity=identity,
            display_name=name,
            birth_date=born,  # a group's founding date
            home_site=STATION,
            operator="hunan-desk",
            kind=kind,
            acts_as=acts_as,
        )
        self.ids[name] = member.id
        about = f"founded {born.year}" if kind == "group" else f"{age_on(born, NOW.date())} years"
        print(f"  member {member.id} {name:<11} {kind:<6} {about:<12} {acts_as}")
        return member.id

    def serve(
        self,
        key: str,
        volunteer: str,
        recipient: str,
        service_type: str,
        *,
        start: datetime,
        minutes: int,
    ) -> ServiceView:
        """Record a service and confirm it at the station desk."""
        service = self.bank.record_service(
            key,
            programme=PROGRAMME,
            volunteer_id=self.ids[volunteer],
            recipient_ids=[self.ids[recipient]],
            site=STATION,
            service_type=service_type,
            started_at=start,
            ended_at=start + timedelta(minutes=minutes),
            operator="hunan-desk",
        )
        return self.bank.confirm_service(service.id, operator="hunan-desk")

    def pool(self) -> int:
        """The street pool's minutes: its lots, and the same on the ledger."""
        lots = self.bank.pool_lots_total(PROGRAMME, STREET)
        account = self.bank.region(PROGRAMME, STREET).pool_account
        assert self.bank.ledger.balance(account).posted_minutes == lots
        return lots

    def members(self) -> None:
        print("Members of Hunan Road street")
        self.register("Xu Ying", "320106195804110027", date(1958, 4, 11), acts_as="both")
        self.register(
            "Youth team", "NJ-GL-VT-0042", date(2015, 3, 5), kind="group", acts_as="volunteer"
        )
        self.register("Granny Qian", "320106194002150046", date(1940, 2, 15), acts_as="recipient")
        self.register("Uncle Sun", "320106196107070031", date(1961, 7, 7), acts_as="recipient")
        self.register("Mr Zhou", "320106194411300017", date(1944, 11, 30), acts_as="recipient")

    def near_the_cap(self) -> None:
        print(f"\nXu Ying's years of service: {SHIFTS} day-care shifts of {SHIFT_MINUTES} min")
        first = datetime(2026, 2, 1, 8, 0, tzinfo=NANJING)
        for day in range(SHIFTS):
            start = first + timedelta(days=day)
            self.serve(
                f"hunan-dc-{start:%Y%m%d}",
                "Xu Ying",
                "Granny Qian",
                "day_care",
                start=start,
                minutes=SHIFT_MINUTES,
            )
        held = self.bank.member(self.ids["Xu Ying"]).balance_minutes
        assert held == SHIFTS * SHIFT_MINUTES == CAP - 240
        print(f"  she holds {held} min ({held / 60:.0f} h); the cap is {CAP} ({CAP // 60} h)")

        print("Today she gives Granny Qian 6 hours of body care")
        today = NOW.replace(hour=8)
        service = self.serve(
            "hunan-bc-20260901", "Xu Ying", "Granny Qian", "body_care", start=today, minutes=360
        )
        assert service.status == "confirmed"
        assert (service.credited_minutes, service.diverted_minutes) == (360, 120)
        print(
            f"  service {service.id} confirmed: {service.credited_minutes} min credited, "
            f"{service.credited_minutes - service.diverted_minutes} to her, "
            f"{service.diverted_minutes} diverted to the {STREET} pool"
        )
        print("An hour of company in the afternoon: at the cap, all of it goes to the pool")
        service = self.serve(
            "hunan-co-20260901",
            "Xu Ying",
            "Mr Zhou",
            "company",
            start=today.replace(hour=14),
            minutes=60,
        )
        assert service.diverted_minutes == service.credited_minutes == 60
        print(f"  service {service.id}: {service.diverted_minutes} of 60 min diverted")
        assert self.bank.member(self.ids["Xu Ying"]).balance_minutes == CAP
        pool = self.pool()
        assert pool == 180
        print(f"  Xu Ying holds {CAP} min, the cap; the pool holds {pool}")

    def the_group(self) -> None:
        print("\nThe youth team keeps Mr Zhou company; groups' minutes can only be donated")
        service = self.serve(
            "hunan-vt-20260901",
            "Youth team",
            "Mr Zhou",
            "company",
            start=NOW.replace(hour=9),
            minutes=120,
        )
        team = self.ids["Youth team"]
        print(f"  service {service.id}: the team earns {service.credited_minutes} min")
        try:
            self.bank.redeem(
                "gulou-home-20260901-team",
                programme=PROGRAMME,
                member_id=team,
                recipient_id=self.ids["Mr Zhou"],
                site=HOME,
                service_type="day_care",
                minutes=120,
                operator="home-desk",
            )
        except timebank.PolicyViolationError as refusal:
            print(f"  redemption refused: {refusal}")
        else:
            raise AssertionError("a group redeemed minutes under the Nanjing preset")
        donation = self.bank.donate(
            "hunan-donation-20260901-team",
            programme=PROGRAMME,
            member_id=team,
            minutes=120,
            operator="hunan-desk",
        )
        assert donation.region == STREET
        assert self.bank.member(team).balance_minutes == 0
        pool = self.pool()
        assert pool == 300
        print(f"  donation {donation.id}: {donation.minutes} min to the {STREET} pool, now {pool}")

    def the_grant(self) -> None:
        print("\nThe district records who has priority, and the pool grants minutes")
        qian, sun, zhou = (self.ids[name] for name in ("Granny Qian", "Uncle Sun", "Mr Zhou"))
        self.bank.set_member_attributes(qian, {"living_alone"}, operator="gulou-admin")
        self.bank.set_member_attributes(sun, {"disabled", "low_income"}, operator="gulou-admin")
        names = {member_id: name for name, member_id in self.ids.items()}
        candidates = self.bank.grant_candidates(PROGRAMME, STREET)
        for candidate in candidates:
            print(
                f"  priority {candidate.priority}: {names[candidate.member_id]:<11} "
                f"{candidate.age} years, holds {candidate.balance_minutes} min"
            )
        # Mr Zhou is 81 but does not live alone: no rule matches him.
        assert [(c.member_id, c.priority) for c in candidates] == [(qian, 0), (sun, 1)]
        try:
            self.bank.grant(
                "gulou-grant-20260901-zhou",
                programme=PROGRAMME,
                region=STREET,
                member_id=zhou,
                minutes=120,
                operator="gulou-admin",
            )
        except timebank.PolicyViolationError as refusal:
            print(f"  grant refused: {refusal}")
        else:
            raise AssertionError("a grant reached a member no rule matches")
        grant = self.bank.grant(
            "gulou-grant-20260901-qian",
            programme=PROGRAMME,
            region=STREET,
            member_id=qian,
            minutes=240,
            operator="gulou-admin",
        )
        pool = self.pool()
        assert (self.bank.member(qian).balance_minutes, pool) == (240, 60)
        origins = sorted({lot.origin_site for lot in self.bank.lots(qian)})
        print(
            f"  grant {grant.id}: {grant.minutes} min to Granny Qian (earned at "
            f"{', '.join(origins)}); the pool keeps {pool}"
        )
        redemption = self.bank.redeem(
            "gulou-home-20260901-qian",
            programme=PROGRAMME,
            member_id=qian,
            site=HOME,
            service_type="day_care",
            minutes=180,
            operator="home-desk",
        )
        assert self.bank.member(qian).balance_minutes == 60
        print(f"  redemption {redemption.id}: Granny Qian spends 180 min on day care at {HOME}")

    def exposure(self) -> None:
        seen = self.bank.guarantee_exposure(PROGRAMME)
        assert seen.pool_minutes == self.pool()
        print(
            f"\nGuarantee exposure: members {seen.member_minutes} + pools {seen.pool_minutes}"
            f" = {seen.total_minutes} min"
        )


def main(url: str) -> None:
    ledger = timebank.Ledger.open(url, clock=lambda: NOW)
    bank = timebank.TimeBank(ledger, identity_secrets={PROGRAMME: SECRET})
    try:
        build(bank)
        street = Street(bank)
        street.members()
        street.near_the_cap()
        street.the_group()
        street.the_grant()
        street.exposure()
    finally:
        bank.dispose()


if __name__ == "__main__":
    default = f"sqlite:///{Path(tempfile.mkdtemp()) / 'nanjing_cap.db'}"
    main(sys.argv[1] if len(sys.argv) > 1 else default)
