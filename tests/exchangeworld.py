"""Two independent time banks for the exchange tests, each in its own database.

* ``shanghai`` (side A): regions shanghai > pudong > huamu and shanghai > jingan, a
  social-work station in Huamu and a volunteer station in Jing'an, a recorder/confirmer
  at each, volunteers ``chen`` (who earned minutes at both stations) and ``lin``, an
  elder ``xu`` they serve, and an unknown-to-nobody ``zhou`` who receives vouchers.
* ``gansu`` (side B): root region gansu > lanzhou, a community station ``lanzhou-cs``,
  the elderly ``mother`` (born 1950, active), a ``frozen`` member, volunteer ``ma`` (with
  minutes, to send the other way) and the elder ``elder`` he serves.

Each side registers the other as partner (:func:`connect`), with its own rate and trust
line and the shared key in ``exchange_secrets``. :func:`pair` builds both; on SQLite the
two programmes are built once per process and their files copied (the partners, whose
rates and trust lines differ per test, are added after the copy).

The clock must start at :data:`tests.clocks.T0` (the templates' services happened just
before it).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Final, TypeVar

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from tests.clocks import T0, Clock
from tests.dbdump import dump
from timebank import Ledger
from timebank.bank import (
    LotView,
    Policy,
    Reconciliation,
    ServiceType,
    TimeBank,
    UnitRate,
    VoucherView,
)
from timebank.bank.models import RelationKind

E = TypeVar("E", bound=Exception)

A: Final = "shanghai"
B: Final = "gansu"
KEY: Final = b"key-shared-by-shanghai-and-gansu"
SECRETS: Final = {(A, B): KEY, (B, A): KEY}
IDENTITY: Final = {A: b"identity-secret-of-shanghai", B: b"identity-secret-of-gansu"}

#: Minutes are credited one for one (chat) or two for one (body care).
POLICY: Final = Policy(
    service_types={
        "chat": ServiceType(name="Keeping company", weight_permille=1000),
        "body_care": ServiceType(name="Body care", weight_permille=2000),
    },
    confirmations_required=1,
    lot_expiry_days=365,
    timezone="Asia/Shanghai",
)
POLICY_B: Final = POLICY.model_copy(update={"lot_expiry_days": 730})

#: What the templates' volunteers earned: per programme, member -> minutes.
EARNED: Final = {A: {"chen": 420, "lin": 240}, B: {"ma": 300}}


@dataclass
class Side:
    """One programme in its own database, and how to act on it as its staff."""

    bank: TimeBank
    clock: Clock
    code: str
    partner: str
    admin: str
    station: str
    recorder: str
    members: dict[str, int] = field(default_factory=dict)
    #: Where each member's minutes came from: the minutes deposited by services.
    earned: dict[str, int] = field(default_factory=dict)
    #: The recorder of each member's home station (the main station's unless named).
    recorders: dict[str, str] = field(default_factory=dict)

    @property
    def engine(self) -> Engine:
        return self.bank.ledger.engine

    # --- reads -----------------------------------------------------------------------------

    def balance(self, name: str) -> int:
        return self.bank.member(self.members[name]).balance_minutes

    def position(self) -> int:
        """Our account for the partner: what we owe it (positive) or it owes us."""
        return self.bank.partner(self.code, self.partner).balance_minutes

    def lots(self, name: str) -> list[LotView]:
        return self.bank.lots(self.members[name])

    def in_flight(self) -> list[VoucherView]:
        return self.bank.vouchers(self.code, self.partner, status="in_flight")

    def statement(self) -> str:
        return self.bank.partner_statement(self.code, self.partner).document

    def reconcile(self, other: Side) -> Reconciliation:
        return self.bank.reconcile(self.code, self.partner, other.statement())

    # --- acts ------------------------------------------------------------------------------

    def send(
        self,
        key: str,
        sender: str,
        recipient: int,
        minutes: int,
        *,
        relation: RelationKind = "parent",
        operator: str | None = None,
    ) -> VoucherView:
        return self.bank.send_voucher(
            key,
            programme=self.code,
            partner=self.partner,
            sender_id=self.members[sender],
            recipient=recipient,
            relation=relation,
            minutes=minutes,
            operator=operator or self.recorders.get(sender, self.recorder),
        )

    def accept(self, document: str | bytes) -> VoucherView:
        return self.bank.accept_voucher(self.code, document, operator=self.admin)

    def record(self, acknowledgement: str | bytes) -> VoucherView:
        return self.bank.record_acknowledgement(self.code, acknowledgement, operator=self.admin)


@dataclass
class Pair:
    a: Side
    b: Side

    def dispose(self) -> None:
        self.a.bank.dispose()
        self.b.bank.dispose()


# --- building ------------------------------------------------------------------------------


def build_shanghai(url: str, clock: Clock) -> Side:
    bank = TimeBank(Ledger.open(url, clock=clock), identity_secrets=IDENTITY,
                    exchange_secrets=SECRETS)
    bank.create_programme(A, "Shanghai time bank", policy=POLICY, root_region="shanghai",
                          root_region_name="Shanghai", root_level="city",
                          administrator="sh-admin", administrator_name="City administrator")
    bank.add_region(A, "pudong", "Pudong", level="county", parent="shanghai",
                    operator="sh-admin")
    bank.add_region(A, "huamu", "Huamu street", level="township", parent="pudong",
                    operator="sh-admin")
    bank.add_region(A, "jingan", "Jing'an", level="county", parent="shanghai",
                    operator="sh-admin")
    bank.add_site(A, "huamu-sw", "Huamu social-work station", kind="social_work_station",
                  region="huamu", operator="sh-admin")
    bank.add_site(A, "jingan-vol", "Jing'an volunteer station", kind="volunteer_station",
                  region="jingan", operator="sh-admin")
    bank.add_operator(A, "rec-huamu", "Huamu recorder", roles=["recorder", "confirmer"],
                      site="huamu-sw", by="sh-admin")
    bank.add_operator(A, "rec-jingan", "Jing'an recorder", roles=["recorder", "confirmer"],
                      site="jingan-vol", by="sh-admin")
    side = Side(bank, clock, A, B, admin="sh-admin", station="huamu-sw", recorder="rec-huamu")
    _register(side, "chen", date(1985, 4, 2))
    _register(side, "lin", date(1990, 7, 9), home_site="jingan-vol", operator="rec-jingan")
    _register(side, "xu", date(1936, 1, 20))
    _register(side, "zhou", date(1948, 8, 8))
    # Chen earned 240 minutes at Huamu two days ago and 180 at Jing'an yesterday.
    _earn(side, "a1", "chen", "xu", 240, days_ago=2)
    _earn(side, "a2", "chen", "xu", 180, days_ago=1, site="jingan-vol", operator="rec-jingan")
    _earn(side, "a3", "lin", "xu", 240, days_ago=1, site="jingan-vol", operator="rec-jingan")
    return side


def build_gansu(url: str, clock: Clock) -> Side:
    bank = TimeBank(Ledger.open(url, clock=clock), identity_secrets=IDENTITY,
                    exchange_secrets=SECRETS)
    bank.create_programme(B, "Gansu time bank", policy=POLICY_B, root_region="gansu",
                          root_region_name="Gansu", administrator="gs-admin",
                          administrator_name="Provincial administrator")
    bank.add_region(B, "lanzhou", "Lanzhou", level="city", parent="gansu", operator="gs-admin")
    bank.add_site(B, "lanzhou-cs", "Lanzhou community station", kind="community_station",
                  region="lanzhou", operator="gs-admin")
    bank.add_operator(B, "gs-rec", "Station recorder", roles=["recorder", "confirmer"],
                      site="lanzhou-cs", by="gs-admin")
    side = Side(bank, clock, B, A, admin="gs-admin", station="lanzhou-cs", recorder="gs-rec")
    _register(side, "mother", date(1950, 3, 14))
    _register(side, "frozen", date(1952, 6, 1))
    _register(side, "ma", date(1980, 2, 2))
    _register(side, "elder", date(1940, 11, 11))
    bank.set_member_status(side.members["frozen"], "frozen", reason="moved away for a while",
                           operator="gs-admin")
    _earn(side, "b1", "ma", "elder", 300, days_ago=1)
    return side


def _register(side: Side, name: str, born: date, *, home_site: str | None = None,
              operator: str | None = None) -> None:
    view = side.bank.register_member(
        side.code,
        identity=f"ID-{side.code}-{name}",
        display_name=f"{name.title()} Fullname",
        birth_date=born,
        home_site=home_site or side.station,
        operator=operator or side.recorder,
        phone=f"+86-555-{len(side.members):04d}",
    )
    side.members[name] = view.id
    side.earned.setdefault(name, 0)
    if operator is not None:
        side.recorders[name] = operator


def _earn(side: Side, key: str, volunteer: str, recipient: str, minutes: int, *,
          days_ago: int, site: str | None = None, operator: str | None = None) -> None:
    """A chat of ``minutes`` that ended ``days_ago`` days before now, confirmed."""
    start = side.clock.now - timedelta(days=days_ago, minutes=minutes)
    service = side.bank.record_service(
        key,
        programme=side.code,
        volunteer_id=side.members[volunteer],
        recipient_ids=[side.members[recipient]],
        site=site or side.station,
        service_type="chat",
        started_at=start,
        ended_at=start + timedelta(minutes=minutes),
        operator=operator or side.recorder,
    )
    side.bank.confirm_service(service.id, operator=operator or side.recorder)
    side.earned[volunteer] += minutes


def connect(side: Side, *, rate: UnitRate, trust_line_minutes: int) -> None:
    """Register the partner, its minutes arriving at our main station."""
    side.bank.add_partner(
        side.code,
        side.partner,
        f"{side.partner.title()} time bank",
        entry_site=side.station,
        trust_line_minutes=trust_line_minutes,
        operator=side.admin,
        rate=rate,
    )


_BUILDERS: Final[dict[str, Callable[[str, Clock], Side]]] = {A: build_shanghai, B: build_gansu}
_TEMPLATES: dict[str, tuple[str, Side]] = {}


def fresh_side(code: str, url: str, clock: Clock) -> Side:
    """Programme ``code`` (without its partner) in the empty database at ``url``: on SQLite a
    copy of a template built once per process, elsewhere built now."""
    assert clock.now == T0, "the templates' services happened just before T0"
    builder = _BUILDERS[code]
    if make_url(url).get_backend_name() != "sqlite":
        return builder(url, clock)
    if code not in _TEMPLATES:
        directory = Path(tempfile.mkdtemp(prefix=f"tb_exchange_{code}_"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        target = str(directory / "world.db")
        template = builder(f"sqlite:///{target}", Clock())
        template.bank.dispose()
        _TEMPLATES[code] = (target, template)
    path, template = _TEMPLATES[code]
    shutil.copyfile(path, str(make_url(url).database))
    bank = TimeBank(Ledger.open(url, clock=clock), identity_secrets=IDENTITY,
                    exchange_secrets=SECRETS)
    return replace(template, bank=bank, clock=clock, members=dict(template.members),
                   earned=dict(template.earned), recorders=dict(template.recorders))


def pair(  # noqa: PLR0917
    url_a: str,
    url_b: str,
    clock: Clock,
    rate_a: UnitRate | None = None,
    rate_b: UnitRate | None = None,
    trust_a: int = 600,
    trust_b: int = 600,
) -> Pair:
    """Shanghai at ``url_a`` and Gansu at ``url_b``, partners of each other (1 to 1 and a
    trust line of 600 minutes both ways unless told)."""
    a = fresh_side(A, url_a, clock)
    b = fresh_side(B, url_b, clock)
    connect(a, rate=rate_a or UnitRate(), trust_line_minutes=trust_a)
    connect(b, rate=rate_b or UnitRate(), trust_line_minutes=trust_b)
    return Pair(a, b)


# --- checks --------------------------------------------------------------------------------


def refused_on(side: Side, cls: type[E], act: Callable[[], object],
               match: str | None = None) -> E:
    """``act`` must raise ``cls`` and leave every table of ``side``'s database as it was."""
    before = dump(side.engine)
    with pytest.raises(cls, match=match) as caught:
        act()
    assert dump(side.engine) == before
    return caught.value


