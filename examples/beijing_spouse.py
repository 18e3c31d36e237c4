"""A Beijing-style programme (examples/presets.py): a husband's minutes pay for his wife's care.

Beijing city > Chaoyang district > Jianwai street, with a social-work station on the street
and a care home in the district. Zhang Wei (57) serves a neighbour through the winter. He is
too young to redeem for himself, even once assessed in need: Beijing's rule is "60+ and in
need", both. His wife Liu Hua (62), assessed in need, may: under Beijing's rules "the volunteer
or spouse" redeems. She receives care at home, paid with his minutes; then a day at the care home
is booked (120 minutes held) and completed for the 90 minutes she stayed: the rest is released.
A gift to a friend is refused: gifts go to direct relatives only. The clock is moved by the
script, so the output is the same on every run.

Run: python examples/beijing_spouse.py [sqlite:///path.db]
"""

from __future__ import annotations

import sys
import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from presets import beijing

import timebank
from timebank.bank.models import ActsAs

BEIJING = ZoneInfo("Asia/Shanghai")
PROGRAMME = "beijing"
SECRET = b"example-secret-not-for-production"  # from your secret store, never the database
STATION = "jianwai-sw"
HOME = "chaoyang-home"

# The station's sheets: (day, start hour, service type, minutes), Zhang Wei -> Auntie Ma.
SHEETS = [
    (date(2026, 2, 2), 9, "body_care", 120),
    (date(2026, 2, 9), 9, "errands", 90),
    (date(2026, 2, 16), 14, "company", 120),
    (date(2026, 2, 23), 9, "body_care", 120),
]
EARNED = sum(minutes for *_, minutes in SHEETS)  # the default catalogue weighs every type 1


