"""The time bank's policy, and the read models it answers with (Pydantic, frozen)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from timebank import errors
from timebank.bank.limits import (
    CODE_LENGTH_MAX,
    IDENTITY_LENGTH_MAX,
    NAME_LENGTH_MAX,
    PHONE_LENGTH_MAX,
    REDEMPTION_KEY_LENGTH_MAX,
    SERVICE_MINUTES_MAX,
    SERVICE_TYPES_MAX,
    WEIGHT_PERMILLE_MAX,
)
from timebank.limits import OPERATOR_LENGTH_MAX
from timebank.models import _translate

Code = Annotated[str, Field(min_length=1, max_length=CODE_LENGTH_MAX, pattern=r"^[A-Za-z0-9_.-]+$")]
Name = Annotated[str, Field(min_length=1, max_length=NAME_LENGTH_MAX)]
RegionLevel = Literal["province", "city", "county", "township"]
SiteKind = Literal["social_work_station", "volunteer_station", "community_station", "institution"]
MemberKind = Literal["person", "group"]
#: As declared by the member, for statistics only (None: not given).
Sex = Literal["female", "male"]
ActsAs = Literal["volunteer", "recipient", "both"]
MemberStatus = Literal["active", "frozen", "deceased", "closed"]
RelationKind = Literal["spouse", "parent", "child", "sibling", "other_relative", "friend"]
Role = Literal["recorder", "confirmer", "redeemer", "administrator", "auditor"]
ServiceStatus = Literal["pending", "confirmed", "rejected", "reversed"]
#: Units of clearing: sites, or the regions of one level of the tree.
ClearingLevel = Literal["site", "township", "county", "city", "province"]

#: The inverse of each relation: if A is the parent of B, B is the child of A.
INVERSE_RELATION: dict[str, str] = {
    "spouse": "spouse",
    "parent": "child",
    "child": "parent",
    "sibling": "sibling",
    "other_relative": "other_relative",
    "friend": "friend",
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _translate(exc, type(self).__name__) from None


class ServiceType(_Frozen):
    """One entry of the catalogue. ``weight_permille`` is credited minutes per 1,000 minutes
    served: 2000 for body care (Fureai Kippu: 2 credits an hour), 1000 for shopping."""

    name: Name
    weight_permille: int = Field(default=1000, ge=1, le=WEIGHT_PERMILLE_MAX, strict=True)


class GrantRule(_Frozen):
    """Who a pool may grant minutes to: members at least ``min_age`` old (programme calendar)
    who hold every one of ``attributes`` (recorded by an administrator: "living_alone",
    "disabled", "low_income"...) and, when ``assessed_need``, are assessed in need.
    Nanjing: 80 and living alone; 60 to 79, disabled and poor."""

    min_age: int = Field(default=0, ge=0, le=150, strict=True)
    attributes: frozenset[Code] = frozenset()
    assessed_need: bool = Field(default=False, strict=True)


class Policy(_Frozen):
    """A programme's rules, stored versioned with the programme.

    Rounding rule (the only one): credited minutes = served minutes * weight_permille // 1000,
    rounded **down** to a whole minute, so the programme never owes a minute nobody served.
    """

    service_types: dict[Code, ServiceType] = Field(max_length=SERVICE_TYPES_MAX)
    #: 1: the recipient's side or a confirmer of the station; 2: both of them.
    confirmations_required: Literal[1, 2] = 1
    #: Pending services are confirmed by ``confirm_due`` this long after they ended; None: never.
    auto_confirm_after_minutes: int | None = Field(default=None, ge=0, strict=True)
    #: The longest service one record may credit.
    service_minutes_max: int = Field(default=8 * 60, ge=1, le=SERVICE_MINUTES_MAX, strict=True)
    #: Days a lot stays redeemable after it was earned; None: lots never expire.
    lot_expiry_days: int | None = Field(default=None, ge=1, strict=True)
    #: The programme's time zone (IANA name): the calendar in which a lot is earned on a day
    #: and expires on a day. A service ending at 07:30 in Langfang is earned that local day.
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    #: Redemption: who may receive care paid with a member's minutes. Recipients at least
    #: this old (None: age alone never qualifies); members assessed in need, whatever their
    #: age, when ``need_redeems``; the depositor's spouse, too, when ``spouse_redeems``
    #: (Beijing). The recipient must qualify by age or need either way.
    redemption_min_age: int | None = Field(default=60, ge=0, le=150, strict=True)
    need_redeems: bool = Field(default=True, strict=True)
    #: "age_or_need" (the default): either qualifies. "age_and_need" (Beijing: "once 60+ and
    #: in need"): the recipient must be old enough and assessed in need.
    redemption_rule: Literal["age_or_need", "age_and_need"] = "age_or_need"
    spouse_redeems: bool = Field(default=False, strict=True)
    #: Gifts: to whom a member may give minutes, named by what the receiver is to the giver
    #: (a gift to one's mother goes to a "parent"). The default is direct relatives only
    #: (Beijing); Shanghai adds siblings, other relatives and friends.
    gift_relations: frozenset[RelationKind] = frozenset({"spouse", "parent", "child"})
    #: The most minutes one member may give in a calendar year (programme time zone).
    gift_yearly_limit_minutes: int | None = Field(default=None, ge=1, strict=True)
    #: Where expired minutes go: the programme's expired account, or the pool of the region
    #: of the member's home station.
    expired_to: Literal["programme", "pool"] = "programme"
    #: The most minutes a member may hold (Nanjing 1,500 h = 90,000; Zeitvorsorge 750 h =
    #: 45,000); None: no cap. ``cap_excess`` says what happens to a deposit over it: refused
    #: (the service stays pending) or the excess goes to the pool of the region of the
    #: member's home station (Nanjing). Gifts and grants over the cap are always refused; an
    #: estate's excess always goes to the pool.
    storage_cap_minutes: int | None = Field(default=None, ge=1, strict=True)
    cap_excess: Literal["refuse", "pool"] = "refuse"
    #: Groups' minutes can only be donated (Nanjing): a group neither redeems, books nor gives.
    groups_donate_only: bool = Field(default=False, strict=True)
    #: Pools grant minutes to members who match one of these rules, in priority order (the
    #: first rule a member matches is their priority). Empty: pools grant to nobody.
    grant_rules: tuple[GrantRule, ...] = (GrantRule(min_age=80),)
    #: On death the balance passes to the beneficiary the member designated (to the pool of
    #: their home region when nobody is), or always to the pool.
    estate_to: Literal["beneficiary", "pool"] = "beneficiary"

    @model_validator(mode="after")
    def _has_types(self) -> Policy:
        if not self.service_types:
            raise ValueError("the catalogue needs at least one service type")
        if self.redemption_rule == "age_and_need" and (
            self.redemption_min_age is None or not self.need_redeems
        ):
            raise ValueError("redemption_rule 'age_and_need' needs a minimum age and need_redeems")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        return self

    def local_date(self, moment: datetime) -> date:
        """The programme's calendar day of ``moment``."""
        return moment.astimezone(ZoneInfo(self.timezone)).date()

    def grant_priority(self, age: int, attributes: frozenset[str], in_need: bool) -> int | None:
        """The index of the first grant rule a member matches (0 goes first), or None."""
        for index, rule in enumerate(self.grant_rules):
            if (
                age >= rule.min_age
                and rule.attributes <= attributes
                and (in_need or not rule.assessed_need)
            ):
                return index
        return None


