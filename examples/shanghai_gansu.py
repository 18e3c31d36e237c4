"""Two programmes, two databases: a Shanghai volunteer sends minutes to her mother in Gansu.

Shanghai (Shanghai city > Xuhui district, a community station) and Gansu (Gansu province >
Huining county, a community station and a care home) are independent time banks, each in its
own SQLite file. Each registers the other as a partner, with a trust line of 600 minutes and
one minute for one, and both hold the key they share to sign what travels between them (it
never enters either database). Chen Jing (62) serves an elderly neighbour in Xuhui through
March. In April she sends minutes to her mother, Ma Xiuying (born 1946), registered in
Huining: a signed voucher travels to Gansu, which credits her mother and signs an
acknowledgement that travels back. The acknowledgement of a second voucher is lost; Shanghai
finds the voucher in flight, delivers it again and records it, exactly once. A voucher altered
on the way is refused. Ma Xiuying spends minutes at the county's care home; both sides then
reconcile their accounts for each other, and Gansu clears and settles April between its
station and its care home. The clock is moved by the script, so the output is the same on
every run.

Run: python examples/shanghai_gansu.py [FOLDER | sqlite:///path/any.db]
(shanghai.db and gansu.db are created in the folder, or next to the file the URL names, and
must not exist yet; by default in a new temporary folder.)
"""

from __future__ import annotations

import json
import sys
import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy.engine import make_url

import timebank
from timebank.bank import UnitRate, VoucherView
from timebank.bank.models import age_on

CST = ZoneInfo("Asia/Shanghai")  # both provinces keep Beijing time
SHANGHAI, GANSU = "shanghai", "gansu"
# From each programme's secret store, never the database. The exchange key is the one
# secret the two programmes share: each side passes it under (its code, the partner's code).
IDENTITY_SECRETS = {
    SHANGHAI: b"example-shanghai-secret-not-for-production",
    GANSU: b"example-gansu-secret-not-for-production",
}
EXCHANGE_KEY = b"example-shanghai-gansu-key-not-for-production"
TRUST_LINE = 600

POLICY = timebank.Policy(
    service_types={
        "company": timebank.ServiceType(name="Keeping company", weight_permille=1000),
        "errands": timebank.ServiceType(name="Shopping and errands", weight_permille=1000),
        "day_care": timebank.ServiceType(name="Day care at an institution", weight_permille=1000),
    },
    timezone="Asia/Shanghai",
    # Library defaults kept: care is redeemed from 60, and minutes go as gifts (or vouchers)
    # to a spouse, parent or child, without a yearly limit.
)

XUHUI_CS = "xuhui-cs"  # Shanghai's community station, where Gansu's minutes would enter
HUINING_CS = "huining-cs"  # Gansu's community station, where Shanghai's minutes enter
HUINING_HOME = "huining-home"

# Chen Jing's sheets at the Xuhui station: (day, start hour, service type, minutes).
SHEETS = [
    (date(2026, 3, 3), 9, "company", 120),
    (date(2026, 3, 10), 9, "errands", 90),
    (date(2026, 3, 17), 14, "company", 120),
    (date(2026, 3, 24), 9, "errands", 150),
]
EARNED = sum(minutes for *_, minutes in SHEETS)
FIRST, SECOND, REDEEMED = 240, 120, 180


