"""Reading: balances, statements, lots, single records, reports, clearing and exposure."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

import click

from timebank import errors
from timebank.bank import TimeBank
from timebank.bank.models import ClearingLevel, RegionLevel
from timebank.cli._app import common
from timebank.cli._daily import CLEARING_LEVELS
from timebank.cli._output import emit
from timebank.cli._params import DAY, ID, MOMENT, local, programme_option
from timebank.cli._root import root
from timebank.cli._setup import REGION_LEVELS
from timebank.cli._state import STATE


def _period(start: date | None, end: date | None) -> tuple[date, date]:
    """[start, end): the current month when neither is given; a missing end is a month on."""
    today = date.today()
    first = start or today.replace(day=1)
    if end is not None:
        return first, end
    try:
        following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
    except OverflowError:
        raise errors.InvalidInputError("--from: give --to too, for a day this late") from None
    return first, following


def period_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--to", "end", type=DAY,
                      help="The day after the period [default: a month after --from].")(fn)
    return click.option("--from", "start", type=DAY,
                        help="First day [default: the first of this month].")(fn)


@root.command()
@common()
@click.argument("member_id", type=ID)
def balance(member_id: int) -> None:
    """A member's balance: minutes held, minutes reserved by bookings, minutes free.

    \b
    Example:
      timebank balance 12 --json
    """
    view = STATE.bank().member(member_id)
    emit({"member_id": view.id, "programme": view.programme, "status": view.status,
          "balance_minutes": view.balance_minutes, "held_minutes": view.held_minutes,
          "available_minutes": view.balance_minutes - view.held_minutes},
         title=f"member {member_id}")


@root.command()
@common()
@click.argument("member_id", type=ID)
@period_options
def statement(member_id: int, start: date | None, end: date | None) -> None:
    """A member's statement over [--from, --to): every posting with its running balance,
    open lots and when they expire, and bookings on hold.

    \b
    Example:
      timebank statement 12 --from 2026-11-01 --to 2026-12-01
    """
    first, last = _period(start, end)
    report = STATE.bank().member_statement(member_id, start=first, end=last)
    emit(report, text=report.render())


@root.command()
@common()
@click.argument("member_id", type=ID)
@click.option("--all", "all_lots", is_flag=True, help="Include spent and expired lots.")
def lots(member_id: int, all_lots: bool) -> None:
    """A member's lots: minutes by where and when they were earned, and when they expire."""
    emit(STATE.bank().lots(member_id, open_only=not all_lots), title=f"member {member_id} lots")


SHOWN: dict[str, Callable[[TimeBank, int], Any]] = {
    "service": TimeBank.service,
    "booking": TimeBank.booking,
    "redemption": TimeBank.redemption,
    "gift": TimeBank.gift,
    "pool-move": TimeBank.pool_move,
    "settlement": TimeBank.settlement,
}


@root.command()
@common()
@click.argument("kind", type=click.Choice(list(SHOWN)))
@click.argument("record_id", type=ID)
def show(kind: str, record_id: int) -> None:
    """Show one record: a service, booking, redemption, gift, pool move (donation or grant)
    or settlement.

    \b
    Example:
      timebank show service 17 --json
    """
    emit(SHOWN[kind](STATE.bank(), record_id), title=f"{kind} {record_id}")


@root.group()
def report() -> None:
    """Station and region reports, inactive members, demographics, exposure by region."""


@report.command("station")
@common()
@programme_option
@click.argument("site")
@period_options
def report_station(programme: str, site: str, start: date | None, end: date | None) -> None:
    """A station's (or institution's) period: services, minutes in and out, liability.

    \b
    Example:
      timebank report station -p nj st-hunan --from 2026-11-01 --to 2026-12-01
    """
    first, last = _period(start, end)
    result = STATE.bank().station_report(programme, site, start=first, end=last)
    emit(result, text=result.render())


@report.command("region")
@common()
@programme_option
@click.argument("region")
@period_options
def report_region(programme: str, region: str, start: date | None, end: date | None) -> None:
    """A region's period over all its sites, with its pools and station coverage.

    \b
    Example:
      timebank report region -p nj gulou --from 2026-11-01
    """
    first, last = _period(start, end)
    result = STATE.bank().region_report(programme, region, start=first, end=last)
    emit(result, text=result.render())


@report.command("inactive")
@common()
@programme_option
@click.option("--months", type=int, default=6, show_default=True,
              help="No activity for this many months.")
@click.option("--region", help="Only members living under this region.")
@click.option("--limit", type=int, default=1_000, show_default=True)
def report_inactive(programme: str, months: int, region: str | None, limit: int) -> None:
    """Members with no activity for --months (to call on, or to close)."""
    rows = STATE.bank().inactive_members(programme, months=months, region=region, limit=limit)
    emit(rows, title=f"members inactive for {months} months")


@report.command("demographics")
@common()
@programme_option
@period_options
@click.option("--region", help="Only members living under this region.")
@click.option("--band-years", type=int, default=10, show_default=True)
def report_demographics(programme: str, start: date | None, end: date | None,
                        region: str | None, band_years: int) -> None:
    """Volunteers and recipients active in the period, by age band and sex."""
    first, last = _period(start, end)
    result = STATE.bank().demographics(programme, start=first, end=last, region=region,
                                       band_years=band_years)
    emit(result, text=result.render())


@report.command("exposure")
@common()
@programme_option
@click.option("--level", type=click.Choice(REGION_LEVELS), default="county",
              show_default=True)
@click.option("--day", "days", type=DAY, multiple=True,
              help="A day (repeat for several) [default: today].")
def report_exposure(programme: str, level: RegionLevel, days: tuple[date, ...]) -> None:
    """The guarantee exposure of every region of --level at the end of each --day."""
    rows = STATE.bank().exposure_by_region(programme, level=level,
                                           days=days or (date.today(),))
    emit(rows, title=f"exposure by {level}")


@root.command()
@common()
@programme_option
@period_options
@click.option("--level", type=click.Choice(CLEARING_LEVELS), default="site", show_default=True)
def clearing(programme: str, start: date | None, end: date | None,
             level: ClearingLevel) -> None:
    """Clearing positions: minutes redeemed in the period, by where they were earned and
    where they were redeemed, netted per pair of units.

    \b
    Example:
      timebank clearing -p nj --from 2026-11-01 --to 2026-12-01 --level county
    """
    first, last = _period(start, end)
    result = STATE.bank().clearing(programme, start=first, end=last, level=level)
    lines = [
        f"Clearing of {programme} by {level}, {first} to {last} (exclusive): "
        f"{result.redeemed_minutes:,} min redeemed, {result.local_minutes:,} where earned",
        *(f"  {p.debtor} owes {p.creditor} {p.minutes:,} min" for p in result.positions),
    ]
    if not result.positions:
        lines.append("  no unit redeemed another's minutes")
    if result.settlement_id is not None:
        lines.append(f"Settled by settlement {result.settlement_id}; "
                     f"{result.carried_minutes:,} min recorded later go to the next one")
    emit(result, text="\n".join(lines))


@root.command()
@common()
@programme_option
@click.option("--region", help="Only members living under this region, and its pools.")
@click.option("--at", type=MOMENT, help="[default: now]")
def exposure(programme: str, region: str | None, at: datetime | None) -> None:
    """The guarantee exposure: minutes members and pools hold, which the guarantor backs.

    \b
    Example:
      timebank exposure -p nj --region gulou --json
    """
    bank = STATE.bank()
    emit(bank.guarantee_exposure(programme, region=region, at=local(bank, programme, at)),
         title=f"{programme} guarantee exposure")