def age_on(born: date, on: date) -> int:
    """Whole years from ``born`` to ``on``."""
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def credited_minutes(raw_minutes: int, weight_permille: int) -> int:
    """The rounding rule of :class:`Policy`: down to a whole minute."""
    return raw_minutes * weight_permille // 1000


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class ProgrammeView(_View):
    code: str
    name: str
    root_region: str
    expired_account: str
    policy_version: int


class PolicyView(_View):
    programme: str
    version: int
    effective_from: datetime
    policy: Policy
    set_by: str


class RegionView(_View):
    programme: str
    code: str
    name: str
    level: RegionLevel
    parent: str | None
    pool_account: str


class SiteView(_View):
    programme: str
    code: str
    name: str
    kind: SiteKind
    region: str
    issued_account: str | None
    redeemed_account: str


class NewMember(_Frozen):
    """One member for :meth:`~timebank.bank.TimeBank.register_members`: the arguments of
    :meth:`~timebank.bank.TimeBank.register_member`, checked alike. ``identity`` is hashed
    with the programme's secret and never stored."""

    identity: str = Field(min_length=1, max_length=4 * IDENTITY_LENGTH_MAX)
    display_name: Name
    birth_date: Annotated[date, Strict()]
    home_site: str = Field(min_length=1, max_length=CODE_LENGTH_MAX)
    kind: MemberKind = "person"
    acts_as: ActsAs = "both"
    phone: str | None = Field(default=None, max_length=PHONE_LENGTH_MAX)
    sex: Sex | None = None

    @field_validator("display_name", "phone")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is not None and not storable(value):
            raise ValueError("text without NUL characters or lone surrogates")
        return value


