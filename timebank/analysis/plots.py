"""Plots of a timebank database, each a matplotlib :class:`~matplotlib.figure.Figure`.

The figures are built with matplotlib's object API: nothing goes through ``pyplot``, no
window opens and no global state changes, so they work in scripts, servers and tests
alike. A notebook displays a figure returned by a cell (``%matplotlib inline``);
``figure.savefig("plot.png")`` writes it (10 x 6 inches at 100 dpi: 1000 x 600 pixels).
Every figure is drawn from the frames of :mod:`timebank.analysis` or from
:meth:`TimeBank.clearing <timebank.TimeBank.clearing>`, and sums to the ledger's figures.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any, Final
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator
from sqlalchemy import select

from timebank.analysis import _frames
from timebank.analysis._frames import Source
from timebank.bank._clearing import report as _clearing_report
from timebank.bank.api import TimeBank
from timebank.bank.models import ClearingLevel, ClearingReport
from timebank.bank.schema import programmes
from timebank.ledger import Ledger

#: Inches; at the default 100 dpi, 1000 x 600 pixels.
FIGURE_SIZE: Final = (10.0, 6.0)
DEPOSIT_COLOUR: Final = "#2f7ebc"
REDEMPTION_COLOUR: Final = "#e4812f"
FEMALE_COLOUR: Final = "#c8507a"
MALE_COLOUR: Final = "#3b7dbf"


def _figure() -> Figure:
    return Figure(figsize=FIGURE_SIZE, dpi=100, layout="constrained")


def _clearing(
    source: Source, programme: str, start: date, end: date, level: ClearingLevel
) -> ClearingReport:
    """``TimeBank.clearing``'s report, from any source (no identity secret is needed to
    read). An engine is read directly rather than through a second Ledger on it: a Ledger
    dropped closes the connections every ledger on its engine keeps."""
    if isinstance(source, TimeBank):
        return source.clearing(programme, start=start, end=end, level=level)
    if isinstance(source, Ledger):
        bank = TimeBank(source, identity_secrets={})
        return bank.clearing(programme, start=start, end=end, level=level)
    with _frames.snapshot(source) as conn:
        return _clearing_report(conn, programme, start, end, level)


def _zone_of_account(source: Source, account_code: str) -> ZoneInfo:
    """The calendar of the programme an account belongs to (``<programme>:...``), UTC for
    accounts outside any programme."""
    prefix = account_code.split(":", 1)[0]
    with _frames.snapshot(source) as conn:
        found = conn.execute(select(programmes.c.id).where(programmes.c.code == prefix)).scalar()
        return ZoneInfo("UTC") if found is None else _frames.programme_zone(conn, int(found))


def _local(instants: pd.Series, zone: ZoneInfo) -> Any:
    """Instants as naive local times (numpy datetime64), which matplotlib plots as dates."""
    return instants.dt.tz_convert(zone).dt.tz_localize(None).to_numpy()


def balance_history_plot(source: Source, account_code: str, *, title: str | None = None) -> Figure:
    """One account's balance over recording time (a step line), with a marker for each
    posting by entry code (deposit, redemption, gift, expiry...). One axes; the line's
    last point is the account's balance in the ledger."""
    history = _frames.balance_history(source, account_code)
    zone = _zone_of_account(source, account_code)
    figure = _figure()
    axes = figure.add_subplot()
    if len(history):
        when = _local(history["recorded_at"], zone)
        balance = history["balance_after_minutes"].to_numpy()
        axes.step(when, balance, where="post", color="#555555", linewidth=1.2, label="balance")
        for code in sorted(history["entry_code"].unique()):
            chosen = (history["entry_code"] == code).to_numpy()
            axes.scatter(when[chosen], balance[chosen], s=18, zorder=3, label=str(code))
        axes.legend(loc="upper left", fontsize="small")
        final = int(balance[-1])
    else:
        final = 0
    axes.set_title(title or f"{account_code}: {final:,} minutes")
    axes.set_xlabel(f"recorded at ({zone.key})")
    axes.set_ylabel("balance (minutes)")
    axes.grid(alpha=0.3)
    return figure


