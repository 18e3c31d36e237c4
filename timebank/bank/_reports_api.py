"""The reporting methods of :class:`~timebank.bank.TimeBank`: statements, station and region
reports, inactive members, people by age and sex, exposure by region (see
:mod:`timebank.bank._reports`). Reads only: each runs in one snapshot."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, datetime
from typing import TypeVar

from sqlalchemy import Connection

from timebank.bank import _reports
from timebank.bank._clearing import FIRST_DAY, LAST_DAY
from timebank.bank.models import RegionLevel, require
from timebank.bank.report_models import (
    ActivityReport,
    Demographics,
    ExposureRow,
    InactiveMember,
    MemberStatement,
)
from timebank.bank.schema import REGION_LEVELS
from timebank.ledger import Ledger

T = TypeVar("T")


class ReportsMixin:
    """Methods that need the read snapshot of the class they are mixed into."""

    ledger: Ledger

    def _read(self, fn: Callable[[Connection], T]) -> T:  # pragma: no cover - TimeBank's
        raise NotImplementedError

    def member_statement(self, member_id: int, *, start: date, end: date) -> MemberStatement:
        """The member's account over [start, end): every posting recorded in the period
        with the running balance, opening and closing balances; and, as they stand now,
        the open lots with their expiry schedule and the minutes live bookings hold."""
        require(type(member_id) is int, "member ids are integers")
        now = self.ledger.clock()
        return self._read(lambda conn: _reports.member_statement(conn, member_id, start, end, now))

    def station_report(
        self, programme: str, site: str, *, start: date, end: date
    ) -> ActivityReport:
        """A station's (or an institution's) period: services recorded and confirmed there,
        distinct volunteers and people served, minutes deposited and redeemed there; what
        the members whose home it is gave, donated, were granted and lost to expiry; the
        liability to them at the start and the end."""
        return self._read(
            lambda conn: _reports.activity(
                conn, programme, kind="site", code=site, start=start, end=end
            )
        )

    def region_report(
        self, programme: str, region: str, *, start: date, end: date
    ) -> ActivityReport:
        """:meth:`station_report` over every site under ``region``, with the region's pools
        in its liability, and the coverage: the share of its stations that confirmed a
        service in the period."""
        return self._read(
            lambda conn: _reports.activity(
                conn, programme, kind="region", code=region, start=start, end=end
            )
        )

    def inactive_members(
        self,
        programme: str,
        *,
        months: int,
        region: str | None = None,
        as_of: datetime | None = None,
        limit: int = 1_000,
    ) -> list[InactiveMember]:
        """Active members (of the programme, or living under ``region``) with no activity
        (registration, posting, service as volunteer) for ``months`` calendar months
        before ``as_of`` (default now), longest inactive first."""
        require(type(months) is int and 1 <= months <= 1_200, "months: 1 to 1,200")
        require(type(limit) is int and 1 <= limit <= 100_000, "limit: 1 to 100,000")
        when = self.ledger.clock() if as_of is None else as_of
        require(
            isinstance(when, datetime) and when.utcoffset() is not None,
            "as_of must be a timezone-aware datetime",
        )
        require(FIRST_DAY.year <= when.year < LAST_DAY.year, "as_of: from 1970 to 9998")
        return self._read(
            lambda conn: _reports.inactive_members(
                conn, programme, region_code=region, as_of=when, months=months, limit=limit
            )
        )

    def demographics(
        self,
        programme: str,
        *,
        start: date,
        end: date,
        region: str | None = None,
        band_years: int = 10,
    ) -> Demographics:
        """Volunteers and recipients of the period (living under ``region``, default the
        whole programme) by age band on the period's last day and declared sex."""
        require(type(band_years) is int and 1 <= band_years <= 50, "band_years: 1 to 50")
        return self._read(
            lambda conn: _reports.demographics(conn, programme, region, start, end, band_years)
        )

    def exposure_by_region(
        self, programme: str, *, level: RegionLevel, days: Iterable[date]
    ) -> list[ExposureRow]:
        """The guarantee exposure of every region of ``level`` at the end of each of
        ``days`` (the programme's calendar), region by region."""
        chosen = list(days)
        require(level in REGION_LEVELS, f"level: one of {', '.join(REGION_LEVELS)}")
        require(
            all(type(day) is date and FIRST_DAY <= day < LAST_DAY for day in chosen),
            f"days are dates from {FIRST_DAY} to {LAST_DAY}",
        )
        require(0 < len(chosen) <= 366, "days: 1 to 366 of them")
        return self._read(lambda conn: _reports.exposure_by_region(conn, programme, level, chosen))