class MemberView(_View):
    """A member without personal data: what the ledger side needs."""

    id: int
    programme: str
    kind: MemberKind
    acts_as: ActsAs
    home_site: str
    account: str
    status: MemberStatus
    status_reason: str
    assessed_need: bool
    #: Priority attributes recorded by an administrator (grant rules name them).
    attributes: tuple[str, ...]
    #: Whom the member designated to receive their minutes on their death.
    beneficiary_id: int | None
    balance_minutes: int
    #: Minutes reserved by pending bookings (part of ``balance_minutes``).
    held_minutes: int


class PersonalData(_View):
    display_name: str
    birth_date: date
    phone: str | None
    sex: Sex | None
    #: When the name, phone and identity hash were erased on request (None: never).
    erased_at: datetime | None = None


class OperatorView(_View):
    programme: str
    code: str
    name: str
    site: str | None
    region: str | None
    roles: tuple[Role, ...]


class ServiceView(_View):
    id: int
    idempotency_key: str
    programme: str
    volunteer_id: int
    recipient_ids: tuple[int, ...]
    site: str
    service_type: str
    started_at: datetime
    ended_at: datetime
    raw_minutes: int
    weight_permille: int
    credited_minutes: int
    policy_version: int
    rating: int | None
    note: str
    status: ServiceStatus
    reason: str
    recorded_by: str
    confirmed_by: tuple[str, ...]
    deposit_entry_id: int | None
    reversal_entry_id: int | None
    #: Of the credited minutes, those diverted to the pool because the volunteer was at the
    #: policy's storage cap (``cap_excess="pool"``).
    diverted_minutes: int


class RedemptionView(_View):
    id: int
    idempotency_key: str
    programme: str
    member_id: int
    recipient_id: int
    site: str
    service_type: str
    minutes: int
    occurred_at: datetime
    redeemed_by: str
    entry_id: int
    #: (lot id, minutes) taken, first in first out: where the minutes were earned.
    lots: tuple[tuple[int, int], ...]


class GiftView(_View):
    id: int
    idempotency_key: str
    programme: str
    giver_id: int
    receiver_id: int
    minutes: int
    occurred_at: datetime
    given_by: str
    entry_id: int
    #: (giver's lot id, minutes) taken, first in first out; each became a lot of the receiver.
    lots: tuple[tuple[int, int], ...]


PoolMoveKind = Literal["donation", "grant", "estate"]
BookingStatus = Literal["booked", "completed", "cancelled", "expired"]


class PoolMoveView(_View):
    """A donation (member to pool), a grant (pool to member) or an estate (a deceased
    member's minutes to their beneficiary and, for what the beneficiary may not hold or
    when nobody is designated, to the pool)."""

    id: int
    idempotency_key: str
    programme: str
    kind: PoolMoveKind
    member_id: int
    region: str | None
    beneficiary_id: int | None
    minutes: int
    pool_minutes: int
    occurred_at: datetime
    entered_by: str
    entry_id: int
    #: (lot id, minutes) taken first in, first out: the member's lots for a donation or an
    #: estate, the pool's lots for a grant.
    lots: tuple[tuple[int, int], ...]