def monthly_deposits_vs_redemptions(source: Source, programme: str) -> Figure:
    """Small multiples, one axes per site of the programme (stations, then institutions):
    per month, the minutes the site issued for confirmed services and the minutes
    redeemed there (:func:`~timebank.analysis.monthly_station_summary`). The bars sum to
    the summary's, hence to the ledger's, figures."""
    summary = _frames.monthly_station_summary(source, programme)
    figure = _figure()
    if summary.empty:
        axes = figure.add_subplot()
        axes.set_title(f"{programme}: no deposits or redemptions yet")
        return figure
    stations = summary["site_kind"] != "institution"
    order = (
        summary.assign(institution=~stations)
        .drop_duplicates("site")
        .sort_values(["institution", "site"])["site"]
        .tolist()
    )
    months = sorted(summary["month"].unique())
    labels = [month.strftime("%b") for month in months]
    columns = min(4, len(order))
    rows = math.ceil(len(order) / columns)
    grid = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    x = np.arange(len(months))
    width = 0.4
    for index, site in enumerate(order):
        axes = grid[index // columns][index % columns]
        frame = summary[summary["site"] == site].set_index("month").reindex(months)
        axes.bar(
            x - width / 2,
            frame["minutes_deposited"].to_numpy(),
            width,
            color=DEPOSIT_COLOUR,
            label="deposited (issued)",
        )
        axes.bar(
            x + width / 2,
            frame["minutes_redeemed"].to_numpy(),
            width,
            color=REDEMPTION_COLOUR,
            label="redeemed here",
        )
        kind = str(frame["site_kind"].iloc[0]).replace("_", " ")
        axes.set_title(f"{site}\n{kind}", fontsize="small")
        axes.set_xticks(x, labels, fontsize="small")
        axes.grid(axis="y", alpha=0.3)
        if index % columns == 0:
            axes.set_ylabel("minutes")
    for index in range(len(order), rows * columns):
        figure.delaxes(grid[index // columns][index % columns])
    handles, names = grid[0][0].get_legend_handles_labels()
    figure.legend(handles, names, loc="outside lower center", ncols=2)
    first, last = months[0].strftime("%b %Y"), months[-1].strftime("%b %Y")
    figure.suptitle(f"{programme}: minutes deposited and redeemed per site, {first} to {last}")
    return figure


def clearing_heatmap(
    source: Source,
    programme: str,
    start: date,
    end: date,
    level: ClearingLevel = "county",
) -> Figure:
    """Where the minutes redeemed in [start, end) were earned (rows) and redeemed
    (columns), at ``level`` (``TimeBank.clearing(...).matrix()``): the diagonal is minutes
    redeemed where they were earned, the rest what clearing settles between units. Two
    axes: the heat map and its colour bar; the cells sum to the report's
    ``redeemed_minutes``."""
    report = _clearing(source, programme, start, end, level)
    matrix = report.matrix()
    units = sorted({*matrix, *(unit for row in matrix.values() for unit in row)})
    data = np.array([[matrix.get(a, {}).get(b, 0) for b in units] for a in units], dtype=float)
    figure = _figure()
    axes = figure.add_subplot()
    period = f"{start:%d %b %Y} to {end:%d %b %Y}"
    if not units:
        axes.set_title(f"{programme}: no redemptions from {period}")
        figure.colorbar(axes.imshow(np.zeros((1, 1)), cmap="YlOrRd"), ax=axes)
        return figure
    # Pairs with no flow stay white: a zero is not a small flow.
    image = axes.imshow(np.ma.masked_equal(data, 0), cmap="YlOrRd", vmin=0)
    figure.colorbar(image, ax=axes, label="minutes")
    high = data.max() or 1.0
    for i in range(len(units)):
        for j in range(len(units)):
            if data[i, j]:
                colour = "white" if data[i, j] > 0.6 * high else "black"
                axes.text(j, i, f"{int(data[i, j]):,}", ha="center", va="center", color=colour)
    axes.set_xticks(range(len(units)), units, rotation=30, ha="right")
    axes.set_yticks(range(len(units)), units)
    axes.set_xlabel(f"redeemed at ({level})")
    axes.set_ylabel(f"earned at ({level})")
    local = 100 * report.local_minutes / report.redeemed_minutes if report.redeemed_minutes else 0
    axes.set_title(
        f"{programme}: minutes redeemed from {period}, by where they were earned\n"
        f"{report.redeemed_minutes:,} minutes in {report.redemptions} redemptions, "
        f"{local:.0f}% in the {level} where they were earned"
    )
    return figure


def age_pyramid(source: Source, programme: str, *, on: date | None = None) -> Figure:
    """Active people of the programme by age band on ``on`` (default: today by the
    source's clock) and declared sex: volunteers (``acts_as`` volunteer or both) on the
    left axes, recipients on the right; women to the left of each axis, men to the
    right. Two axes; the bars count every active person who declared their sex, and each
    title says how many did not."""
    people = _frames.members(source, programme=programme, on=on)
    people = people[(people["kind"] == "person") & (people["status"] == "active")]
    low = people["age_band"].str.split("-").str[0].astype("int64")
    people = people.assign(band_start=low)
    starts = (
        list(range(int(low.min()), int(low.max()) + 1, _frames.AGE_BAND_YEARS))
        if len(people)
        else []
    )
    bands = [_frames.age_band(start) for start in starts]
    figure = _figure()
    left, right = figure.subplots(1, 2, sharey=True)
    groups = (
        ("volunteers", people[people["acts_as"] != "recipient"]),
        ("recipients", people[people["acts_as"] == "recipient"]),
    )
    widest = 1
    for axes, (name, group) in zip((left, right), groups, strict=True):
        counts = {
            sex: group[group["sex"] == sex]["age_band"].value_counts().reindex(bands, fill_value=0)
            for sex in ("female", "male")
        }
        y = np.arange(len(bands))
        axes.barh(y, -counts["female"].to_numpy(), color=FEMALE_COLOUR, label="female")
        axes.barh(y, counts["male"].to_numpy(), color=MALE_COLOUR, label="male")
        widest = max(widest, *(int(c.to_numpy().max(initial=0)) for c in counts.values()))
        undeclared = int(group["sex"].isna().sum())
        axes.set_title(f"{name}: {len(group)} ({undeclared} did not declare their sex)")
        axes.axvline(0, color="black", linewidth=0.8)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{abs(value):.0f}"))
        axes.set_xlabel("people")
        axes.grid(axis="x", alpha=0.3)
        axes.set_yticks(y, bands)
    for axes in (left, right):
        axes.set_xlim(-widest - 1, widest + 1)
    left.set_ylabel("age band")
    left.legend(loc="upper left", fontsize="small")
    day = f" on {on:%d %b %Y}" if on is not None else ""
    figure.suptitle(f"{programme}: active members by age and sex{day}")
    return figure