class Clock:
    """The injected clock, shared by both programmes: time stands still until moved."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def build_shanghai(bank: timebank.TimeBank) -> None:
    bank.create_programme(
        SHANGHAI,
        "Shanghai elderly-care time bank",
        policy=POLICY,
        root_region="shanghai",
        root_region_name="Shanghai",
        root_level="city",
        administrator="sh-admin",
        administrator_name="City civil-affairs administrator",
    )
    bank.add_region(
        SHANGHAI, "xuhui", "Xuhui district", level="county", parent="shanghai", operator="sh-admin"
    )
    bank.add_site(
        SHANGHAI,
        XUHUI_CS,
        "Xuhui community station",
        kind="community_station",
        region="xuhui",
        operator="sh-admin",
    )
    bank.add_operator(
        SHANGHAI,
        "xuhui-desk",
        "Station desk",
        roles=["recorder", "confirmer"],
        site=XUHUI_CS,
        by="sh-admin",
    )
    bank.add_partner(
        SHANGHAI,
        GANSU,
        "Gansu elderly-care time bank",
        entry_site=XUHUI_CS,
        trust_line_minutes=TRUST_LINE,
        rate=UnitRate(ours=1, theirs=1),
        operator="sh-admin",
    )


def build_gansu(bank: timebank.TimeBank) -> None:
    bank.create_programme(
        GANSU,
        "Gansu elderly-care time bank",
        policy=POLICY,
        root_region="gansu",
        root_region_name="Gansu province",
        administrator="gs-admin",
        administrator_name="Provincial civil-affairs administrator",
    )
    bank.add_region(
        GANSU, "huining", "Huining county", level="county", parent="gansu", operator="gs-admin"
    )
    bank.add_site(
        GANSU,
        HUINING_CS,
        "Huining community station",
        kind="community_station",
        region="huining",
        operator="gs-admin",
    )
    bank.add_site(
        GANSU,
        HUINING_HOME,
        "Huining elderly-care home",
        kind="institution",
        region="huining",
        operator="gs-admin",
    )
    bank.add_operator(
        GANSU, "huining-desk", "Station desk", roles=["recorder"], site=HUINING_CS, by="gs-admin"
    )
    bank.add_operator(
        GANSU,
        "home-desk",
        "Care home front desk",
        roles=["redeemer"],
        site=HUINING_HOME,
        by="gs-admin",
    )
    bank.add_partner(
        GANSU,
        SHANGHAI,
        "Shanghai elderly-care time bank",
        entry_site=HUINING_CS,
        trust_line_minutes=TRUST_LINE,
        rate=UnitRate(ours=1, theirs=1),
        operator="gs-admin",
    )


def show(document: str) -> None:
    """A document as it travels (one line of JSON), indented for reading."""
    for line in json.dumps(json.loads(document), indent=2).splitlines():
        print(f"    {line}")


class Exchange:
    def __init__(self, shanghai: timebank.TimeBank, gansu: timebank.TimeBank, clock: Clock):
        self.shanghai = shanghai
        self.gansu = gansu
        self.clock = clock
        self.chen = 0
        self.mother = 0

    def mother_holds(self) -> int:
        return self.gansu.member(self.mother).balance_minutes

    def positions(self) -> str:
        ours = self.shanghai.partner(SHANGHAI, GANSU).balance_minutes
        theirs = self.gansu.partner(GANSU, SHANGHAI).balance_minutes
        return f"Shanghai's account for Gansu {ours:+d}, Gansu's for Shanghai {theirs:+d}"

    def march(self) -> None:
        self.clock.now = datetime(2026, 3, 2, 9, 0, tzinfo=CST)
        print("Huining county, Gansu: the station registers Ma Xiuying")
        mother = self.gansu.register_member(
            GANSU,
            identity="620422194608150047",
            display_name="Ma Xiuying",
            birth_date=date(1946, 8, 15),
            home_site=HUINING_CS,
            operator="huining-desk",
            acts_as="recipient",
        )
        self.mother = mother.id
        age = age_on(date(1946, 8, 15), self.clock.now.date())
        print(f"  Ma Xiuying ({age}) is member number {mother.id} of {GANSU}")

        print("\nXuhui district, Shanghai, March 2026")
        chen = self.shanghai.register_member(
            SHANGHAI,
            identity="310104196401180026",
            display_name="Chen Jing",
            birth_date=date(1964, 1, 18),
            home_site=XUHUI_CS,
            operator="xuhui-desk",
        )
        gu = self.shanghai.register_member(
            SHANGHAI,
            identity="310104193805060041",
            display_name="Granny Gu",
            birth_date=date(1938, 5, 6),
            home_site=XUHUI_CS,
            operator="xuhui-desk",
            acts_as="recipient",
        )
        self.chen = chen.id
        age = age_on(date(1964, 1, 18), self.clock.now.date())
        print(f"  Chen Jing ({age}) is member number {chen.id} of {SHANGHAI}")
        for day, hour, service_type, minutes in SHEETS:
            start = datetime.combine(day, datetime.min.time(), CST).replace(hour=hour)
            self.clock.now = start + timedelta(minutes=minutes + 30)
            service = self.shanghai.record_service(
                f"xuhui-{day:%Y%m%d}-chen",
                programme=SHANGHAI,
                volunteer_id=chen.id,
                recipient_ids=[gu.id],
                site=XUHUI_CS,
                service_type=service_type,
                started_at=start,
                ended_at=start + timedelta(minutes=minutes),
                operator="xuhui-desk",
            )
            service = self.shanghai.confirm_service(service.id, operator="xuhui-desk")
            print(f"  {day:%a %d %b}: {service_type:<7} for Granny Gu, {minutes} min confirmed")
        assert self.shanghai.member(chen.id).balance_minutes == EARNED
        print(f"  Chen Jing holds {EARNED} min")

    def send(self, key: str, minutes: int) -> VoucherView:
        voucher = self.shanghai.send_voucher(
            key,
            programme=SHANGHAI,
            partner=GANSU,
            sender_id=self.chen,
            recipient=self.mother,  # her mother's member number in Gansu, from the family
            relation="parent",
            minutes=minutes,
            operator="xuhui-desk",
        )
        assert voucher.status == "in_flight"
        return voucher

    def first_voucher(self) -> None:
        self.clock.now = datetime(2026, 4, 1, 10, 0, tzinfo=CST)
        print(f"\n{self.clock.now:%A %d %B}: {FIRST} min for her mother, by voucher")
        voucher = self.send("xuhui-20260401-chen-voucher", FIRST)
        left = self.shanghai.member(self.chen).balance_minutes
        print(f"  1. Shanghai sends voucher {voucher.voucher_id}, in flight; Chen Jing: {left}")
        print("  the voucher, as it travels to Gansu:")
        show(voucher.document)

        accepted = self.gansu.accept_voucher(GANSU, voucher.document, operator="gs-admin")
        assert accepted.status == "accepted"
        assert accepted.acknowledgement is not None
        print(f"  2. Gansu verifies and accepts it: Ma Xiuying holds {self.mother_holds()} min")
        lot = self.gansu.lots(self.mother)[0]
        print(f"     as a lot earned at {lot.origin_site} on {lot.earned_on}")
        print("  the acknowledgement, as it travels back:")
        show(accepted.acknowledgement)

        recorded = self.shanghai.record_acknowledgement(
            SHANGHAI, accepted.acknowledgement, operator="sh-admin"
        )
        assert recorded.status == "accepted"
        print(f"  3. Shanghai records it: {recorded.status}; {self.positions()}")

    def lost_acknowledgement(self) -> None:
        self.clock.now = datetime(2026, 4, 3, 10, 0, tzinfo=CST)
        print(f"\n{self.clock.now:%A %d %B}: another {SECOND} min; the answer is lost")
        voucher = self.send("xuhui-20260403-chen-voucher", SECOND)
        accepted = self.gansu.accept_voucher(GANSU, voucher.document, operator="gs-admin")
        lost = accepted.acknowledgement
        print(f"  Gansu accepts {voucher.voucher_id}: Ma Xiuying holds {self.mother_holds()}")
        print("  ... and its acknowledgement never reaches Shanghai")
        assert self.mother_holds() == FIRST + SECOND

        self.clock.now = datetime(2026, 4, 7, 9, 0, tzinfo=CST)
        print(f"{self.clock.now:%A %d %B}: Shanghai looks for what is still in flight")
        in_flight = self.shanghai.vouchers(SHANGHAI, GANSU, status="in_flight")
        assert [v.voucher_id for v in in_flight] == [voucher.voucher_id]
        seen = self.shanghai.reconcile(
            SHANGHAI, GANSU, self.gansu.partner_statement(GANSU, SHANGHAI).document
        )
        for flight in seen.in_flight:
            print(f"  in flight: {flight.voucher_id}, {flight.minutes} min, {flight.stage}")
        again = self.gansu.accept_voucher(GANSU, in_flight[0].document, operator="gs-admin")
        assert again.acknowledgement == lost  # the same decision, not a second credit
        assert self.mother_holds() == FIRST + SECOND
        print(
            f"  delivered again: the same acknowledgement; Ma Xiuying still holds "
            f"{self.mother_holds()}"
        )
        assert again.acknowledgement is not None
        for _ in range(2):  # recording it twice changes nothing the second time
            recorded = self.shanghai.record_acknowledgement(
                SHANGHAI, again.acknowledgement, operator="sh-admin"
            )
        assert recorded.status == "accepted"
        assert not self.shanghai.vouchers(SHANGHAI, GANSU, status="in_flight")
        print(f"  recorded ({recorded.status}), twice, once in effect; {self.positions()}")

    def altered_voucher(self) -> None:
        print("\nA voucher altered on the way")
        first = self.shanghai.vouchers(SHANGHAI, GANSU)[0]
        altered = json.loads(first.document)
        altered["minutes"] = altered["credited_minutes"] = 2400
        try:
            self.gansu.accept_voucher(GANSU, json.dumps(altered), operator="gs-admin")
        except timebank.SignatureError as refusal:
            print(f"  refused: {refusal}")
        else:
            raise AssertionError("an altered voucher was accepted")
        assert self.mother_holds() == FIRST + SECOND
        print(f"  nothing changed: Ma Xiuying holds {self.mother_holds()}")

    def care_home(self) -> None:
        self.clock.now = datetime(2026, 4, 10, 16, 0, tzinfo=CST)
        print(f"\n{self.clock.now:%A %d %B}: a day at {HUINING_HOME}, paid with those minutes")
        redemption = self.gansu.redeem(
            "huining-home-20260410-ma",
            programme=GANSU,
            member_id=self.mother,
            site=HUINING_HOME,
            service_type="day_care",
            minutes=REDEEMED,
            operator="home-desk",
        )
        assert self.mother_holds() == FIRST + SECOND - REDEEMED
        print(
            f"  redemption {redemption.id}: {REDEEMED} min of day care; "
            f"Ma Xiuying holds {self.mother_holds()}"
        )

    def reconcile(self) -> None:
        print("\nReconciliation, each side against the other's signed statement")
        for bank, ours, theirs, partner in (
            (self.shanghai, SHANGHAI, GANSU, self.gansu),
            (self.gansu, GANSU, SHANGHAI, self.shanghai),
        ):
            statement = partner.partner_statement(theirs, ours)
            seen = bank.reconcile(ours, theirs, statement.document)
            assert seen.agreed
            assert seen.mirrored
            assert not seen.in_flight
            print(
                f"  {ours}: its account for {theirs} {seen.our_balance_minutes:+d}, "
                f"{theirs}'s for {ours} {seen.their_balance_minutes:+d}; "
                f"in flight {len(seen.in_flight)}, agreed {seen.agreed}, "
                f"mirrored {seen.mirrored}"
            )

    def clearing(self) -> None:
        april, may = date(2026, 4, 1), date(2026, 5, 1)
        print("\nClearing, April 2026 (redemptions inside one programme)")
        report = self.shanghai.clearing(SHANGHAI, start=april, end=may, level="site")
        print(f"  {SHANGHAI}: {report.redemptions} redemptions; its minutes left by voucher")
        report = self.gansu.clearing(GANSU, start=april, end=may, level="site")
        for flow in report.flows:
            print(
                f"  {GANSU}: earned at {flow.origin}, redeemed at {flow.redeemed_at}: "
                f"{flow.minutes} min"
            )
        for position in report.positions:
            print(f"  net: {position.debtor} owes {position.creditor} {position.minutes} min")
        county = self.gansu.clearing(GANSU, start=april, end=may, level="county")
        print(f"  at county level all {county.local_minutes} min are local to huining")

        self.clock.now = datetime(2026, 5, 4, 9, 0, tzinfo=CST)
        settled = self.gansu.settle(
            "gansu-site-2026-04", programme=GANSU, start=april, end=may, operator="gs-admin"
        )
        again = self.gansu.settle(
            "gansu-site-2026-04", programme=GANSU, start=april, end=may, operator="gs-admin"
        )
        assert again.id == settled.id
        print(
            f"{self.clock.now:%A %d %B}: Gansu settles April at site level "
            f"(settlement {settled.id}, {settled.redeemed_minutes} min cleared)"
        )
        for unit in (HUINING_CS, HUINING_HOME):
            account = f"{GANSU}:{unit}:clr:site"
            balance = self.gansu.ledger.balance(account).posted_minutes
            print(f"  {account}: {balance:+d}")


def databases(where: str | None) -> tuple[str, str]:
    """The two SQLite URLs: files in ``where`` (a folder, or the folder of a SQLite URL's
    file, as the example tests pass), or in a new temporary folder."""
    if where is None:
        folder = Path(tempfile.mkdtemp())
    elif "://" in where:
        url = make_url(where)
        if not url.drivername.startswith("sqlite") or not url.database:
            raise SystemExit("each programme has its own SQLite file: give a folder")
        folder = Path(url.database).resolve().parent
    else:
        folder = Path(where)
        folder.mkdir(parents=True, exist_ok=True)
    files = folder / "shanghai.db", folder / "gansu.db"
    for file in files:
        if file.exists():  # the script tells a story from the start: a fresh pair of files
            raise SystemExit(f"{file} exists: give an empty folder")
    return f"sqlite:///{files[0]}", f"sqlite:///{files[1]}"


def main(where: str | None = None) -> None:
    shanghai_url, gansu_url = databases(where)
    clock = Clock(datetime(2026, 3, 1, 9, 0, tzinfo=CST))
    shanghai = timebank.TimeBank(
        timebank.Ledger.open(shanghai_url, clock=clock),
        identity_secrets={SHANGHAI: IDENTITY_SECRETS[SHANGHAI]},
        exchange_secrets={(SHANGHAI, GANSU): EXCHANGE_KEY},
    )
    gansu = timebank.TimeBank(
        timebank.Ledger.open(gansu_url, clock=clock),
        identity_secrets={GANSU: IDENTITY_SECRETS[GANSU]},
        exchange_secrets={(GANSU, SHANGHAI): EXCHANGE_KEY},
    )
    try:
        build_shanghai(shanghai)
        build_gansu(gansu)
        print("Two programmes, two databases: shanghai.db and gansu.db")
        print(f"Partners both ways: trust line {TRUST_LINE} min, 1 min for 1 min\n")
        exchange = Exchange(shanghai, gansu, clock)
        exchange.march()
        exchange.first_voucher()
        exchange.lost_acknowledgement()
        exchange.altered_voucher()
        exchange.care_home()
        exchange.reconcile()
        exchange.clearing()
    finally:
        shanghai.dispose()
        gansu.dispose()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