class Clock:
    """The injected clock: time stands still until the script moves it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def build(bank: timebank.TimeBank) -> None:
    bank.create_programme(
        PROGRAMME,
        "Beijing elderly-care time bank",
        policy=beijing(),
        root_region="beijing",
        root_region_name="Beijing city",
        root_level="city",
        administrator="bj-admin",
        administrator_name="City civil-affairs administrator",
    )
    bank.add_region(
        PROGRAMME,
        "chaoyang",
        "Chaoyang district",
        level="county",
        parent="beijing",
        operator="bj-admin",
    )
    bank.add_region(
        PROGRAMME,
        "jianwai",
        "Jianwai street",
        level="township",
        parent="chaoyang",
        operator="bj-admin",
    )
    bank.add_site(
        PROGRAMME,
        STATION,
        "Jianwai street social-work station",
        kind="social_work_station",
        region="jianwai",
        operator="bj-admin",
    )
    bank.add_site(
        PROGRAMME,
        HOME,
        "Chaoyang elderly-care home",
        kind="institution",
        region="chaoyang",
        operator="bj-admin",
    )
    # The station records, confirms, and redeems minutes for care given at home.
    bank.add_operator(
        PROGRAMME,
        "jianwai-desk",
        "Station desk",
        roles=["recorder", "confirmer", "redeemer"],
        site=STATION,
        by="bj-admin",
    )
    bank.add_operator(
        PROGRAMME, "home-desk", "Care home front desk", roles=["redeemer"], site=HOME, by="bj-admin"
    )


class Household:
    def __init__(self, bank: timebank.TimeBank, clock: Clock) -> None:
        self.bank = bank
        self.clock = clock
        self.ids: dict[str, int] = {}

    def register(self, name: str, identity: str, born: date, acts_as: ActsAs) -> int:
        member = self.bank.register_member(
            PROGRAMME,
            identity=identity,
            display_name=name,
            birth_date=born,
            home_site=STATION,
            operator="jianwai-desk",
            acts_as=acts_as,
        )
        self.ids[name] = member.id
        return member.id

    def balance(self) -> str:
        member = self.bank.member(self.ids["Zhang Wei"])
        return f"{member.balance_minutes} min, {member.held_minutes} held"

    def winter(self) -> None:
        self.clock.now = datetime(2026, 3, 2, 10, 0, tzinfo=BEIJING)
        print("Jianwai street, winter 2026")
        zhang = self.register("Zhang Wei", "110105196804120035", date(1968, 4, 12), "both")
        liu = self.register("Liu Hua", "110105196309300044", date(1963, 9, 30), "recipient")
        self.register("Auntie Ma", "110105195001180022", date(1950, 1, 18), "recipient")
        self.bank.relate(zhang, liu, "spouse", operator="jianwai-desk")
        print("  Zhang Wei (57) and his wife Liu Hua (62) register; the desk records the marriage")
        for day, hour, service_type, minutes in SHEETS:
            start = datetime.combine(day, datetime.min.time(), BEIJING).replace(hour=hour)
            service = self.bank.record_service(
                f"jianwai-{day:%Y%m%d}-zhang",
                programme=PROGRAMME,
                volunteer_id=zhang,
                recipient_ids=[self.ids["Auntie Ma"]],
                site=STATION,
                service_type=service_type,
                started_at=start,
                ended_at=start + timedelta(minutes=minutes),
                operator="jianwai-desk",
            )
            service = self.bank.confirm_service(service.id, operator="jianwai-desk")
            print(f"  {day:%a %d %b}: {service_type:<9} for Auntie Ma, {minutes} min confirmed")
        assert self.bank.member(zhang).balance_minutes == EARNED
        print(f"  Zhang Wei holds {self.balance()}")

    def care_at_home(self) -> None:
        zhang, liu = self.ids["Zhang Wei"], self.ids["Liu Hua"]
        print(f"\n{self.clock.now:%A %d %B}: care paid with Zhang Wei's minutes")
        # The district assesses Zhang Wei in need of care. Under the preset, need does
        # not stand in for age: "once 60+ and in need", and the library checks both.
        self.bank.set_assessed_need(zhang, in_need=True, operator="bj-admin")
        print("  Zhang Wei hurt his back: the district records him as in need of care")
        try:
            self.bank.redeem(
                "jianwai-20260302-zhang",
                programme=PROGRAMME,
                member_id=zhang,
                site=STATION,
                service_type="body_care",
                minutes=60,
                operator="jianwai-desk",
            )
        except timebank.PolicyViolationError as refusal:
            print(f"  for himself, refused: {refusal}")
        else:
            raise AssertionError("a 57-year-old redeemed under the Beijing preset")
        # His wife is 62 but not yet assessed in need: refused until she is.
        try:
            self.bank.redeem(
                "jianwai-20260302-liu",
                programme=PROGRAMME,
                member_id=zhang,
                recipient_id=liu,
                site=STATION,
                service_type="body_care",
                minutes=60,
                operator="jianwai-desk",
            )
        except timebank.PolicyViolationError as refusal:
            print(f"  for Liu Hua before her assessment, refused: {refusal}")
        else:
            raise AssertionError("a recipient not assessed in need redeemed under the preset")
        self.bank.set_assessed_need(liu, in_need=True, operator="bj-admin")
        print("  the district assesses Liu Hua in need of care")
        # His wife is 62 and in need: his minutes pay for her care (spouse_redeems).
        redemption = self.bank.redeem(
            "jianwai-20260302-liu",
            programme=PROGRAMME,
            member_id=zhang,
            recipient_id=liu,
            site=STATION,
            service_type="body_care",
            minutes=60,
            operator="jianwai-desk",
        )
        assert (redemption.member_id, redemption.recipient_id) == (zhang, liu)
        assert self.bank.member(zhang).balance_minutes == EARNED - 60
        assert self.bank.member(liu).balance_minutes == 0  # she pays nothing herself
        print(f"  redemption {redemption.id}: 60 min of body care at home for Liu Hua")
        print(f"  Zhang Wei holds {self.balance()}")

    def day_at_the_care_home(self) -> None:
        zhang, liu = self.ids["Zhang Wei"], self.ids["Liu Hua"]
        wednesday = datetime(2026, 3, 4, 9, 0, tzinfo=BEIJING)
        print(f"\n{self.clock.now:%A %d %B}: a day of care booked for {wednesday:%A} at {HOME}")
        booking = self.bank.book(
            "chaoyang-20260304-liu",
            programme=PROGRAMME,
            member_id=zhang,
            recipient_id=liu,
            site=HOME,
            service_type="day_care",
            minutes=120,
            scheduled_at=wednesday,
            operator="home-desk",
        )
        assert booking.status == "booked"
        assert self.bank.member(zhang).held_minutes == 120
        print(f"  booking {booking.id}: {booking.minutes} min held; Zhang Wei: {self.balance()}")
        free = EARNED - 60 - 120
        try:  # held minutes cannot be spent twice
            self.bank.redeem(
                "jianwai-20260302-liu-2",
                programme=PROGRAMME,
                member_id=zhang,
                recipient_id=liu,
                site=STATION,
                service_type="errands",
                minutes=free + 60,
                operator="jianwai-desk",
            )
        except timebank.LimitExceededError as refusal:
            available = refusal.available_minutes
            print(f"  another {free + 60} min for Liu Hua refused: only {available} are free")
        else:
            raise AssertionError("held minutes were spent twice")
        assert available == free

        self.clock.now = wednesday.replace(hour=12)
        print(f"{self.clock.now:%A %d %B}: Liu Hua goes home after 90 minutes")
        booking = self.bank.complete_booking(booking.id, minutes=90, operator="home-desk")
        assert (booking.status, booking.redeemed_minutes) == ("completed", 90)
        zhang_now = self.bank.member(zhang)
        assert (zhang_now.balance_minutes, zhang_now.held_minutes) == (EARNED - 60 - 90, 0)
        print(
            f"  booking {booking.id} {booking.status}: {booking.redeemed_minutes} of "
            f"{booking.minutes} min redeemed, the other {booking.minutes - 90} released"
        )
        print(f"  Zhang Wei holds {self.balance()}")

    def gifts(self) -> None:
        zhang, ma = self.ids["Zhang Wei"], self.ids["Auntie Ma"]
        print("\nGifts go to direct relatives only")
        self.bank.relate(zhang, ma, "friend", operator="jianwai-desk")
        try:
            self.bank.give(
                "jianwai-20260304-gift-ma",
                programme=PROGRAMME,
                giver_id=zhang,
                receiver_id=ma,
                minutes=30,
                operator="jianwai-desk",
            )
        except timebank.PolicyViolationError as refusal:
            print(f"  to Auntie Ma, refused: {refusal}")
        else:
            raise AssertionError("a gift reached a friend under the Beijing preset")
        seen = self.bank.guarantee_exposure(PROGRAMME)
        assert seen.total_minutes == EARNED - 60 - 90
        print(f"\nGuarantee exposure: {seen.total_minutes} min, all Zhang Wei's")


def main(url: str) -> None:
    clock = Clock(datetime(2026, 2, 1, 8, 0, tzinfo=BEIJING))
    ledger = timebank.Ledger.open(url, clock=clock)
    bank = timebank.TimeBank(ledger, identity_secrets={PROGRAMME: SECRET})
    try:
        build(bank)
        household = Household(bank, clock)
        household.winter()
        household.care_at_home()
        household.day_at_the_care_home()
        household.gifts()
    finally:
        bank.dispose()


if __name__ == "__main__":
    default = f"sqlite:///{Path(tempfile.mkdtemp()) / 'beijing_spouse.db'}"
    main(sys.argv[1] if len(sys.argv) > 1 else default)
