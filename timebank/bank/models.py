"""The time bank's policy, and the read models it answers with (Pydantic, frozen)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from timebank import errors
from timebank.bank.limits import (
    CODE_LENGTH_MAX,
    NAME_LENGTH_MAX,
    SERVICE_MINUTES_MAX,
    SERVICE_TYPES_MAX,
    WEIGHT_PERMILLE_MAX,
)
from timebank.models import _translate

Code = Annotated[str, Field(min_length=1, max_length=CODE_LENGTH_MAX, pattern=r"^[A-Za-z0-9_.-]+$")]
Name = Annotated[str, Field(min_length=1, max_length=NAME_LENGTH_MAX)]
RegionLevel = Literal["province", "city", "county", "township"]
SiteKind = Literal["social_work_station", "volunteer_station", "community_station", "institution"]
MemberKind = Literal["person", "group"]
ActsAs = Literal["volunteer", "recipient", "both"]
MemberStatus = Literal["active", "frozen", "deceased", "closed"]
RelationKind = Literal["spouse", "parent", "child", "sibling", "other_relative", "friend"]
Role = Literal["recorder", "confirmer", "redeemer", "administrator", "auditor"]
ServiceStatus = Literal["pending", "confirmed", "rejected", "reversed"]

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

    @model_validator(mode="after")
    def _has_types(self) -> Policy:
        if not self.service_types:
            raise ValueError("the catalogue needs at least one service type")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        return self

    def local_date(self, moment: datetime) -> date:
        """The programme's calendar day of ``moment``."""
        return moment.astimezone(ZoneInfo(self.timezone)).date()


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
    balance_minutes: int


class PersonalData(_View):
    display_name: str
    birth_date: date
    phone: str | None


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


class LotView(_View):
    id: int
    member_id: int
    minutes: int
    remaining_minutes: int
    origin_site: str
    earned_on: date
    expires_on: date | None
    source_entry_id: int


def require(condition: bool, message: str) -> None:
    """Refuse malformed input with the library's error (not an assert: it must survive -O)."""
    if not condition:
        raise errors.InvalidInputError(message)
