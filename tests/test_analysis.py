"""timebank.analysis on the sample ledger (examples/sample_ledger.py): every frame has its
documented columns and dtypes, members() carries no identity data, chunked reads give the
rows of one read, and every figure (frames and plots) reconciles with the ledger's own
reads (balances, balance_as_of, statements, trial balance, clearing) and with SQL.
PostgreSQL builds the same small sample as SQLite and must give the same frames."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timedelta
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from sqlalchemy import and_, func, select

import timebank
from timebank import analysis
from timebank.analysis import plots
from timebank.bank import TimeBank
from timebank.bank.schema import members as members_table
from timebank.bank.schema import personal, services, sites
from timebank.schema import accounts, entries, postings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PROGRAMME = "hebei"
ZONE = ZoneInfo("Asia/Shanghai")
#: The small sample built on both SQLite and PostgreSQL.
SMALL = {"seed": 11, "members": 20, "days": 30}


@cache
def sample_module() -> ModuleType:
    """examples/sample_ledger.py (examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("sample_ledger", EXAMPLES / "sample_ledger.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def build_sample(url: str, **options: int) -> TimeBank:
    bank: TimeBank = sample_module().build(url, **options)
    return bank


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TimeBank]:
    """The default sample (80 members, 120 days), built once for the module."""
    url = f"sqlite:///{tmp_path_factory.mktemp('analysis') / 'sample.db'}"
    built = build_sample(url)
    try:
        yield built
    finally:
        built.dispose()


def first_day() -> date:
    start: date = sample_module().START
    return start


def last_day(bank: TimeBank) -> date:
    return bank.ledger.clock().astimezone(ZONE).date()


def site_accounts(bank: TimeBank) -> dict[str, tuple[str | None, str]]:
    """Site code -> (issued account, redeemed account)."""
    frame = analysis.monthly_station_summary(bank, PROGRAMME)
    found = {}
    for code in frame["site"].unique():
        view = bank.site(PROGRAMME, str(code))
        found[view.code] = (view.issued_account, view.redeemed_account)
    return found


def sql_scalar(bank: TimeBank, query: Any) -> int:
    with bank.ledger.engine.connect() as conn:
        return int(conn.execute(query).scalar_one() or 0)


# --- the package: an extra, never imported by the core -----------------------------------------


def test_core_does_not_import_the_extra_and_the_extra_names_itself() -> None:
    script = textwrap.dedent(
        """
        import sys
        import timebank, timebank.bank, timebank.cli
        assert "pandas" not in sys.modules and "matplotlib" not in sys.modules, "imported"
        sys.modules["pandas"] = None  # as if it were not installed
        try:
            import timebank.analysis
        except ImportError as error:
            print(error)
        else:
            raise SystemExit("timebank.analysis imported without pandas")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'timebank[analysis]'" in done.stdout


def test_sources_and_arguments_are_checked(bank: TimeBank) -> None:
    engine = bank.ledger.engine
    by_engine = analysis.balances(engine)
    pd.testing.assert_frame_equal(by_engine, analysis.balances(bank.ledger))
    pd.testing.assert_frame_equal(by_engine, analysis.balances(bank))
    with pytest.raises(timebank.InvalidInputError, match="a source is"):
        analysis.entries("sqlite:///x.db")  # type: ignore[arg-type]
    with pytest.raises(timebank.InvalidInputError, match="chunk_rows"):
        analysis.iter_postings(bank, chunk_rows=0)
    with pytest.raises(timebank.InvalidInputError, match="aware"):
        analysis.balances(bank, as_of=datetime(2026, 4, 1))  # naive: refused
    with pytest.raises(timebank.BankObjectNotFoundError):
        analysis.members(bank, programme="nowhere")
    with pytest.raises(timebank.AccountNotFoundError):
        analysis.balance_history(bank, "hebei:no-such-account")


# --- columns and dtypes -------------------------------------------------------------------


FRAMES: dict[str, tuple[Callable[[TimeBank], pd.DataFrame], dict[str, str]]] = {
    "entries": (analysis.entries, dict(analysis.ENTRY_COLUMNS)),
    "postings": (analysis.postings, dict(analysis.POSTING_COLUMNS)),
    "balances": (analysis.balances, dict(analysis.BALANCE_COLUMNS)),
    "lots": (analysis.lots, dict(analysis.LOT_COLUMNS)),
    "services": (analysis.services, dict(analysis.SERVICE_COLUMNS)),
    "members": (analysis.members, dict(analysis.MEMBER_COLUMNS)),
    "balance_history": (
        lambda b: analysis.balance_history(b, "hebei:expired"),
        dict(analysis.HISTORY_COLUMNS),
    ),
    "monthly_station_summary": (
        lambda b: analysis.monthly_station_summary(b, PROGRAMME),
        dict(analysis.SUMMARY_COLUMNS),
    ),
}


def dtypes(frame: pd.DataFrame) -> dict[str, str]:
    return {str(name): str(dtype) for name, dtype in frame.dtypes.items()}


@pytest.mark.parametrize("name", list(FRAMES))
def test_frames_have_their_documented_columns_and_dtypes(bank: TimeBank, name: str) -> None:
    read, schema = FRAMES[name]
    frame = read(bank)
    assert len(frame) > 0
    assert dtypes(frame) == schema
    assert list(frame.index) == list(range(len(frame)))


def test_an_empty_programme_gives_empty_frames_of_the_same_dtypes(sqlite_url: str) -> None:
    with timebank.TimeBank.open(sqlite_url, identity_secrets={PROGRAMME: b"s"}) as empty:
        empty.create_programme(
            PROGRAMME, "Empty", policy=sample_module().POLICY, root_region="hebei",
            root_region_name="Hebei", administrator="admin", administrator_name="Admin",
        )
        for name, (read, schema) in FRAMES.items():
            if name == "balance_history":
                continue
            frame = read(empty)
            assert dtypes(frame) == schema, name
            if name not in ("balances",):  # the programme's expired and pool accounts exist
                assert frame.empty, name
        # The plots draw their empty states.
        assert not plots.monthly_deposits_vs_redemptions(empty, PROGRAMME).axes[0].patches
        assert not plots.balance_history_plot(empty, "hebei:expired").axes[0].get_lines()
        day = date(2026, 3, 2)
        assert len(plots.clearing_heatmap(empty, PROGRAMME, day, day + timedelta(1)).axes) == 2
        assert not bar_widths(plots.age_pyramid(empty, PROGRAMME, on=day).axes[0])


def test_members_carry_no_identity_data(bank: TimeBank) -> None:
    frame = analysis.members(bank, programme=PROGRAMME, on=last_day(bank))
    forbidden = {"display_name", "name", "phone", "identity", "identity_hash", "birth_date",
                 "account", "account_code", "account_id", "status_reason"}
    assert not forbidden & set(frame.columns)
    with bank.ledger.engine.connect() as conn:
        secret_rows = conn.execute(
            select(personal.c.display_name, personal.c.phone, personal.c.birth_date,
                   members_table.c.identity_hash, accounts.c.code)
            .join(members_table, members_table.c.id == personal.c.member_id)
            .join(accounts, accounts.c.id == members_table.c.account_id)
        ).all()
    secrets = {str(value) for row in secret_rows for value in row if value is not None}
    cells = {str(value) for column in frame.columns for value in frame[column].tolist()}
    assert not secrets & cells
    # What is there: ages in bands, declared sex, roles.
    assert set(frame["sex"].dropna()) == {"female", "male"}
    assert frame["sex"].isna().any()
    volunteers = frame[frame["acts_as"] != "recipient"]
    recipients = frame[frame["acts_as"] == "recipient"]
    assert volunteers["birth_year"].between(1950, 1971).all()
    assert recipients["birth_year"].between(1930, 1951).all()
    assert analysis.age_band(77) == "75-79"


# --- chunked reads -------------------------------------------------------------------------------


def test_chunked_reads_give_the_rows_of_one_read(bank: TimeBank) -> None:
    whole = analysis.postings(bank)
    parts = list(analysis.iter_postings(bank, chunk_rows=97))
    assert len(parts) == -(-len(whole) // 97)
    assert all(len(part) <= 97 for part in parts)
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), whole)
    pd.testing.assert_frame_equal(analysis.postings(bank, chunk_rows=13), whole)
    entry_parts = list(analysis.iter_entries(bank, chunk_rows=50))
    pd.testing.assert_frame_equal(pd.concat(entry_parts, ignore_index=True),
                                  analysis.entries(bank))
    for read in (analysis.balances, analysis.lots, analysis.services, analysis.members):
        pd.testing.assert_frame_equal(read(bank, chunk_rows=7), read(bank))
    pd.testing.assert_frame_equal(
        analysis.monthly_station_summary(bank, PROGRAMME, chunk_rows=11),
        analysis.monthly_station_summary(bank, PROGRAMME),
    )


def test_filters_select_rows(bank: TimeBank) -> None:
    every = analysis.postings(bank)
    member = analysis.postings(bank, programme=PROGRAMME, account_types=["member"])
    assert member.equals(every[every["account_type"] == "member"].reset_index(drop=True))
    assert member["member_id"].notna().all()
    assert every[every["account_type"] != "member"]["member_id"].isna().all()
    middle = datetime.combine(first_day() + timedelta(days=50), time(0), ZONE)
    later = analysis.postings(bank, since=middle, codes=["redemption"])
    expected = every[(every["recorded_at"] >= middle) & (every["entry_code"] == "redemption")]
    pd.testing.assert_frame_equal(later, expected.reset_index(drop=True))
    assert analysis.postings(bank, programme="elsewhere").empty


# --- reconciliation with the ledger ---------------------------------------------------------------


def test_balances_are_the_trial_balance_and_balance_as_of(bank: TimeBank) -> None:
    ledger = bank.ledger
    frame = analysis.balances(bank)
    trial = {line.account: line.posted_minutes for line in ledger.trial_balance().lines}
    assert dict(zip(frame["account_code"], frame["balance_minutes"], strict=True)) == trial
    assert frame["balance_minutes"].sum() == 0
    for days in (9, 45, 90):
        moment = datetime.combine(first_day() + timedelta(days=days), time(18, 45), ZONE)
        then = analysis.balances(bank, as_of=moment)
        assert then["balance_minutes"].sum() == 0
        assert (then["last_recorded_at"].dropna() <= moment).all()
        for code, minutes in zip(then["account_code"], then["balance_minutes"], strict=True):
            assert ledger.balance_as_of(str(code), moment).posted_minutes == minutes, code
    before = datetime.combine(first_day(), time(0), ZONE)
    assert analysis.balances(bank, as_of=before).empty  # no account was open yet


def test_postings_and_entries_are_the_ledger(bank: TimeBank) -> None:
    moves = analysis.postings(bank)
    report = bank.ledger.verify()
    assert report.ok
    assert len(moves) == report.postings
    assert len(analysis.entries(bank)) == report.entries
    assert (moves.groupby("entry_id")["amount_minutes"].sum() == 0).all()
    by_account = moves.groupby("account_code")["amount_minutes"].sum()
    balances = analysis.balances(bank).set_index("account_code")["balance_minutes"]
    assert by_account.to_dict() == balances[balances.index.isin(by_account.index)].to_dict()
    # Each account's last running balance is its balance.
    last = moves.sort_values("entry_id").groupby("account_code")["balance_after_minutes"].last()
    assert last.to_dict() == by_account.to_dict()
    codes = set(moves["entry_code"])
    assert {"deposit", "redemption", "gift", "donation", "grant", "expiry"} <= codes


def test_balance_history_is_the_statement(bank: TimeBank) -> None:
    moves = analysis.postings(bank, account_types=["member"])
    code = str(moves.groupby("account_code")["entry_code"].nunique().idxmax())
    history = analysis.balance_history(bank, code)
    lines = list(bank.ledger.iter_statement(code))
    assert list(history["entry_id"]) == [line.entry_id for line in lines]
    assert list(history["amount_minutes"]) == [line.amount_minutes for line in lines]
    assert list(history["balance_after_minutes"]) == [line.balance_after_minutes for line in lines]
    assert list(history["entry_code"]) == [line.code for line in lines]
    assert history["balance_after_minutes"].iloc[-1] == bank.ledger.balance(code).posted_minutes


def test_lots_are_the_members_balances(bank: TimeBank) -> None:
    open_lots = analysis.lots(bank, programme=PROGRAMME)
    left = open_lots.groupby("member_id")["remaining_minutes"].sum()
    people = analysis.balances(bank, programme=PROGRAMME)
    people = people[people["account_type"] == "member"]
    for member_id, minutes in zip(people["member_id"], people["balance_minutes"], strict=True):
        assert left.get(member_id, 0) == minutes, member_id
    assert (open_lots["expires_on"] - open_lots["earned_on"]).dt.days.isin([60]).sum() > 0
    expired = analysis.postings(bank, codes=["expiry"], account_types=["programme_expired"])
    assert expired["amount_minutes"].sum() == bank.ledger.balance("hebei:expired").posted_minutes
    assert expired["amount_minutes"].sum() > 0  # some lots did expire
    assert set(open_lots["source_code"]) >= {"deposit", "gift", "grant"}


def test_services_are_the_deposits(bank: TimeBank) -> None:
    frame = analysis.services(bank, programme=PROGRAMME)
    deposited = frame[frame["deposit_entry_id"].notna()]
    deposits = analysis.postings(bank, codes=["deposit"])
    issued = deposits[deposits["account_type"] == "station_issued"]
    assert len(deposited) == deposits["entry_id"].nunique()
    assert deposited["credited_minutes"].sum() == -issued["amount_minutes"].sum()
    member_side = deposits[deposits["account_type"] == "member"]["amount_minutes"].sum()
    pool_side = deposits[deposits["account_type"] == "region_pool"]["amount_minutes"].sum()
    assert member_side + pool_side == deposited["credited_minutes"].sum()
    assert set(frame["status"]) >= {"confirmed", "rejected"}
    assert (frame["recipients"] == 1).all()


def test_monthly_summary_reconciles_with_the_ledger(bank: TimeBank) -> None:
    summary = analysis.monthly_station_summary(bank, PROGRAMME)
    ledger = bank.ledger
    per_site = summary.groupby("site")[
        ["minutes_deposited", "minutes_reversed", "minutes_redeemed", "services_confirmed"]
    ].sum()
    for site, (issued, redeemed) in site_accounts(bank).items():
        row = per_site.loc[site]
        if issued is None:
            assert row["minutes_deposited"] == 0
        else:
            net = row["minutes_deposited"] - row["minutes_reversed"]
            assert net == -ledger.balance(issued).posted_minutes, site
        assert row["minutes_redeemed"] == ledger.balance(redeemed).posted_minutes, site
    # Deposited minutes are what the deposit entries posted to members (and pools).
    credited = analysis.postings(bank, codes=["deposit"], account_types=["member", "region_pool"])
    assert summary["minutes_deposited"].sum() == credited["amount_minutes"].sum()
    # Month by month, against SQL over the programme's calendar.
    months = sorted(summary["month"].unique())
    assert [str(m) for m in months] == ["2026-03", "2026-04", "2026-05", "2026-06"]
    assert len(summary) == len(months) * 8  # every site, every month
    for month in months:
        start = datetime.combine(month.start_time.date(), time(0), ZONE)
        end = datetime.combine((month + 1).start_time.date(), time(0), ZONE)
        in_month = and_(entries.c.code == "deposit", entries.c.occurred_at >= start,
                        entries.c.occurred_at < end)
        member_side = sql_scalar(bank, select(func.sum(postings.c.amount_minutes))
                                 .join(entries, entries.c.id == postings.c.entry_id)
                                 .join(accounts, accounts.c.id == postings.c.account_id)
                                 .where(in_month, accounts.c.type == "member"))
        chosen = summary[summary["month"] == month]
        assert chosen["minutes_deposited"].sum() == member_side, month
        volunteers = sql_scalar(
            bank,
            select(func.count(func.distinct(services.c.volunteer_id)))
            .join(entries, entries.c.id == services.c.deposit_entry_id)
            .join(sites, sites.c.id == services.c.site_id)
            .where(in_month, sites.c.code == "xinyuan-sw"),
        )
        assert chosen[chosen["site"] == "xinyuan-sw"]["volunteers"].item() == volunteers
    frame = analysis.services(bank)
    assert summary["services_confirmed"].sum() == frame["deposit_entry_id"].notna().sum()


# --- plots ----------------------------------------------------------------------------------------


def bars(axes: Axes) -> list[Rectangle]:
    return [patch for patch in axes.patches if isinstance(patch, Rectangle)]


def bar_heights(figure: Figure, label: str) -> float:
    """The bars labelled ``label`` in every axes, summed."""
    total = 0.0
    for axes in figure.axes:
        for container in axes.containers:
            if isinstance(container, BarContainer) and container.get_label() == label:
                total += sum(abs(float(bar.get_height())) for bar in container.patches)
    return total


def bar_widths(axes: Axes) -> float:
    """The horizontal bars of ``axes``, summed (a pyramid's left side is negative)."""
    return sum(abs(float(bar.get_width())) for bar in bars(axes))


def image_cells(axes: Axes) -> Any:
    array = axes.get_images()[0].get_array()
    assert array is not None
    return np.ma.filled(array, 0)


def test_balance_history_plot_ends_at_the_balance(bank: TimeBank) -> None:
    code = "hebei:xinyuan-sw:issued"
    figure = plots.balance_history_plot(bank, code)
    assert isinstance(figure, Figure)
    (axes,) = figure.axes
    (line,) = axes.get_lines()
    assert line.get_ydata()[-1] == bank.ledger.balance(code).posted_minutes  # type: ignore[index]
    history = analysis.balance_history(bank, code)
    markers = [c for c in axes.collections if isinstance(c, PathCollection)]
    assert len(markers) == history["entry_code"].nunique()
    assert sum(np.asarray(c.get_offsets()).shape[0] for c in markers) == len(history)


def test_monthly_plot_reconciles(bank: TimeBank) -> None:
    figure = plots.monthly_deposits_vs_redemptions(bank, PROGRAMME)
    summary = analysis.monthly_station_summary(bank, PROGRAMME)
    assert len(figure.axes) == summary["site"].nunique() == 8
    redeemed = sum(
        bank.ledger.balance(account).posted_minutes for _, account in site_accounts(bank).values()
    )
    assert bar_heights(figure, "redeemed here") == redeemed == summary["minutes_redeemed"].sum()
    issued = analysis.postings(bank, account_types=["station_issued"])
    assert bar_heights(figure, "deposited (issued)") == -issued["amount_minutes"].sum()


def test_clearing_heatmap_is_the_clearing_report(bank: TimeBank) -> None:
    start, end = first_day(), last_day(bank) + timedelta(days=1)
    figure = plots.clearing_heatmap(bank, PROGRAMME, start, end, level="county")
    assert len(figure.axes) == 2  # the map and its colour bar
    cells = image_cells(figure.axes[0])
    report = bank.clearing(PROGRAMME, start=start, end=end, level="county")
    assert cells.sum() == report.redeemed_minutes
    assert cells.shape == (4, 4)  # the four counties
    redeemed = analysis.postings(bank, codes=["redemption"], account_types=["site_redeemed"])
    assert report.redeemed_minutes == redeemed["amount_minutes"].sum()
    diagonal = float(np.trace(cells))
    assert diagonal == report.local_minutes
    # The same figure from a ledger or an engine.
    for source in (bank.ledger, bank.ledger.engine):
        again = plots.clearing_heatmap(source, PROGRAMME, start, end, level="county")
        assert (image_cells(again.axes[0]) == cells).all()


def test_age_pyramid_counts_the_members(bank: TimeBank) -> None:
    on = last_day(bank)
    figure = plots.age_pyramid(bank, PROGRAMME, on=on)
    assert len(figure.axes) == 2
    people = analysis.members(bank, programme=PROGRAMME, on=on)
    declared = people[(people["status"] == "active") & people["sex"].notna()]
    volunteers, recipients = figure.axes
    assert bar_widths(volunteers) == (declared["acts_as"] != "recipient").sum()
    assert bar_widths(recipients) == (declared["acts_as"] == "recipient").sum()
    assert len(volunteers.containers) == len(recipients.containers) == 2


# --- portability: PostgreSQL gives the frames SQLite gives ---------------------------------


@pytest.mark.postgres
def test_postgres_gives_the_frames_sqlite_gives(sqlite_url: str, postgres_url: str) -> None:
    lite, server = build_sample(sqlite_url, **SMALL), build_sample(postgres_url, **SMALL)
    try:
        on = last_day(lite)
        reads: dict[str, Callable[[TimeBank], pd.DataFrame]] = {
            "entries": analysis.entries,
            "postings": lambda b: analysis.postings(b, chunk_rows=64),
            "balances": analysis.balances,
            "balances as of": lambda b: analysis.balances(
                b, as_of=datetime.combine(first_day() + timedelta(days=20), time(19), ZONE)
            ),
            "lots": analysis.lots,
            "services": analysis.services,
            "members": lambda b: analysis.members(b, programme=PROGRAMME, on=on),
            "summary": lambda b: analysis.monthly_station_summary(b, PROGRAMME),
        }
        for name, read in reads.items():
            pd.testing.assert_frame_equal(read(server), read(lite), obj=name)
        summary = analysis.monthly_station_summary(server, PROGRAMME)
        for site, (issued, redeemed) in site_accounts(server).items():
            chosen = summary[summary["site"] == site]
            if issued is not None:
                assert chosen["minutes_deposited"].sum() == -server.ledger.balance(
                    issued
                ).posted_minutes
            assert chosen["minutes_redeemed"].sum() == server.ledger.balance(
                redeemed
            ).posted_minutes
        trial = {line.account: line.posted_minutes for line in server.ledger.trial_balance().lines}
        frame = analysis.balances(server)
        assert dict(zip(frame["account_code"], frame["balance_minutes"], strict=True)) == trial
    finally:
        lite.dispose()
        server.dispose()
