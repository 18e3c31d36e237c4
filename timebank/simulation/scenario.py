"""What a simulation simulates: the regions, the people, the policy and the daily rates."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from timebank.bank.models import GrantRule, Policy, ServiceType

Share = float


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


#: The policy of the presets: weighted service types, confirmation after two days, lots
#: that expire, a yearly gift limit, a storage cap whose excess goes to the pool, spouses
#: who redeem for each other, and grants to elders of 80 living alone, then of 85.
DEFAULT_POLICY = Policy(
    service_types={
        "body_care": ServiceType(name="Body care", weight_permille=2000),
        "chat": ServiceType(name="Keeping company", weight_permille=1500),
        "shopping": ServiceType(name="Shopping", weight_permille=1000),
        "cleaning": ServiceType(name="Cleaning", weight_permille=1000),
    },
    confirmations_required=1,
    auto_confirm_after_minutes=48 * 60,
    timezone="Asia/Shanghai",
    lot_expiry_days=21,
    expired_to="programme",
    gift_yearly_limit_minutes=3_000,
    storage_cap_minutes=6_000,
    cap_excess="pool",
    spouse_redeems=True,
    grant_rules=(
        GrantRule(min_age=80, attributes=frozenset({"living_alone"})),
        GrantRule(min_age=85),
    ),
)


class Regions(_Frozen):
    """The region tree under the programme's root (one programme is one province)."""

    provinces: Literal[1] = 1
    cities: int = Field(default=2, ge=1, le=50)
    counties_per_city: int = Field(default=2, ge=1, le=50)
    townships_per_county: int = Field(default=2, ge=1, le=50)
    stations_per_township: int = Field(default=1, ge=1, le=20)
    institutions_per_county: int = Field(default=1, ge=1, le=20)

    @property
    def townships(self) -> int:
        return self.cities * self.counties_per_city * self.townships_per_county

    @property
    def stations(self) -> int:
        return self.townships * self.stations_per_township

    @property
    def institutions(self) -> int:
        return self.cities * self.counties_per_city * self.institutions_per_county


class Population(_Frozen):
    """Who the members are. Volunteers are young-old (``volunteer_ages``), recipients
    old-old (``recipient_ages``); ``both_share`` of the volunteers also receive care."""

    volunteer_share: Share = Field(default=0.55, ge=0, le=1)
    both_share: Share = Field(default=0.3, ge=0, le=1)
    volunteer_ages: tuple[int, int] = (55, 75)
    recipient_ages: tuple[int, int] = (75, 95)
    #: Women among volunteers and recipients (of those who declare their sex).
    female_share_volunteers: Share = Field(default=0.62, ge=0, le=1)
    female_share_recipients: Share = Field(default=0.58, ge=0, le=1)
    undeclared_sex_share: Share = Field(default=0.1, ge=0, le=1)
    #: Members under 80 married to another member of their station.
    spouse_share: Share = Field(default=0.2, ge=0, le=1)
    #: Volunteers of 65 or under whose parent (80 or over) is a member of their station.
    child_share: Share = Field(default=0.35, ge=0, le=1)
    #: Elders of 80 and over recorded as living alone (a grant rule names it).
    living_alone_share: Share = Field(default=0.35, ge=0, le=1)

    @model_validator(mode="after")
    def _ages(self) -> Population:
        for low, high in (self.volunteer_ages, self.recipient_ages):
            if not 0 <= low <= high <= 120:
                raise ValueError("ages: (youngest, oldest) between 0 and 120")
        return self


class Rates(_Frozen):
    """Daily rates. ``*_per_*`` are expected acts a day per person (or pool); shares are
    probabilities of one act."""

    services_per_volunteer: float = Field(default=0.12, ge=0, le=1)
    #: Of recorded services: confirmed at once (desk or recipient), rejected; the rest wait
    #: for the daily ``confirm_due`` sweep.
    confirm_share: Share = Field(default=0.6, ge=0, le=1)
    reject_share: Share = Field(default=0.03, ge=0, le=1)
    #: Members of 60 and over redeeming, or booking, a day.
    redemptions_per_elder: float = Field(default=0.03, ge=0, le=1)
    bookings_per_elder: float = Field(default=0.01, ge=0, le=1)
    #: Of open bookings on the next day: completed, cancelled (the rest lapse).
    booking_complete_share: Share = Field(default=0.7, ge=0, le=1)
    booking_cancel_share: Share = Field(default=0.15, ge=0, le=1)
    gifts_per_member: float = Field(default=0.01, ge=0, le=1)
    donations_per_member: float = Field(default=0.004, ge=0, le=1)
    #: Chance a township's pool grants to its elders on a day.
    grants_per_pool: float = Field(default=0.1, ge=0, le=1)
    #: Every so many days: the expiry sweep and the lapsed-bookings sweep.
    expiry_sweep_every_days: int = Field(default=7, ge=1)
    #: Per successful command: a deliberately bad command (which must be refused), and the
    #: same command sent again with the same idempotency key (which must replay).
    bad_input_rate: Share = Field(default=0.02, ge=0, le=1)
    duplicate_rate: Share = Field(default=0.02, ge=0, le=1)

    @model_validator(mode="after")
    def _shares(self) -> Rates:
        if self.confirm_share + self.reject_share > 1:
            raise ValueError("confirm_share + reject_share must not exceed 1")
        if self.booking_complete_share + self.booking_cancel_share > 1:
            raise ValueError("booking_complete_share + booking_cancel_share must not exceed 1")
        return self


class Scenario(_Frozen):
    """A whole simulation but its seed: the same scenario and seed build the same ledger."""

    programme: str = Field(default="sim", min_length=1, max_length=16, pattern=r"^[a-z0-9-]+$")
    regions: Regions = Regions()
    members: int = Field(default=300, ge=2, le=10_000_000)
    population: Population = Population()
    policy: Policy = DEFAULT_POLICY
    rates: Rates = Rates()
    #: The first day (programme calendar); the clock starts at 07:00 on it.
    start: date = date(2026, 3, 2)
    days: int = Field(default=30, ge=1, le=3_660)

    @property
    def first_moment(self) -> datetime:
        """07:00 of the first day in the policy's time zone: where the clock starts (a
        :class:`SimulationClock` for a TimeBank target starts here, or earlier)."""
        return datetime.combine(self.start, time(7), ZoneInfo(self.policy.timezone))

    @classmethod
    def small_province(cls) -> Scenario:
        """The demo's scenario: 2 cities of one county each, 8 townships with a station
        each, a care home per county (2), 300 members, 30 days."""
        return cls(
            regions=Regions(
                cities=2,
                counties_per_city=1,
                townships_per_county=4,
                stations_per_township=1,
                institutions_per_county=1,
            ),
            members=300,
            days=30,
        )

    @classmethod
    def province(cls, members: int = 100_000, days: int = 365) -> Scenario:
        """A province-sized run (issue 7): 11 cities, 44 counties, 220 townships and
        stations, 88 care homes."""
        return cls(
            regions=Regions(
                cities=11,
                counties_per_city=4,
                townships_per_county=5,
                stations_per_township=1,
                institutions_per_county=2,
            ),
            members=members,
            days=days,
        )