def lot_shape(lots: list[LotView]) -> dict[tuple[str, date, date | None], int]:
    """Open minutes by (origin station, earned day, expiry day): what a reversal restores."""
    shape: dict[tuple[str, date, date | None], int] = defaultdict(int)
    for lot in lots:
        shape[lot.origin_site, lot.earned_on, lot.expires_on] += lot.remaining_minutes
    return dict(shape)


def redeliver(sender: Side, receiver: Side) -> int:
    """Deliver again every voucher ``sender`` holds in flight and record the answers; the
    number delivered."""
    pending = sender.in_flight()
    for voucher in pending:
        if voucher.direction == "out":
            sender.record(_answer(receiver.accept(voucher.document)))
    return len(pending)


def _answer(view: VoucherView) -> str:
    assert view.acknowledgement is not None
    return view.acknowledgement


def assert_settled(pair: Pair) -> None:
    """Both reconciliations agreed and mirrored with nothing in flight; every member's
    balance is the sum of their lots; each side's minutes are conserved (members plus the
    account for the partner hold what services deposited)."""
    a, b = pair.a, pair.b
    for ours, theirs in ((a, b), (b, a)):
        rec = ours.reconcile(theirs)
        assert rec.mismatches == ()
        assert rec.agreed
        assert rec.mirrored
        assert rec.in_flight == ()
        assert rec.our_balance_minutes == ours.position()
        assert rec.their_balance_minutes == theirs.position()
        assert ours.in_flight() == []
        assert_conserved(ours)


def assert_conserved(side: Side) -> None:
    """Members hold what they earned, less what sits in the account for the partner."""
    total = 0
    for member_id in side.members.values():
        balance = side.bank.member(member_id).balance_minutes
        assert balance == side.bank.lots_total(member_id)
        total += balance
    assert total + side.position() == sum(side.earned.values())