class BookingView(_View):
    id: int
    idempotency_key: str
    programme: str
    member_id: int
    recipient_id: int
    site: str
    service_type: str
    #: Minutes held; a completion redeems at most these.
    minutes: int
    scheduled_at: datetime
    expires_at: datetime
    status: BookingStatus
    booked_by: str
    hold_id: int
    redemption_id: int | None
    redeemed_minutes: int


class ExposureView(_View):
    """Outstanding liability: minutes held by members and pools, as the ledger recorded
    them at ``at``: what the guarantor stands behind."""

    programme: str
    region: str
    at: datetime
    member_minutes: int
    pool_minutes: int
    total_minutes: int
    members_with_balance: int


class GrantCandidate(_View):
    member_id: int
    priority: int
    age: int
    balance_minutes: int


class LotView(_View):
    id: int
    member_id: int
    minutes: int
    remaining_minutes: int
    origin_site: str
    earned_on: date
    expires_on: date | None
    source_entry_id: int


class ClearingFlow(_View):
    """Gross: minutes earned at ``origin`` and redeemed at ``redeemed_at`` (units of the
    report's level; the same unit for local redemptions)."""

    origin: str
    redeemed_at: str
    minutes: int


class ClearingPosition(_View):
    """Net, for one pair of units: ``debtor``'s minutes redeemed at ``creditor``, less the
    other way round. The debtor owes the creditor ``minutes`` of care."""

    debtor: str
    creditor: str
    minutes: int


class _Clearing(_View):
    programme: str
    level: ClearingLevel
    #: The period: [start, end), days of the programme's calendar.
    start: date
    end: date
    flows: tuple[ClearingFlow, ...]
    positions: tuple[ClearingPosition, ...]
    redemptions: int
    #: Every minute counted (the flows' sum), and those redeemed where they were earned.
    redeemed_minutes: int
    local_minutes: int

    def matrix(self) -> dict[str, dict[str, int]]:
        """The gross matrix: ``matrix()[origin][redeemed_at]`` minutes."""
        table: dict[str, dict[str, int]] = {}
        for flow in self.flows:
            table.setdefault(flow.origin, {})[flow.redeemed_at] = flow.minutes
        return table

    def net_of(self, unit: str) -> int:
        """What ``unit`` is owed (positive) or owes (negative), over all its positions."""
        owed = sum(p.minutes for p in self.positions if p.creditor == unit)
        return owed - sum(p.minutes for p in self.positions if p.debtor == unit)


class ClearingReport(_Clearing):
    """Redemptions dated in the period, by where their minutes were earned (the lots they
    used) and where they were redeemed.

    When the period is settled at this level, ``settlement_id`` names the settlement and
    ``carried_minutes`` are the period's minutes it did not clear: recorded after it, they
    fall into a later settlement (as its ``late_minutes``)."""

    settlement_id: int | None
    carried_minutes: int


class SettlementView(_Clearing):
    """What one settlement cleared and posted: the flows of the redemptions it cleared
    (those dated in the period, and ``late_minutes`` dated before it but recorded after the
    earlier settlement), and the net positions it posted between clearing accounts
    (``"<programme>:<unit>:clr:<level>"``), one entry each (``entry_ids``, in the order
    of ``positions``)."""

    id: int
    idempotency_key: str
    late_minutes: int
    late_flows: tuple[ClearingFlow, ...]
    settled_at: datetime
    settled_by: str
    entry_ids: tuple[int, ...]


class UnitRate(_Frozen):
    """``ours`` of our minutes are worth ``theirs`` of a partner programme's minutes (1 to 1
    by default). Amounts must convert exactly: no minute is rounded away."""

    ours: int = Field(default=1, ge=1, le=1_000_000, strict=True)
    theirs: int = Field(default=1, ge=1, le=1_000_000, strict=True)

    def convert(self, minutes: int) -> int | None:
        """Our ``minutes`` in the partner's minutes, or None when they do not convert
        exactly."""
        whole, rest = divmod(minutes * self.theirs, self.ours)
        return None if rest else whole


