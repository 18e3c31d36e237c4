"""Statements and reports (Pydantic, frozen), each printable with ``render()``.

Every minute figure is read from the ledger's postings, in recording order (the figures a
guarantor sees: what was recorded by the end of the period), so a report's closing
liability is its opening liability plus its movements, to the minute.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from timebank.bank.models import LotView


class _Report(BaseModel):
    model_config = ConfigDict(frozen=True)


def _table(headers: tuple[str, ...], rows: list[tuple[object, ...]]) -> list[str]:
    """Rows under headers, columns as wide as their widest cell; numbers to the right."""
    cells = [headers, *[tuple(_cell(value) for value in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [
        all(isinstance(row[i], int) for row in rows) and bool(rows) for i in range(len(headers))
    ]
    lines = []
    for row in cells:
        parts = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(row, widths, numeric, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return lines


def _cell(value: object) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return "" if value is None else str(value)


# --- a member's statement ----------------------------------------------------------------------


class StatementEntry(_Report):
    """One posting on the member's account, with the balance after it."""

    entry_id: int
    code: str
    occurred_at: datetime
    recorded_at: datetime
    memo: str
    amount_minutes: int
    balance_after_minutes: int


class ExpiryLine(_Report):
    """Minutes of the member's open lots that expire on ``expires_on`` (None: never)."""

    expires_on: date | None
    minutes: int


class HoldLine(_Report):
    """Minutes a live booking holds on the member's account."""

    hold_id: int
    minutes: int
    expires_at: datetime | None
    memo: str


class MemberStatement(_Report):
    """A member's account over [start, end) (days of the programme's calendar): every
    posting recorded in the period with the running balance, and, as they stand now, the
    open lots with their expiry schedule and the live holds."""

    member_id: int
    programme: str
    account: str
    start: date
    end: date
    opening_balance_minutes: int
    closing_balance_minutes: int
    credited_minutes: int
    debited_minutes: int
    entries: tuple[StatementEntry, ...]
    open_lots: tuple[LotView, ...]
    expiry_schedule: tuple[ExpiryLine, ...]
    holds: tuple[HoldLine, ...]
    held_minutes: int

    def render(self) -> str:
        lines = [
            f"Statement of member {self.member_id} ({self.programme}), "
            f"{self.start} to {self.end} (exclusive)",
            f"Opening balance: {self.opening_balance_minutes} min",
            *_table(
                ("recorded", "entry", "code", "minutes", "balance", "memo"),
                [
                    (
                        e.recorded_at,
                        e.entry_id,
                        e.code,
                        e.amount_minutes,
                        e.balance_after_minutes,
                        e.memo,
                    )
                    for e in self.entries
                ],
            ),
            f"Closing balance: {self.closing_balance_minutes} min "
            f"(+{self.credited_minutes} / -{self.debited_minutes})",
            "Expiry schedule of the open lots:",
            *_table(
                ("expires on", "minutes"),
                [(line.expires_on or "never", line.minutes) for line in self.expiry_schedule],
            ),
            f"Held by bookings: {self.held_minutes} min",
        ]
        return "\n".join(lines)


# --- station and region reports ---------------------------------------------------------------


class Movements(_Report):
    """Minutes that entered (+) or left (-) the liability accounts of a report's scope in
    the period, by kind of entry (its code: deposit, redemption, gift, donation, grant,
    expiry, estate, voucher_in, voucher_out, voucher_return, reversal...)."""

    by_code: dict[str, int]

    @property
    def total_minutes(self) -> int:
        return sum(self.by_code.values())


class ActivityReport(_Report):
    """A station's or a region's period [start, end).

    Activity where it happened (services recorded and confirmed at the sites in scope, by
    whom and for whom; minutes deposited for those services and redeemed at those sites)
    and the members living there (their home station in scope): what they gave, donated,
    were granted and lost to expiry, and what the programme owes them (and, for a region,
    its pools) at the start and end. ``closing_liability_minutes`` is always
    ``opening_liability_minutes + movements.total_minutes``."""

    programme: str
    scope: Literal["site", "region"]
    code: str
    start: date
    end: date
    services_recorded: int
    services_confirmed: int
    volunteers: int
    people_served: int
    deposited_minutes: int
    redeemed_minutes: int
    given_minutes: int
    received_as_gifts_minutes: int
    donated_minutes: int
    granted_minutes: int
    expired_minutes: int
    opening_liability_minutes: int
    closing_liability_minutes: int
    #: In the clearing of the period at the scope's level (the site, or the region's own
    #: level): what the scope is owed (+) or owes (-) for minutes redeemed where they were
    #: not earned. Clearing dates redemptions by ``occurred_at`` (see ``TimeBank.clearing``).
    clearing_net_minutes: int
    movements: Movements
    stations_total: int
    stations_active: int

    @property
    def coverage(self) -> float:
        """Share of the stations in scope that confirmed a service in the period."""
        return self.stations_active / self.stations_total if self.stations_total else 0.0

    def render(self) -> str:
        rows: list[tuple[object, ...]] = [
            ("services recorded", self.services_recorded),
            ("services confirmed", self.services_confirmed),
            ("distinct volunteers", self.volunteers),
            ("distinct people served", self.people_served),
            ("minutes deposited", self.deposited_minutes),
            ("minutes redeemed here", self.redeemed_minutes),
            ("minutes given by members", self.given_minutes),
            ("minutes received as gifts", self.received_as_gifts_minutes),
            ("minutes donated", self.donated_minutes),
            ("minutes granted", self.granted_minutes),
            ("minutes expired", self.expired_minutes),
            ("liability at the start", self.opening_liability_minutes),
            ("liability at the end", self.closing_liability_minutes),
            ("clearing: owed (+) / owes (-)", self.clearing_net_minutes),
            ("stations active", f"{self.stations_active} of {self.stations_total}"),
            ("coverage", f"{self.coverage:.0%}"),
        ]
        title = (
            f"{'Station' if self.scope == 'site' else 'Region'} {self.code} "
            f"({self.programme}), {self.start} to {self.end} (exclusive)"
        )
        return "\n".join([title, *_table(("", "value"), rows)])


# --- people ------------------------------------------------------------------------------------


class InactiveMember(_Report):
    member_id: int
    home_site: str
    status: str
    last_activity_at: datetime
    balance_minutes: int


class DemographicRow(_Report):
    """People of one role, age band ([band_start, band_end] years on the period's last
    day) and declared sex ("unknown" when not given)."""

    role: Literal["volunteer", "recipient"]
    band_start: int
    band_end: int
    sex: Literal["female", "male", "unknown"]
    people: int


class Demographics(_Report):
    """Volunteers (who served in a service confirmed in the period) and recipients (who
    were served, or whose care was paid by a redemption recorded in the period), by age
    band and sex."""

    programme: str
    region: str
    start: date
    end: date
    rows: tuple[DemographicRow, ...]

    def render(self) -> str:
        return "\n".join(
            [
                f"Volunteers and recipients by age and sex, {self.region} ({self.programme}), "
                f"{self.start} to {self.end} (exclusive)",
                *_table(
                    ("role", "age", "sex", "people"),
                    [(r.role, f"{r.band_start}-{r.band_end}", r.sex, r.people) for r in self.rows],
                ),
            ]
        )


class ExposureRow(_Report):
    region: str
    level: str
    at: datetime
    member_minutes: int
    pool_minutes: int
    total_minutes: int