class PartnerView(_View):
    """Another programme we exchange minutes with, and our account for it: its balance is
    what we owe the partner (positive) or the partner owes us (negative), within the trust
    line either way."""

    programme: str
    code: str
    name: str
    account: str
    entry_site: str
    rate: UnitRate
    trust_line_minutes: int
    balance_minutes: int


VoucherStatus = Literal["in_flight", "accepted", "refused"]


class VoucherView(_View):
    """A voucher on one side: ``out`` (our ``member_id`` sent ``minutes``) or ``in`` (the
    partner's member sent ``remote_minutes`` of theirs, ``minutes`` of ours, to our
    ``member_id``). ``document`` is the signed voucher as it travels; ``acknowledgement``
    the signed answer (the one we issued, or the one we recorded)."""

    voucher_id: str
    programme: str
    partner: str
    direction: Literal["out", "in"]
    idempotency_key: str | None
    member_id: int | None
    remote_member_id: int
    minutes: int
    remote_minutes: int
    status: VoucherStatus
    reason: str
    document: str
    acknowledgement: str | None
    entry_id: int | None
    return_entry_id: int | None
    created_at: datetime
    decided_at: datetime | None


class StatementVoucher(_View):
    voucher_id: str
    direction: Literal["out", "in"]
    minutes: int
    remote_minutes: int
    status: VoucherStatus


class PartnerStatement(_View):
    """One side's account for the other and every voucher between them, signed
    (``document``) so the partner can reconcile against it."""

    programme: str
    partner: str
    as_of: datetime
    balance_minutes: int
    vouchers: tuple[StatementVoucher, ...]
    document: str


class InFlightVoucher(_View):
    """A voucher one side has moved and the other has not (yet): ``sender`` is the
    programme that issued it; ``stage`` says what redelivery will do."""

    voucher_id: str
    sender: str
    minutes: int
    stage: Literal["not received", "acknowledgement not recorded"]


class Reconciliation(_View):
    """Both sides' accounts for each other, voucher by voucher. ``agreed``: no voucher is
    recorded differently on the two sides and each balance is the sum of its side's
    vouchers. The positions leave out the vouchers in flight; ``mirrored``: our position
    in the partner's minutes is the exact opposite of theirs."""

    programme: str
    partner: str
    our_balance_minutes: int
    their_balance_minutes: int
    our_position_minutes: int
    their_position_minutes: int
    in_flight: tuple[InFlightVoucher, ...]
    mismatches: tuple[str, ...]
    agreed: bool
    mirrored: bool


def storable(text: object) -> bool:
    """Text every database stores as given: a str of valid Unicode (no lone surrogate) and
    without NUL, which PostgreSQL refuses."""
    if not isinstance(text, str) or "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def require(condition: bool, message: str) -> None:
    """Refuse malformed input with the library's error (not an assert: it must survive -O)."""
    if not condition:
        raise errors.InvalidInputError(message)


def check_text(**values: str) -> None:
    """Codes and names: non-empty, bounded, codes from a safe alphabet (they end up in
    ledger account codes)."""
    for name, value in values.items():
        require(storable(value) and value != "", f"{name} is a non-empty string of text")
        if name in ("name",):
            require(len(value) <= NAME_LENGTH_MAX, f"{name}: at most {NAME_LENGTH_MAX} characters")
            continue
        limit = OPERATOR_LENGTH_MAX if name == "administrator" else 24
        require(len(value) <= limit, f"{name}: at most {limit} characters")
        require(
            all(c.isascii() and (c.isalnum() or c in "_.-") for c in value),
            f"{name} {value!r}: letters, digits, '_', '.' and '-' only",
        )


def check_key(key: str) -> None:
    """An idempotency key short enough that the entry keys built from it fit."""
    require(
        isinstance(key, str) and 0 < len(key) <= REDEMPTION_KEY_LENGTH_MAX,
        f"idempotency_key: 1 to {REDEMPTION_KEY_LENGTH_MAX} characters",
    )
